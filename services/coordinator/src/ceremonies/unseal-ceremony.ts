/**
 * Unseal and join ceremonies: from sealed coordinator replicas to open ones, with a custodian quorum.
 *
 * Unseal: the replica that starts it (the driver) names every registered sealed replica as a
 * recipient (its transport key and its current ephemeral X25519 key); each approving custodian's
 * HSM wraps its share to every recipient's SO-enrolled transport key, and the custodian seals
 * that with HPKE to the recipient's ephemeral key (transport-key.ts, @keyshard/crypto hpke.ts).
 * The driver proposes, records progress in etcd and completes the ceremony; every other
 * recipient (a follower, seeing the ceremony through an etcd watch) fetches the same releases
 * from the custodians and unseals itself. One ceremony unseals them all; no replica ever
 * receives the root key from another.
 * Join: a replica that is sealed while a peer is unsealed (it restarted) asks for itself
 * alone. An unsealed peer vouches for it (join-voucher.ts) and the joiner hands the vouch to
 * the custodians with its proposal; custodians under joinPolicy `auto` release only on a valid
 * vouch, under `manual` only on their operator's approval. With no vouch the custodians refuse
 * (an unseal ceremony is needed). A custodian's refusal is final for the ceremony: it is
 * recorded in the ceremony's failures with its reason and audited.
 *
 *   start ──► propose to every custodian ──► poll releases ──► per share:
 *     approval signature (HSM Ed25519 over the ceremony hash) verifies against the manifest,
 *     the release opens under this replica's ephemeral key (HPKE) and then its transport key
 *     (RSA-OAEP), and the share passes checkShare
 *     (registered x, x ≠ 0, commitment) ──► accepted | rejected (custodian named, audited)
 *   ──► once t accepted: combine, check KCV + manifest MAC, unwrap KEKs ──► COMPLETED
 *   ──► all custodians answered and < t accepted ──► FAILED;  past expiry ──► EXPIRED
 *
 * Invariants: below t accepted shares nothing is combined; shares exist in plaintext only in
 * this process's memory between unwrap and combine, then are zeroized; every step is audited
 * and a step that cannot be audited stops the ceremony (fail closed). One unseal ceremony is
 * open at a time (etcd `ceremony-lock/unseal`). The ephemeral key a ceremony named for this
 * replica is zeroized when the ceremony ends here (EphemeralKeys.retire).
 * Unseal and join ceremony records are written by sealed replicas, which hold no record MAC
 * key (record-integrity.ts): they carry no MAC. What they say is bound by the ceremony hash the
 * custodians sign, and the custodians check it themselves before releasing anything.
 */
import type { KeyObject } from 'node:crypto';
import {
  approvalKeyOf, checkShare, combineShares, isExpired, MAX_JOIN_LIFETIME_MS, newCeremony, oaepDecrypt, openFromEphemeral, stateName, verifyApproval, verifyVouch, zeroize,
  type Ceremony, type JoinVouch, type OaepHash, type ShareManifest, type ShareRejected,
} from '@keyshard/crypto';
import { KeyshardError, failedPrecondition, invalidArgument, notFound } from '@keyshard/errors';
import { etcdCall, getJson, listJson, paths, putJson, type Namespace } from '@keyshard/store';
import type { JoinVoucher, StoredVouch } from './join-voucher.ts';
import type { Logger } from '@keyshard/config';
import type { Cluster } from '../cluster/cluster.ts';
import type { CustodianLink, ReleaseResponse } from './custodian-link.ts';
import type { Seal } from '../cluster/seal.ts';
import type { AuditRecorder } from '@keyshard/audit-client';
import type { EphemeralKeys } from './transport-key.ts';

/** This replica's keys: its long-term transport key pair and its per-ceremony ephemeral keys. */
export interface ReplicaKey {
  coordinatorId: string;
  /** Transport public key (SPKI PEM): what custodians' SOs enroll, and ceremonies name. */
  publicKeyPem: string;
  privateKey: KeyObject;
  ephemeral: EphemeralKeys;
}

/** This replica as a ceremony recipient, with its current ephemeral key. */
export const recipientOf = (replica: ReplicaKey) => ({
  coordinator_id: replica.coordinatorId,
  public_key_pem: replica.publicKeyPem,
  ephemeral_public_key_pem: replica.ephemeral.currentPem,
});

