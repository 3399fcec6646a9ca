/**
 * The unseal ceremony: from a sealed coordinator to an open one, with a custodian quorum.
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
 */
import type { KeyObject } from 'node:crypto';
import {
  checkShare, combineShares, isExpired, newCeremony, oaepDecrypt, verifyApproval, zeroize,
  type Ceremony, type OaepHash, type ShareRejected,
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

export interface UnsealDeps {
  ns: Namespace;
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

export class UnsealCeremonies {
  #d: UnsealDeps;
  #current: Ceremony | undefined;
  #driving = new Set<string>();

  constructor(deps: UnsealDeps) {
    this.#d = deps;
  }

  /** The current or most recent unseal ceremony of this replica. */
  get current(): Ceremony | undefined {
    return this.#current;
  }

  async get(id: string): Promise<Ceremony> {
    if (this.#current?.id === id) return this.#current;
    const stored = await getJson<Ceremony>(this.#d.ns, paths.ceremony(id));
    if (!stored) throw notFound(`no ceremony ${id}`);
    return stored;
  }

  async start(initiator: string, ttlSeconds = this.#d.ttlSeconds): Promise<Ceremony> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 10 || ttlSeconds > this.#d.ttlSeconds)
      throw invalidArgument(`ttl_seconds must be between 10 and ${this.#d.ttlSeconds}`);
    const { record, manifest } = this.#d.cluster.requireInitialized();
    if (!this.#d.seal.sealed) throw failedPrecondition('already unsealed');
    if (this.#current?.state === 'CEREMONY_STATE_OPEN' && this.#driving.has(this.#current.id)) return this.#current;
    const { ns } = this.#d;
    const lockedId = await etcdCall('read unseal lock', () => ns.get(paths.ceremonyLock('unseal')).string());
    if (lockedId) {
      // An open ceremony not driven by this process was left by a previous run: supersede it.
      const stale = await getJson<Ceremony>(ns, paths.ceremony(lockedId));
      if (stale && stale.state === 'CEREMONY_STATE_OPEN') {
        stale.state = 'CEREMONY_STATE_CANCELLED';
        stale.error = 'superseded by a new unseal ceremony';
        await putJson(ns, paths.ceremony(stale.id), stale);
      }
      await etcdCall('clear unseal lock', () => ns.delete().key(paths.ceremonyLock('unseal')).exec());
    }
    const c = newCeremony({
      operation: 'unseal',
      clusterId: record.clusterId,
      initiator,
      ttlSeconds,
      threshold: manifest.threshold,
      recipients: [{ coordinator_id: this.#d.replica.coordinatorId, public_key_pem: this.#d.replica.publicKeyPem }],
    });
    await this.#d.audit.record({ operation: 'ceremony.unseal.created', principal: initiator, ceremony_id: c.id, result: 'ok' });
    const res = await etcdCall('create unseal ceremony', () =>
      ns
        .if(paths.ceremonyLock('unseal'), 'Create', '==', 0)
        .then(ns.put(paths.ceremonyLock('unseal')).value(c.id), ns.put(paths.ceremony(c.id)).value(JSON.stringify(c)))
        .commit(),
    );
    if (!res.succeeded) throw failedPrecondition('another unseal ceremony is open');
    this.#current = c;
    this.#driving.add(c.id);
    const generation = this.#d.seal.generation;
    void this.#drive(c, generation).finally(() => this.#driving.delete(c.id));
    return c;
  }

  /** Seal stops an unseal in progress: its ceremony is cancelled and will not open the seal. */
  async cancelCurrent(reason: string): Promise<void> {
    const c = this.#current;
    if (c?.state !== 'CEREMONY_STATE_OPEN') return;
    await this.#finish(c, 'CEREMONY_STATE_CANCELLED', reason);
  }

  async #drive(c: Ceremony, generation: number): Promise<void> {
    const { links, log, pollMs } = this.#d;
    const progress = new Map<string, CustodianProgress>(links.map((l) => [l.id, 'unproposed']));
    const accepted: { custodianId: string; share: Uint8Array }[] = [];
    try {
      while (c.state === 'CEREMONY_STATE_OPEN') {
        if (isExpired(c)) {
          await this.#finish(c, 'CEREMONY_STATE_EXPIRED', 'ceremony expired before a quorum released shares');
          break;
        }
        // allSettled: a failing poll must not leave siblings adding shares after the finally below.
        const polled = await Promise.allSettled(links.map((l) => this.#poll(c, l, progress, accepted)));
        const failed = polled.find((p): p is PromiseRejectedResult => p.status === 'rejected');
        if (failed) throw failed.reason;
        if (c.state !== 'CEREMONY_STATE_OPEN') break; // cancelled by a seal meanwhile
        if (accepted.length >= c.threshold) {
          await this.#complete(c, accepted, generation);
          break;
        }
        const open = [...progress.values()].filter((p) => p === 'unproposed' || p === 'pending').length;
        if (accepted.length + open < c.threshold) {
          await this.#finish(c, 'CEREMONY_STATE_FAILED', `only ${accepted.length} valid shares can be collected, ${c.threshold} needed`);
          break;
        }
        await new Promise((r) => setTimeout(r, pollMs));
      }
    } catch (e) {
      log.error({ ceremonyId: c.id, err: (e as Error).message }, 'unseal ceremony failed');
      await this.#finish(c, 'CEREMONY_STATE_FAILED', e instanceof KeyshardError ? e.message : 'internal error').catch(() => {});
    } finally {
      zeroize(...accepted.map((a) => a.share));
    }
  }

  async #poll(c: Ceremony, link: CustodianLink, progress: Map<string, CustodianProgress>, accepted: { custodianId: string; share: Uint8Array }[]) {
    const state = progress.get(link.id);
    if (state !== 'unproposed' && state !== 'pending') return;
    let res: ReleaseResponse;
    try {
      res = state === 'unproposed' ? await link.propose(c) : await link.release(c.id);
    } catch (e) {
      // Unreachable custodians are retried on the next round; the ceremony goes on without them.
      this.#d.log.debug({ ceremonyId: c.id, custodian: link.id, err: (e as Error).message }, 'custodian not answering');
      return;
    }
    if (res.status === 'pending') {
      progress.set(link.id, 'pending');
      return;
    }
    // A quorum is already in hand: leave further releases unopened.
    if (accepted.length >= c.threshold) return;
    if (res.status === 'denied') {
      progress.set(link.id, 'denied');
      c.denied_by.push(link.id);
      await this.#d.audit.record({ operation: 'ceremony.unseal.denied', principal: link.id, ceremony_id: c.id, result: 'denied', details: { custodian: link.id, reason: res.reason } });
      await this.#persist(c);
      return;
    }
    try {
      const share = this.#acceptRelease(c, link.id, res);
      accepted.push({ custodianId: link.id, share });
      progress.set(link.id, 'accepted');
      c.approved_by.push(link.id);
      await this.#d.audit.record({ operation: 'ceremony.unseal.share_accepted', principal: link.id, ceremony_id: c.id, result: 'ok', details: { custodian: link.id } });
    } catch (e) {
      const reason = e instanceof KeyshardError ? e.message : 'share could not be processed';
      progress.set(link.id, 'rejected');
      c.failures.push({ custodian_id: link.id, reason });
      this.#d.log.warn({ ceremonyId: c.id, custodian: link.id, reason }, 'share rejected');
      await this.#d.audit.record({ operation: 'ceremony.unseal.share_rejected', principal: link.id, ceremony_id: c.id, result: 'error', code: 'FAILED_PRECONDITION', details: { custodian: link.id, reason } });
    }
    await this.#persist(c);
  }

  #acceptRelease(c: Ceremony, custodianId: string, res: ReleaseResponse): Uint8Array {
    const entry = this.#d.cluster.manifest?.custodians.find((m) => m.id === custodianId);
    if (!entry) throw new KeyshardError('FAILED_PRECONDITION', `custodian ${custodianId} is not in the share manifest`);
    if (!verifyApproval(c, entry.approvalPublicKeyPem, res.approval_signature))
      throw new KeyshardError('FAILED_PRECONDITION', `approval signature of custodian ${custodianId} does not verify`);
    const mine = res.releases.find((r) => r.coordinator_id === this.#d.replica.coordinatorId);
    if (!mine) throw new KeyshardError('FAILED_PRECONDITION', `custodian ${custodianId} released no share for this replica`);
    const share = oaepDecrypt(this.#d.replica.privateKey, mine.wrapped_share, this.#d.oaepHash);
    try {
      checkShare(this.#d.cluster.manifest!, custodianId, share);
    } catch (e) {
      zeroize(share);
      throw e as ShareRejected;
    }
    return share;
  }

  /** The completion is on record before the seal opens: no unaudited unseal. */
  async #complete(c: Ceremony, accepted: { custodianId: string; share: Uint8Array }[], generation: number): Promise<void> {
    const root = await combineShares(this.#d.cluster.manifest!, accepted);
    try {
      await this.#d.audit.record({ operation: 'ceremony.unseal.completing', principal: c.initiator, ceremony_id: c.id, result: 'ok', details: { approved_by: c.approved_by.join(',') } });
    } catch (e) {
      zeroize(root);
      throw e;
    }
    await this.#d.cluster.openSeal(root, generation);
    await this.#finish(c, 'CEREMONY_STATE_COMPLETED', '');
    this.#d.log.info({ ceremonyId: c.id, approvedBy: c.approved_by }, 'unsealed');
  }

  async #finish(c: Ceremony, state: Ceremony['state'], error: string): Promise<void> {
    c.state = state;
    c.error = error;
    const op = { CEREMONY_STATE_COMPLETED: 'completed', CEREMONY_STATE_EXPIRED: 'expired', CEREMONY_STATE_CANCELLED: 'cancelled' }[state as string] ?? 'failed';
    await this.#persist(c);
    const { ns } = this.#d;
    await etcdCall('release unseal lock', () =>
      ns.if(paths.ceremonyLock('unseal'), 'Value', '==', c.id).then(ns.delete().key(paths.ceremonyLock('unseal'))).commit(),
    );
    await this.#d.audit.record({
      operation: `ceremony.unseal.${op}`,
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
