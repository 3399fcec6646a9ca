/**
 * Quorum ceremonies for dangerous acts that need custodians' approval but no share: today
 * destroy-key (brief, "Ceremonies"). Unseal and join, which move shares, are in
 * unseal-ceremony.ts; both use the same ceremony object and custodian protocol.
 *
 *   start (admin; parameters checked; one open ceremony per operation, etcd lock)
 *     ──► propose to every custodian ──► poll: each approval is the custodian's HSM signature
 *         over the ceremony hash, counted once per manifest custodian (tallyApprovals)
 *     ──► t valid approvals: the stored ceremony is re-read; if it was cancelled, or its
 *         stored fields no longer hash to what was approved, nothing is done (FAILED)
 *     ──► the operation runs on the approved (in-memory) parameters ──► COMPLETED
 *   denials beyond n − t ──► FAILED;  past expiry ──► EXPIRED;  CancelCeremony ──► CANCELLED
 *
 * Invariants: below t approvals nothing is done; every step is audited before the next, and
 * a step that cannot be audited stops the ceremony (fail closed). The coordinator must be
 * unsealed: the manifest whose approval keys count was verified (its MAC) at unseal.
 * The stored ceremony carries a record MAC at every write (record-integrity.ts) and is checked
 * at every read: one altered in etcd fails its ceremony (and is audited), never drives it.
 */
import { ceremonyHash, isExpired, newCeremony, stateName, tallyApprovals, type Ceremony } from '@keyshard/crypto';
import { KeyshardError, failedPrecondition, invalidArgument, notFound } from '@keyshard/errors';
import { etcdCall, paths, type Namespace } from '@keyshard/store';
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import type { Cluster } from '../cluster/cluster.ts';
import type { Approval, CustodianLink, ReleaseResponse } from './custodian-link.ts';
import type { Seal } from '../cluster/seal.ts';
import type { RecordIntegrity } from '../cluster/record-integrity.ts';

/** One kind of quorum-approved act. */
export interface QuorumOperation {
  /** Checks a request and returns the parameters custodians will see and sign. */
  prepare(parameters: Record<string, string>): Promise<Record<string, string>>;
  /** Runs once the ceremony is approved (with the approvals counted); returns details for the audit record. */
  execute(c: Ceremony, approvals: Approval[]): Promise<Record<string, string>>;
}

/** Which replica drives a ceremony, and whether a driver is still alive (replicas.ts). */
export interface DriverIdentity {
  /** `<coordinator id>/<fingerprint of its ceremony key>`: unique per process. */
  self: string;
  alive(driver: string): Promise<boolean>;
}

export interface QuorumDeps {
  ns: Namespace;
  driver: DriverIdentity;
  cluster: Cluster;
  seal: Seal;
  links: CustodianLink[];
  audit: AuditRecorder;
  integrity: RecordIntegrity;
  log: Logger;
  ttlSeconds: number;
  pollMs: number;
}

export class QuorumCeremonies {
  #d: QuorumDeps;
  #ops: Record<string, QuorumOperation>;

  constructor(deps: QuorumDeps, operations: Record<string, QuorumOperation>) {
    this.#d = deps;
    this.#ops = operations;
  }

