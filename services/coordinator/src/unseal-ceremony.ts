/**
 * Unseal and join ceremonies: from sealed coordinator replicas to open ones, with a custodian quorum.
 *
 * Unseal: the replica that starts it (the driver) names every registered sealed replica as a
 * recipient; each approving custodian wraps its share to every recipient's ephemeral key.
 * The driver proposes, records progress in etcd and completes the ceremony; every other
 * recipient (a follower, seeing the ceremony through an etcd watch) fetches the same releases
 * from the custodians and unseals itself. One ceremony unseals them all; no replica ever
 * receives the root key from another.
 * Join: a replica that is sealed while a peer is unsealed (it restarted) asks for itself
 * alone; custodians release by hand or by their auto-release policy for registered
 * coordinator identities.
 *
 *   start ──► propose to every custodian ──► poll releases ──► per share:
 *     approval signature (HSM Ed25519 over the ceremony hash) verifies against the manifest,
 *     the share unwraps under this replica's ephemeral key, and passes checkShare
 *     (registered x, x ≠ 0, commitment) ──► accepted | rejected (custodian named, audited)
 *   ──► once t accepted: combine, check KCV + manifest MAC, unwrap KEKs ──► COMPLETED
 *   ──► all custodians answered and < t accepted ──► FAILED;  past expiry ──► EXPIRED
 *
 * Invariants: below t accepted shares nothing is combined; shares exist in plaintext only in
 * this process's memory between unwrap and combine, then are zeroized; every step is audited
 * and a step that cannot be audited stops the ceremony (fail closed). One unseal ceremony is
 * open at a time (etcd `ceremony-lock/unseal`).
 * Unseal and join ceremony records are written by sealed replicas, which hold no record MAC
 * key (record-integrity.ts): they carry no MAC. What they say is bound by the ceremony hash the
 * custodians sign, and the custodians check it themselves before releasing anything.
 */
import type { KeyObject } from 'node:crypto';
import {
  approvalKeyOf, checkShare, combineShares, isExpired, newCeremony, oaepDecrypt, stateName, verifyApproval, zeroize,
  type Ceremony, type OaepHash, type ShareManifest, type ShareRejected,
} from '@keyshard/crypto';
import { KeyshardError, failedPrecondition, invalidArgument, notFound } from '@keyshard/errors';
import { etcdCall, getJson, paths, putJson, type Namespace } from '@keyshard/store';
import type { Logger } from '@keyshard/config';
import type { Cluster } from './cluster.ts';
import type { CustodianLink, ReleaseResponse } from './custodian-link.ts';
import type { Seal } from './seal.ts';
import type { AuditRecorder } from '@keyshard/audit-client';

export interface ReplicaKey {
  coordinatorId: string;
  publicKeyPem: string;
  privateKey: KeyObject;
}

type CustodianProgress = 'unproposed' | 'pending' | 'accepted' | 'rejected' | 'denied';

/** Who may receive shares: the registered replicas (replicas.ts). */
export interface ReplicaDirectory {
  list(): Promise<{ id: string; publicKeyPem: string; sealed: boolean }[]>;
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
}

/**
 * The share a custodian released to `replica` in ceremony `c`, checked against `manifest`: the
 * custodian is in it, its approval signature verifies with the manifest's key, and the share
 * (RSA-OAEP-unwrapped with the replica's ephemeral key) passes checkShare. Throws naming the
 * custodian otherwise. The caller zeroizes the share.
 */