/** The ephemeral key `c` names for this replica (to retire once `c` ends here). */
export const myEphemeralIn = (c: Ceremony, replica: ReplicaKey) =>
  c.recipients.find((r) => r.coordinator_id === replica.coordinatorId && r.public_key_pem === replica.publicKeyPem)?.ephemeral_public_key_pem;

type CustodianProgress = 'unproposed' | 'pending' | 'accepted' | 'rejected' | 'denied';

/** Who may receive shares: the registered replicas (replicas.ts). */
export interface ReplicaDirectory {
  list(): Promise<{ id: string; publicKeyPem: string; ephemeralPublicKeyPem?: string; sealed: boolean }[]>;
  peerUnsealed(): Promise<boolean>;
}

type Role = 'driver' | 'follower';

export interface UnsealDeps {
  ns: Namespace;
  replicas: ReplicaDirectory;
  cluster: Cluster;
  seal: Seal;
  links: CustodianLink[];
  replica: ReplicaKey;
  audit: AuditRecorder;
  log: Logger;
  oaepHash: OaepHash;
  ttlSeconds: number;
  pollMs: number;
  /** Vouches for other replicas' joins while this one is unsealed. */
  voucher?: JoinVoucher;
  /** How long a joiner waits for a peer's vouch before it proposes without one (default 10 s). */
  vouchWaitMs?: number;
}

/**
 * The share a custodian released to `replica` in ceremony `c`, checked against `manifest`: the
 * custodian is in it, its approval signature verifies with the manifest's key, the release opens
 * under the ephemeral key `c` names for this replica (HPKE, bound to the ceremony hash, this
 * coordinator and that custodian) and then under the transport key (RSA-OAEP), and the share
 * passes checkShare. Throws naming the custodian otherwise. The caller zeroizes the share.
 */
export async function shareFromRelease(c: Ceremony, manifest: ShareManifest, custodianId: string, res: ReleaseResponse, replica: ReplicaKey, oaepHash: OaepHash): Promise<Uint8Array> {
  const entry = manifest.custodians.find((m) => m.id === custodianId);
  if (!entry) throw new KeyshardError('FAILED_PRECONDITION', `custodian ${custodianId} is not in the share manifest`);
  if (!verifyApproval(c, approvalKeyOf(manifest.clusterId, entry, res.succession), res.approval_signature))
    throw new KeyshardError('FAILED_PRECONDITION', `approval signature of custodian ${custodianId} does not verify`);
  const mine = res.releases.find((r) => r.coordinator_id === replica.coordinatorId);
  if (!mine) throw new KeyshardError('FAILED_PRECONDITION', `custodian ${custodianId} released no share for this replica`);
  const ephemeral = replica.ephemeral.get(myEphemeralIn(c, replica) ?? '');
  if (!ephemeral) throw new KeyshardError('FAILED_PRECONDITION', `this replica no longer holds the ephemeral key ceremony ${c.id} named (it ended here)`);
  const wrapped = await openFromEphemeral(ephemeral, Buffer.from(mine.wrapped_share), { ceremonyHash: c.hash, coordinatorId: replica.coordinatorId, custodianId });
  let share: Buffer;
  try {
    share = oaepDecrypt(replica.privateKey, wrapped, oaepHash);
  } finally {
    zeroize(wrapped);
  }
  try {
    checkShare(manifest, custodianId, share);
  } catch (e) {
    zeroize(share);
    throw e as ShareRejected;
  }
  return share;
}

export class UnsealCeremonies {
  #d: UnsealDeps;
  #current: Ceremony | undefined;
  #active = new Set<string>(); // ceremonies this replica drives or follows
  #driving = new Set<string>(); // of those, the ones it drives
  #ended = new Set<string>(); // followed ceremonies cancelled or failed in etcd

  constructor(deps: UnsealDeps) {
    this.#d = deps;
  }

  /** The current or most recent unseal/join ceremony this replica took part in. */
  get current(): Ceremony | undefined {
    return this.#current;
  }