  handles(operation: string): boolean {
    return Object.hasOwn(this.#ops, operation);
  }

  async start(operation: string, parameters: Record<string, string>, initiator: string, ttlSeconds = this.#d.ttlSeconds): Promise<Ceremony> {
    const op = this.#ops[operation];
    if (!op) throw invalidArgument(`unknown ceremony operation ${operation}`);
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 10 || ttlSeconds > this.#d.ttlSeconds)
      throw invalidArgument(`ttl_seconds must be between 10 and ${this.#d.ttlSeconds}`);
    this.#d.seal.requireOpen();
    const { record, manifest } = this.#d.cluster.requireInitialized();
    // Every ceremony names the share set whose custodians approve it (custodians check they hold it).
    const params = { generation: String(manifest.generation ?? 1), ...(await op.prepare(parameters)), driver: this.#d.driver.self };
    const { ns } = this.#d;
    const lock = paths.ceremonyLock(operation);
    await this.#clearStaleLock(lock);
    const c = newCeremony({ operation, parameters: params, clusterId: record.clusterId, initiator, ttlSeconds, recipients: [], threshold: manifest.threshold });
    await this.#d.audit.record({ operation: `ceremony.${operation}.created`, principal: initiator, ceremony_id: c.id, result: 'ok', details: params });
    const res = await etcdCall(`create ${operation} ceremony`, () =>
      ns.if(lock, 'Create', '==', 0).then(ns.put(lock).value(c.id), ns.put(paths.ceremony(c.id)).value(this.#d.integrity.stamp(paths.ceremony(c.id), c))).commit(),
    );
    if (!res.succeeded) throw failedPrecondition(`another ${operation} ceremony is open; only one runs at a time`);
    void this.#drive(c, op);
    return c;
  }

  /**
   * A lock whose ceremony is no longer open, has expired, or whose driving replica died (its
   * registration is gone: a crash mid-ceremony) is released; the ceremony is closed as such.
   */
  async #clearStaleLock(lock: string): Promise<void> {
    const { ns } = this.#d;
    const id = await etcdCall('read ceremony lock', () => ns.get(lock).string());
    if (!id) return;
    // A ceremony record that fails its check is not used (reported); its lock is released.
    const raw = await etcdCall('read ceremony', () => ns.get(paths.ceremony(id)).string());
    const c = raw === null ? undefined : this.#d.integrity.check<Ceremony>(paths.ceremony(id), raw);
    if (c && c.state === 'CEREMONY_STATE_OPEN') {
      if (isExpired(c)) await this.#finish(c, 'CEREMONY_STATE_EXPIRED', 'expired before a quorum approved it');
      else if (!(await this.#d.driver.alive(c.parameters.driver ?? ''))) await this.#finish(c, 'CEREMONY_STATE_FAILED', 'the coordinator running it stopped; start a new one');
      else return;
    }
    await etcdCall('clear ceremony lock', () => ns.if(lock, 'Value', '==', id).then(ns.delete().key(lock)).commit());
  }

  async #drive(c: Ceremony, op: QuorumOperation): Promise<void> {
    const { links, log, pollMs } = this.#d;
    const proposed = new Set<string>();
    const answers = new Map<string, ReleaseResponse>();
    try {
      for (;;) {
        const stored = await this.#read(c.id);
        if (stored?.state !== 'CEREMONY_STATE_OPEN') return; // cancelled meanwhile: its canceller recorded it
        if (isExpired(c)) return void (await this.#finish(c, 'CEREMONY_STATE_EXPIRED', 'expired before a quorum approved it'));
        await Promise.all(links.filter((l) => !answers.has(l.id)).map((l) => this.#ask(c, l, proposed, answers)));
        const manifest = this.#d.cluster.requireInitialized().manifest;
        const approvals = [...answers].filter(([, r]) => r.status === 'released').map(([id, r]) => ({ custodianId: id, signature: r.approval_signature, succession: r.succession }));
        const tally = tallyApprovals(c, manifest.custodians, approvals);
        const denied = [...answers].filter(([, r]) => r.status === 'denied').map(([id]) => id);
        const changed = tally.approved.length !== c.approved_by.length || denied.length !== c.denied_by.length || tally.refused.length !== c.failures.length;
        if (changed) {
          for (const id of tally.approved.filter((a) => !c.approved_by.includes(a)))
            await this.#d.audit.record({ operation: `ceremony.${c.operation}.approved`, principal: id, ceremony_id: c.id, result: 'ok', details: { custodian: id } });
          for (const id of denied.filter((d) => !c.denied_by.includes(d)))
            await this.#d.audit.record({ operation: `ceremony.${c.operation}.denied`, principal: id, ceremony_id: c.id, result: 'denied', details: { custodian: id, reason: answers.get(id)!.reason } });
          for (const f of tally.refused.filter((r) => !c.failures.some((x) => x.custodian_id === r.custodian_id)))
            await this.#d.audit.record({ operation: `ceremony.${c.operation}.approval_refused`, principal: f.custodian_id, ceremony_id: c.id, result: 'error', code: 'FAILED_PRECONDITION', details: { custodian: f.custodian_id, reason: f.reason } });
          c.approved_by = tally.approved;
          c.denied_by = denied;
          c.failures = tally.refused;
          // Only the progress fields change; a CAS on OPEN keeps a concurrent cancel.
          await this.#persistIfOpen(c);
        }
        if (tally.approved.length >= c.threshold)
          return void (await this.#execute(c, op, approvals.filter((a) => tally.approved.includes(a.custodianId))));
        const undecided = manifest.custodians.filter(
          (m) => !tally.approved.includes(m.id) && !denied.includes(m.id) && !tally.refused.some((r) => r.custodian_id === m.id),
        ).length;
        if (tally.approved.length + undecided < c.threshold)
          return void (await this.#finish(c, 'CEREMONY_STATE_FAILED', `only ${tally.approved.length + undecided} custodians can still approve, ${c.threshold} needed`));
        await new Promise((r) => setTimeout(r, pollMs));
      }
    } catch (e) {
      log.error({ ceremonyId: c.id, err: (e as Error).message }, `${c.operation} ceremony failed`);
      await this.#finish(c, 'CEREMONY_STATE_FAILED', e instanceof KeyshardError ? e.message : 'internal error').catch(() => {});
    }
  }

  async #ask(c: Ceremony, link: CustodianLink, proposed: Set<string>, answers: Map<string, ReleaseResponse>): Promise<void> {
    try {
      const res = proposed.has(link.id) ? await link.release(c.id) : await link.propose(c);
      proposed.add(link.id);
      if (res.status !== 'pending') answers.set(link.id, res);
    } catch (e) {
      this.#d.log.debug({ ceremonyId: c.id, custodian: link.id, err: (e as Error).message }, 'custodian not answering');
    }
  }

  /** Approved: the stored ceremony must still be the one approved; then the act runs. */
  async #execute(c: Ceremony, op: QuorumOperation, approvals: Approval[]): Promise<void> {
    const stored = await this.#read(c.id);
    if (stored?.state !== 'CEREMONY_STATE_OPEN') return;
    if (ceremonyHash(stored) !== c.hash || stored.hash !== c.hash)
      return void (await this.#finish(c, 'CEREMONY_STATE_FAILED', 'the stored ceremony no longer matches what the custodians approved; nothing was done'));
    await this.#d.audit.record({ operation: `ceremony.${c.operation}.executing`, principal: c.initiator, ceremony_id: c.id, result: 'ok', details: { approved_by: c.approved_by.join(',') } });
    const details = await op.execute(c, approvals);
    await this.#finish(c, 'CEREMONY_STATE_COMPLETED', '', details);
    this.#d.log.info({ ceremonyId: c.id, operation: c.operation, approvedBy: c.approved_by }, 'quorum ceremony completed');
  }

  /** Cancels an open ceremony (admin). */
  async cancel(id: string, principal: string): Promise<Ceremony> {
    const c = await this.#read(id);
    if (!c) throw notFound(`no ceremony ${id}`);
    if (c.state !== 'CEREMONY_STATE_OPEN') throw failedPrecondition(`ceremony ${id} is already ${stateName(c.state)}`);
    await this.#finish(c, 'CEREMONY_STATE_CANCELLED', `cancelled by ${principal}`);
    return c;
  }

  /** The stored ceremony `id`, its MAC checked (the integrity error if it fails); undefined if none. */
  async #read(id: string): Promise<Ceremony | undefined> {
    const raw = await etcdCall('read ceremony', () => this.#d.ns.get(paths.ceremony(id)).string());
    return raw === null ? undefined : this.#d.integrity.open<Ceremony>(paths.ceremony(id), raw);
  }

  /** Records progress; a stored ceremony whose bound fields were changed is never written over. */
  async #persistIfOpen(c: Ceremony): Promise<void> {
    const { ns } = this.#d;
    const res = await etcdCall('read ceremony', () => ns.get(paths.ceremony(c.id)).exec());
    const kv = res.kvs[0];
    const stored = kv ? this.#d.integrity.open<Ceremony>(paths.ceremony(c.id), kv.value) : undefined;
    if (!kv || stored!.state !== 'CEREMONY_STATE_OPEN') return;
    if (ceremonyHash(stored!) !== c.hash || stored!.hash !== c.hash)
      throw new KeyshardError('FAILED_PRECONDITION', 'the stored ceremony no longer matches what the custodians approved; nothing was done');
    const body = this.#d.integrity.stamp(paths.ceremony(c.id), c);
    await etcdCall('update ceremony', () => ns.if(paths.ceremony(c.id), 'Mod', '==', kv.mod_revision).then(ns.put(paths.ceremony(c.id)).value(body)).commit());
  }

  async #finish(c: Ceremony, state: Ceremony['state'], error: string, details: Record<string, string> = {}): Promise<void> {
    c.state = state;
    c.error = error;
    const { ns } = this.#d;
    // A replica sealed meanwhile (destroy-cluster seals before it completes) cannot MAC: the
    // final state is written without one. It drives nothing: every read that acts checks the MAC.
    const body = this.#d.integrity.available ? this.#d.integrity.stamp(paths.ceremony(c.id), c) : JSON.stringify(c);
    await etcdCall(`put ${paths.ceremony(c.id)}`, () => ns.put(paths.ceremony(c.id)).value(body).exec());
    const lock = paths.ceremonyLock(c.operation);
    await etcdCall('release ceremony lock', () => ns.if(lock, 'Value', '==', c.id).then(ns.delete().key(lock)).commit());
    const outcome = stateName(state);
    await this.#d.audit.record({
      operation: `ceremony.${c.operation}.${outcome}`,
      principal: c.initiator,
      ceremony_id: c.id,
      result: state === 'CEREMONY_STATE_COMPLETED' ? 'ok' : 'error',
      details: error ? { ...details, reason: error } : details,
    });
  }
}