export function shareFromRelease(c: Ceremony, manifest: ShareManifest, custodianId: string, res: ReleaseResponse, replica: ReplicaKey, oaepHash: OaepHash): Uint8Array {
  const entry = manifest.custodians.find((m) => m.id === custodianId);
  if (!entry) throw new KeyshardError('FAILED_PRECONDITION', `custodian ${custodianId} is not in the share manifest`);
  if (!verifyApproval(c, approvalKeyOf(manifest.clusterId, entry, res.succession), res.approval_signature))
    throw new KeyshardError('FAILED_PRECONDITION', `approval signature of custodian ${custodianId} does not verify`);
  const mine = res.releases.find((r) => r.coordinator_id === replica.coordinatorId);
  if (!mine) throw new KeyshardError('FAILED_PRECONDITION', `custodian ${custodianId} released no share for this replica`);
  const share = oaepDecrypt(replica.privateKey, mine.wrapped_share, oaepHash);
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
      if (this.#active.has(c.id) || !this.#d.seal.sealed) return;
      if (c.operation !== 'unseal' && c.operation !== 'join') return;
      if (!c.recipients.some((r) => r.coordinator_id === this.#d.replica.coordinatorId && r.public_key_pem === this.#d.replica.publicKeyPem)) return;
      this.#run(c, 'follower');
    });
  }

  async start(initiator: string, ttlSeconds = this.#d.ttlSeconds): Promise<Ceremony> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 10 || ttlSeconds > this.#d.ttlSeconds)
      throw invalidArgument(`ttl_seconds must be between 10 and ${this.#d.ttlSeconds}`);
    this.#d.cluster.requireInitialized();
    if (!this.#d.seal.sealed) throw failedPrecondition('already unsealed');
    if (this.#current?.state === 'CEREMONY_STATE_OPEN' && this.#driving.has(this.#current.id)) return this.#current;
    // Every registered sealed replica receives the shares; this one always.
    const me = this.#d.replica;
    const others = (await this.#d.replicas.list()).filter((r) => r.sealed && r.id !== me.coordinatorId);
    const recipients = [me, ...others.map((r) => ({ coordinatorId: r.id, publicKeyPem: r.publicKeyPem }))];
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
    return this.#open('join', `join-${me.coordinatorId}`, me.coordinatorId, this.#d.ttlSeconds, [me]);
  }

  async #open(operation: 'unseal' | 'join', lockName: string, initiator: string, ttlSeconds: number, recipients: { coordinatorId: string; publicKeyPem: string }[]): Promise<Ceremony> {
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
      recipients: recipients.map((r) => ({ coordinator_id: r.coordinatorId, public_key_pem: r.publicKeyPem })),
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

  /** Whether the replica driving `c` (its first recipient) is still registered with the same ceremony key. */
  async #driverAlive(c: Ceremony): Promise<boolean> {
    if (this.#driving.has(c.id)) return true;
    const driver = c.recipients[0];
    return (await this.#d.replicas.list()).some((r) => r.id === driver?.coordinator_id && r.publicKeyPem === driver.public_key_pem);
  }

  #run(c: Ceremony, role: Role): void {
    this.#active.add(c.id);
    this.#current = c;
    const generation = this.#d.seal.generation;
    void this.#drive(c, generation, role).finally(() => {
      this.#active.delete(c.id);
      this.#driving.delete(c.id);
      this.#ended.delete(c.id);
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
      while (c.state === 'CEREMONY_STATE_OPEN') {
        if (role === 'follower' && (this.#ended.has(c.id) || generation !== this.#d.seal.generation || !this.#d.seal.sealed)) break;
        if (isExpired(c)) {
          await this.#finish(c, 'CEREMONY_STATE_EXPIRED', 'ceremony expired before a quorum released shares', role);
          break;
        }
        // allSettled: a failing poll must not leave siblings adding shares after the finally below.
        const polled = await Promise.allSettled(links.map((l) => this.#poll(c, l, progress, accepted, role)));
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
  ) {
    const state = progress.get(link.id);
    if (state !== 'unproposed' && state !== 'pending') return;
    let res: ReleaseResponse;
    try {
      res = state === 'unproposed' ? await link.propose(c) : await link.release(c.id);
    } catch (e) {
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
      const share = this.#acceptRelease(c, link.id, res);
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

  #acceptRelease(c: Ceremony, custodianId: string, res: ReleaseResponse): Uint8Array {
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