  /** A ceremony: live from memory if this replica drives it, otherwise as its driver last stored it. */
  async get(id: string): Promise<Ceremony> {
    if (this.#current?.id === id && this.#driving.has(id)) return this.#current;
    const stored = await getJson<Ceremony>(this.#d.ns, paths.ceremony(id));
    if (!stored) throw notFound(`no ceremony ${id}`);
    return stored;
  }

  /** Follows unseal/join ceremonies that name this replica (one ceremony unseals every replica). */
  async watch(): Promise<void> {
    const { ns } = this.#d;
    const watcher = await etcdCall('watch ceremonies', () => ns.watch().prefix('ceremonies/').create());
    watcher.on('put', (kv) => {
      let c: Ceremony;
      try {
        c = JSON.parse(kv.value.toString()) as Ceremony;
      } catch {
        return;
      }
      if (c.state !== 'CEREMONY_STATE_OPEN') {
        if (this.#active.has(c.id) && !this.#driving.has(c.id) && c.state !== 'CEREMONY_STATE_COMPLETED') this.#ended.add(c.id);
        // Cancelled through another replica: the driver stops too and never opens the seal.
        if (this.#driving.has(c.id) && c.state === 'CEREMONY_STATE_CANCELLED' && this.#current?.id === c.id) {
          this.#current.state = c.state;
          this.#current.error = c.error;
        }
        return;
      }
      if (c.operation === 'join') this.#d.voucher?.consider(c);
      if (this.#active.has(c.id) || !this.#d.seal.sealed) return;
      if (c.operation !== 'unseal' && c.operation !== 'join') return;
      // Named with its transport key and an ephemeral key it still holds (not one an ended ceremony retired).
      const mine = myEphemeralIn(c, this.#d.replica);
      if (!mine || !this.#d.replica.ephemeral.get(mine)) return;
      this.#run(c, 'follower');
    });
  }

  async start(initiator: string, ttlSeconds = this.#d.ttlSeconds): Promise<Ceremony> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 10 || ttlSeconds > this.#d.ttlSeconds)
      throw invalidArgument(`ttl_seconds must be between 10 and ${this.#d.ttlSeconds}`);
    this.#d.cluster.requireInitialized();
    if (!this.#d.seal.sealed) throw failedPrecondition('already unsealed');
    const current = this.#current;
    if (current?.state === 'CEREMONY_STATE_OPEN' && this.#driving.has(current.id)) {
      if (current.operation === 'unseal') return current;
      // A join of this replica's own is still open (e.g. waiting for a vouch no peer can give): an unseal supersedes it.
      await this.#finish(current, 'CEREMONY_STATE_CANCELLED', 'superseded by an unseal ceremony', 'driver');
    }
    // Every registered sealed replica receives the shares; this one always.
    const me = this.#d.replica;
    // A replica registered without an ephemeral key (an older version) cannot receive: it joins later.
    const others = (await this.#d.replicas.list()).filter((r) => r.sealed && r.id !== me.coordinatorId && r.ephemeralPublicKeyPem);
    const recipients = [
      recipientOf(me),
      ...others.map((r) => ({ coordinator_id: r.id, public_key_pem: r.publicKeyPem, ephemeral_public_key_pem: r.ephemeralPublicKeyPem! })),
    ];
    return this.#open('unseal', 'unseal', initiator, ttlSeconds, recipients);
  }

  /**
   * Asks the custodians to let this sealed replica join peers already unsealed in the current
   * seal epoch. Returns undefined when there is nothing to join or a ceremony is under way.
   */
  async joinIfPeersUnsealed(): Promise<Ceremony | undefined> {
    if (!this.#d.seal.sealed || !this.#d.cluster.initialized) return undefined;
    if ([...this.#active].length > 0) return undefined;
    if (!(await this.#d.replicas.peerUnsealed())) return undefined;
    const me = this.#d.replica;
    // Custodians refuse a join that would stay open longer than MAX_JOIN_LIFETIME_MS.
    const ttl = Math.min(this.#d.ttlSeconds, MAX_JOIN_LIFETIME_MS / 1000);
    return this.#open('join', `join-${me.coordinatorId}`, me.coordinatorId, ttl, [recipientOf(me)]);
  }

  async #open(operation: 'unseal' | 'join', lockName: string, initiator: string, ttlSeconds: number, recipients: Ceremony['recipients']): Promise<Ceremony> {
    const { record, manifest } = this.#d.cluster.requireInitialized();
    const { ns } = this.#d;
    const lock = paths.ceremonyLock(lockName);
    const lockedId = await etcdCall('read ceremony lock', () => ns.get(lock).string());
    if (lockedId) {
      const stale = await getJson<Ceremony>(ns, paths.ceremony(lockedId));
      if (stale && stale.state === 'CEREMONY_STATE_OPEN') {
        // One ceremony of a kind at a time: a live one is returned as it is, never replaced.
        if (!isExpired(stale) && (await this.#driverAlive(stale))) return stale;
        // Left by a replica that died while driving it: superseded.
        stale.state = 'CEREMONY_STATE_CANCELLED';
        stale.error = `superseded by a new ${operation} ceremony`;
        await putJson(ns, paths.ceremony(stale.id), stale);
      }
      await etcdCall('clear ceremony lock', () => ns.if(lock, 'Value', '==', lockedId).then(ns.delete().key(lock)).commit());
    }
    const c = newCeremony({
      operation,
      // Custodians release their share of the current set.
      parameters: { generation: String(manifest.generation ?? 1) },
      clusterId: record.clusterId,
      initiator,
      ttlSeconds,
      threshold: manifest.threshold,
      recipients,
    });
    await this.#d.audit.record({
      operation: `ceremony.${operation}.created`, principal: initiator, ceremony_id: c.id, result: 'ok',
      details: { recipients: c.recipients.map((r) => r.coordinator_id).join(',') },
    });
    // Marked as driven here before it is visible in etcd, so this replica's own watch never follows it.
    this.#driving.add(c.id);
    this.#active.add(c.id);
    const res = await etcdCall(`create ${operation} ceremony`, () =>
      ns.if(lock, 'Create', '==', 0).then(ns.put(lock).value(c.id), ns.put(paths.ceremony(c.id)).value(JSON.stringify(c))).commit(),
    ).catch((e) => {
      this.#driving.delete(c.id);
      this.#active.delete(c.id);
      throw e;
    });
    if (!res.succeeded) {
      this.#driving.delete(c.id);
      this.#active.delete(c.id);
      throw failedPrecondition(`another ${operation} ceremony is open`);
    }
    this.#run(c, 'driver');
    return c;
  }

  /** Whether the replica driving `c` (its first recipient) is still registered with the same ephemeral key (the same process, the ceremony still running). */
  async #driverAlive(c: Ceremony): Promise<boolean> {
    if (this.#driving.has(c.id)) return true;
    const driver = c.recipients[0];
    return (await this.#d.replicas.list()).some((r) => r.id === driver?.coordinator_id && r.ephemeralPublicKeyPem === driver.ephemeral_public_key_pem);
  }

  #run(c: Ceremony, role: Role): void {
    this.#active.add(c.id);
    this.#current = c;
    const generation = this.#d.seal.generation;
    void this.#drive(c, generation, role).finally(() => {
      this.#active.delete(c.id);
      this.#driving.delete(c.id);
      this.#ended.delete(c.id);
      // Forward secrecy: the ceremony's ephemeral private key is gone once it ends here.
      this.#d.replica.ephemeral.retire(myEphemeralIn(c, this.#d.replica));
    });
  }

  /** CancelCeremony (admin) for an unseal or join ceremony, whichever replica drives it. */
  async cancel(id: string, principal: string): Promise<Ceremony> {
    const reason = `cancelled by ${principal}`;
    if (this.#current?.id === id && this.#driving.has(id)) {
      if (this.#current.state !== 'CEREMONY_STATE_OPEN') throw failedPrecondition(`ceremony ${id} is already ${stateName(this.#current.state)}`);
      await this.#finish(this.#current, 'CEREMONY_STATE_CANCELLED', reason, 'driver');
      return this.#current;
    }
    const c = await this.get(id);
    if (c.state !== 'CEREMONY_STATE_OPEN') throw failedPrecondition(`ceremony ${id} is already ${stateName(c.state)}`);
    await this.#finish(c, 'CEREMONY_STATE_CANCELLED', reason, 'driver'); // recorded here; its driver sees it through the watch
    return c;
  }

  /** Seal stops an unseal in progress: its ceremony is cancelled and will not open the seal. */
  async cancelCurrent(reason: string): Promise<void> {
    const c = this.#current;
    if (c?.state !== 'CEREMONY_STATE_OPEN' || !this.#driving.has(c.id)) return;
    await this.#finish(c, 'CEREMONY_STATE_CANCELLED', reason, 'driver');
  }

  async #drive(c: Ceremony, generation: number, role: Role): Promise<void> {
    const { links, log, pollMs } = this.#d;
    const progress = new Map<string, CustodianProgress>(links.map((l) => [l.id, role === 'driver' ? 'unproposed' : 'pending']));
    const accepted: { custodianId: string; share: Uint8Array }[] = [];
    try {
      // A replica that started before the cluster was initialized (or resharded) reads the manifest now.
      if (role === 'follower') await this.#d.cluster.load();
      const vouch = c.operation === 'join' && role === 'driver' ? await this.#awaitVouch(c) : undefined;
      while (c.state === 'CEREMONY_STATE_OPEN') {
        if (role === 'follower' && (this.#ended.has(c.id) || generation !== this.#d.seal.generation || !this.#d.seal.sealed)) break;
        if (isExpired(c)) {
          await this.#finish(c, 'CEREMONY_STATE_EXPIRED', 'ceremony expired before a quorum released shares', role);
          break;
        }
        // allSettled: a failing poll must not leave siblings adding shares after the finally below.
        const polled = await Promise.allSettled(links.map((l) => this.#poll(c, l, progress, accepted, role, vouch)));
        const failed = polled.find((p): p is PromiseRejectedResult => p.status === 'rejected');
        if (failed) throw failed.reason;
        if (c.state !== 'CEREMONY_STATE_OPEN') break; // cancelled by a seal meanwhile
        if (accepted.length >= c.threshold) {
          await this.#complete(c, accepted, generation, role);
          break;
        }
        const open = [...progress.values()].filter((p) => p === 'unproposed' || p === 'pending').length;
        if (accepted.length + open < c.threshold) {
          await this.#finish(c, 'CEREMONY_STATE_FAILED', `only ${accepted.length} valid shares can be collected, ${c.threshold} needed`, role);
          break;
        }
        await new Promise((r) => setTimeout(r, pollMs));
      }
    } catch (e) {
      log.error({ ceremonyId: c.id, role, err: (e as Error).message }, `${c.operation} ceremony failed`);
      await this.#finish(c, 'CEREMONY_STATE_FAILED', e instanceof KeyshardError ? e.message : 'internal error', role).catch(() => {});
    } finally {
      zeroize(...accepted.map((a) => a.share));
    }
  }

  async #poll(
    c: Ceremony,
    link: CustodianLink,
    progress: Map<string, CustodianProgress>,
    accepted: { custodianId: string; share: Uint8Array }[],
    role: Role,
    vouch?: JoinVouch,
  ) {
    const state = progress.get(link.id);
    if (state !== 'unproposed' && state !== 'pending') return;
    let res: ReleaseResponse;
    try {
      res = state === 'unproposed' ? await link.propose(c, vouch) : await link.release(c.id);
    } catch (e) {
      // A refusal (a check failed at the custodian) is final: recorded with its reason, never retried.
      if (role === 'driver' && e instanceof KeyshardError && (e.code === 'FAILED_PRECONDITION' || e.code === 'PERMISSION_DENIED')) {
        progress.set(link.id, 'rejected');
        c.failures.push({ custodian_id: link.id, reason: e.message });
        this.#d.log.warn({ ceremonyId: c.id, custodian: link.id, reason: e.message }, 'custodian refused the ceremony');
        await this.#d.audit.record({
          operation: `ceremony.${c.operation}.refused`, principal: link.id, ceremony_id: c.id, result: 'denied', code: e.code,
          details: { custodian: link.id, reason: e.message },
        });
        await this.#persist(c);
        return;
      }
      // Unreachable custodians (or, for a follower, ones not yet asked) are retried next round.
      this.#d.log.debug({ ceremonyId: c.id, custodian: link.id, err: (e as Error).message }, 'custodian not answering');
      return;
    }
    if (res.status === 'pending') {
      progress.set(link.id, 'pending');
      return;
    }
    // A quorum is already in hand: leave further releases unopened.
    if (accepted.length >= c.threshold) return;
    const replica = this.#d.replica.coordinatorId;
    if (res.status === 'denied') {
      progress.set(link.id, 'denied');
      c.denied_by.push(link.id);
      if (role === 'driver') {
        await this.#d.audit.record({ operation: `ceremony.${c.operation}.denied`, principal: link.id, ceremony_id: c.id, result: 'denied', details: { custodian: link.id, reason: res.reason } });
        await this.#persist(c);
      }
      return;
    }
    try {
      const share = await this.#acceptRelease(c, link.id, res);
      // Sibling polls opened their releases meanwhile: a quorum already in hand takes no more.
      if (accepted.length >= c.threshold) {
        zeroize(share);
        return;
      }
      accepted.push({ custodianId: link.id, share });
      progress.set(link.id, 'accepted');
      c.approved_by.push(link.id);
      await this.#d.audit.record({ operation: `ceremony.${c.operation}.share_accepted`, principal: link.id, ceremony_id: c.id, result: 'ok', details: { custodian: link.id, replica } });
    } catch (e) {
      const reason = e instanceof KeyshardError ? e.message : 'share could not be processed';
      progress.set(link.id, 'rejected');
      c.failures.push({ custodian_id: link.id, reason });
      this.#d.log.warn({ ceremonyId: c.id, custodian: link.id, reason }, 'share rejected');
      await this.#d.audit.record({
        operation: `ceremony.${c.operation}.share_rejected`, principal: link.id, ceremony_id: c.id, result: 'error', code: 'FAILED_PRECONDITION',
        details: { custodian: link.id, reason, replica },
      });
    }
    if (role === 'driver') await this.#persist(c);
  }

  /**
   * The joiner waits for an unsealed peer's vouch (join-voucher.ts) that verifies against the
   * manifest's vouch key; after `vouchWaitMs` it proposes without one, and custodians under
   * joinPolicy auto refuse, saying an unseal ceremony is needed.
   */
  async #awaitVouch(c: Ceremony): Promise<JoinVouch | undefined> {
    const key = this.#d.cluster.manifest?.vouchPublicKeyPem;
    const deadline = Math.min(Date.now() + (this.#d.vouchWaitMs ?? 10_000), Date.parse(c.expires_at));
    while (c.state === 'CEREMONY_STATE_OPEN') {
      const stored = await listJson<StoredVouch>(this.#d.ns, paths.joinVouchesPrefix(c.id)).catch(() => new Map<string, StoredVouch>());
      for (const s of stored.values()) {
        const v = { voucher: String(s.voucher), seal_epoch: Number(s.seal_epoch), not_after: String(s.not_after), signature: Buffer.from(String(s.signature), 'base64') };
        if (verifyVouch(c, v, key)) return v;
      }
      if (Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, this.#d.pollMs));
    }
    this.#d.log.warn({ ceremonyId: c.id }, 'no unsealed replica vouched for this join; proposing without a vouch');
    return undefined;
  }

  #acceptRelease(c: Ceremony, custodianId: string, res: ReleaseResponse): Promise<Uint8Array> {
    return shareFromRelease(c, this.#d.cluster.manifest!, custodianId, res, this.#d.replica, this.#d.oaepHash);
  }

  /** The completion is on record before the seal opens: no unaudited unseal. */
  async #complete(c: Ceremony, accepted: { custodianId: string; share: Uint8Array }[], generation: number, role: Role): Promise<void> {
    const root = await combineShares(this.#d.cluster.manifest!, accepted);
    const replica = this.#d.replica.coordinatorId;
    try {
      await this.#d.audit.record({
        operation: `ceremony.${c.operation}.completing`, principal: c.initiator, ceremony_id: c.id, result: 'ok',
        details: { approved_by: accepted.map((a) => a.custodianId).join(','), replica },
      });
    } catch (e) {
      zeroize(root);
      throw e;
    }
    await this.#d.cluster.openSeal(root, generation);
    if (role === 'driver') await this.#finish(c, 'CEREMONY_STATE_COMPLETED', '', role);
    else c.state = 'CEREMONY_STATE_COMPLETED';
    this.#d.log.info({ ceremonyId: c.id, operation: c.operation, approvedBy: accepted.map((a) => a.custodianId), role }, 'unsealed');
  }

  async #finish(c: Ceremony, state: Ceremony['state'], error: string, role: Role): Promise<void> {
    c.state = state;
    c.error = error;
    if (role === 'follower') return; // the driver records the ceremony's outcome
    const op = stateName(state);
    await this.#persist(c);
    const { ns } = this.#d;
    const lock = paths.ceremonyLock(c.operation === 'join' ? `join-${c.initiator}` : 'unseal');
    await etcdCall('release ceremony lock', () => ns.if(lock, 'Value', '==', c.id).then(ns.delete().key(lock)).commit());
    if (c.operation === 'join') await etcdCall('drop join vouches', () => ns.delete().prefix(paths.joinVouchesPrefix(c.id)).exec());
    await this.#d.audit.record({
      operation: `ceremony.${c.operation}.${op}`,
      principal: c.initiator,
      ceremony_id: c.id,
      result: state === 'CEREMONY_STATE_COMPLETED' ? 'ok' : 'error',
      details: error ? { reason: error } : {},
    });
  }

  #persist(c: Ceremony): Promise<void> {
    return putJson(this.#d.ns, paths.ceremony(c.id), c);
  }
}
