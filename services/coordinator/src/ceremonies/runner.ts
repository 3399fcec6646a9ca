/**
 * The ceremony runner: the one lifecycle every custodian ceremony goes through (brief,
 * "Ceremonies"). Two kinds plug in: share-releasing ceremonies (unseal, join, recover; each
 * accepted answer is a share: share-release.ts) and approval ceremonies (reshare, rotate-root,
 * destroy-key, destroy-cluster, export-share; each accepted answer is an HSM signature over the
 * ceremony hash: quorum-ceremonies.ts). Where a ceremony is recorded is the caller's: etcd
 * (ceremony-store.ts) or, for a restore's recover ceremony, the restoring call itself.
 *
 * The ceremony (c.state; only the driver records it; a follower, another recipient of the same
 * unseal, runs the same loop on its copy and records nothing):
 *
 *   | from | event (checked in this order each round)                       | to        | recorded / audited               |
 *   |------|----------------------------------------------------------------|-----------|----------------------------------|
 *   | OPEN | a follower's driver ended it, or its seal changed (`abandoned`) | (stops)   | nothing                          |
 *   | OPEN | the caller cancels (`cancelled` gives a reason)                  | CANCELLED | final record, `.cancelled`       |
 *   | OPEN | driver: the stored record is no longer OPEN                      | as stored | nothing (whoever ended it did)   |
 *   | OPEN | past expires_at                                                  | EXPIRED   | final record, `.expired`         |
 *   | OPEN | t answers accepted; driver: stored record re-read, not OPEN      | as stored | nothing                          |
 *   | OPEN | t accepted; stored bound fields no longer hash to c.hash          | FAILED    | final record, `.failed`          |
 *   | OPEN | t accepted; kind.complete succeeds                               | COMPLETED | final record, `.completed`       |
 *   | OPEN | accepted + still undecided custodians < t                        | FAILED    | final record, `.failed`          |
 *   | OPEN | any step throws (an audit that cannot be recorded, etcd, …)      | FAILED    | final record if possible         |
 *
 * An ended ceremony says why in words (c.error) and as a keyshard error reason (c.error_reason):
 * CANCELLED, CEREMONY_EXPIRED, INTEGRITY_FAILURE (bound fields changed), QUORUM_NOT_MET (too few
 * custodians left), or the reason of the error a step threw (INTERNAL for one that is no
 * KeyshardError); '' when completed.
 *
 * Each custodian, per ceremony: unproposed ─propose─► pending ─release─► accepted | rejected |
 * denied | refused (the last four are decided and never asked again). A driver proposes, a
 * follower only asks for releases. `refused`: the custodian answered the call with
 * FAILED_PRECONDITION or PERMISSION_DENIED (a check failed at the custodian; CustodianLink
 * turns the custodian's INVALID_ARGUMENT, its checks of the ceremony, into FAILED_PRECONDITION);
 * final when the caller says so (share-releasing ceremonies, driver), recorded in c.failures
 * with the custodian's message and reason (WRONG_CLUSTER, NOT_ENROLLED, …); otherwise retried
 * like an unreachable custodian (approval ceremonies). Any other error (UNAVAILABLE,
 * DEADLINE_EXCEEDED, a custodian's INTERNAL …) is retried; one that is not plain unreachability
 * is logged as a warning once per custodian. `rejected`: released, but the kind's check of the
 * answer failed (signature, share commitment, …), recorded in c.failures with its message and
 * reason (the KeyshardError's; INTERNAL for anything else).
 *
 * Invariants: below t accepted answers kind.complete never runs; once t are in hand further
 * releases stay unopened; every decision is audited before the next round and an audit that
 * fails stops the ceremony (fail closed); progress is recorded once per round that changed
 * something, by compare-and-swap (ceremony-store.ts); what accept returned is disposed of
 * (zeroized) when the run ends, whatever the outcome.
 */
import { isExpired, stateName, type Ceremony, type JoinVouch } from '@keyshard/crypto';
import { KeyshardError, clip, reasonOf, type Reason } from '@keyshard/errors';
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import type { ReleaseResponse } from './custodian-link.ts';
import { matches, MISMATCH, type CeremonyRecords } from './ceremony-store.ts';


/** What the runner needs of a custodian (CustodianLink). */
export interface CustodianPort {
  readonly id: string;
  propose(c: Ceremony, vouch?: JoinVouch): Promise<ReleaseResponse>;
  release(ceremonyId: string): Promise<ReleaseResponse>;
}

export interface Accepted<T> {
  custodianId: string;
  value: T;
}

/** One kind of ceremony: what an accepted answer is, and what t of them do. */
export interface CeremonyKind<T> {
  /** Audit event names (after `ceremony.<operation>.`) for an accepted and a rejected answer. */
  events: { accepted: string; rejected: string };
  /** What is counted, for the failure reason ("valid shares", "approvals"). */
  unit: string;
  /** Details added to the accepted/rejected audit events. */
  details?: Record<string, string>;
  /** Checks one custodian's released answer; throws to reject it (a KeyshardError's message and reason are recorded). */
  accept(c: Ceremony, custodianId: string, res: ReleaseResponse): Promise<T>;
  /** Runs once t answers are accepted; returns details for the completed audit event. */
  complete(c: Ceremony, accepted: Accepted<T>[]): Promise<Record<string, string>>;
  /**
   * Whether answers that arrive with a quorum already in hand are still checked and counted
   * (approvals: the operation passes every valid one on, so one a custodian later refuses leaves
   * slack). Shares are not: a release beyond t stays unopened.
   */
  acceptsBeyondQuorum?: boolean;
  /** Disposes of accepted values (zeroizes shares). */
  dispose(values: T[]): void;
}

export interface RunContext {
  role: 'driver' | 'follower';
  links: readonly CustodianPort[];
  records: CeremonyRecords;
  audit: AuditRecorder;
  log: Logger;
  pollMs: number;
  /** Whether a custodian's refusal (FAILED_PRECONDITION / PERMISSION_DENIED) decides it. */
  refusalsFinal: boolean;
  /** Handed to custodians with the proposal (a join's vouch). */
  vouch?: JoinVouch;
  /** A follower stops, recording nothing, once this is true. */
  abandoned?: () => boolean;
  /** A reason to cancel the ceremony (recorded), or undefined. */
  cancelled?: () => string | undefined;
}

export interface RunOutcome {
  state: Ceremony['state'];
  /** What stopped the run when a step threw (the ceremony was then failed). */
  error?: unknown;
}

type Progress = 'unproposed' | 'pending' | 'accepted' | 'rejected' | 'denied' | 'refused';
const undecided = (p: Progress | undefined) => p === 'unproposed' || p === 'pending';
const OPEN = 'CEREMONY_STATE_OPEN';

/** The reason an ended ceremony gives when its caller names none. */
const END_REASON: Record<Ceremony['state'], Reason | ''> = {
  CEREMONY_STATE_OPEN: '',
  CEREMONY_STATE_COMPLETED: '',
  CEREMONY_STATE_EXPIRED: 'CEREMONY_EXPIRED',
  CEREMONY_STATE_CANCELLED: 'CANCELLED',
  CEREMONY_STATE_FAILED: 'FAILED_PRECONDITION',
};

/**
 * Ends `c` as `state`: recorded, its lock released, audited (a follower only notes it). `error`
 * says why in words, `reason` as a keyshard error reason (default: the state's, END_REASON).
 */
export async function finishCeremony(
  c: Ceremony, state: Ceremony['state'], error: string, o: Pick<RunContext, 'records' | 'audit' | 'role'>, details: Record<string, string> = {},
  reason: Reason | '' = END_REASON[state],
): Promise<void> {
  c.state = state;
  c.error = error;
  c.error_reason = state === 'CEREMONY_STATE_COMPLETED' ? '' : reason;
  if (o.role === 'follower') return;
  await o.records.final(c);
  await o.audit.record({
    operation: `ceremony.${c.operation}.${stateName(state)}`, principal: c.initiator, ceremony_id: c.id,
    result: state === 'CEREMONY_STATE_COMPLETED' ? 'ok' : 'error',
    details: error ? { ...details, reason: error, ...(c.error_reason ? { error_reason: c.error_reason } : {}) } : details,
  });
}

/**
 * Who refused or was rejected, and who denied, as error metadata (a refused restore's): `failures`
 * `custodian-4=WRONG_CLUSTER,custodian-5=NOT_ENROLLED`, `denied_by` `custodian-2,custodian-3`;
 * each only when there is one. The SDK's waitForCeremony gives the same.
 */
export function ceremonyFailures(c: Pick<Ceremony, 'failures' | 'denied_by'>): Record<string, string> {
  const out: Record<string, string> = {};
  if (c.failures.length) out.failures = clip(c.failures.map((f) => (f.error_reason ? `${f.custodian_id}=${f.error_reason}` : f.custodian_id)).join(','), 1024);
  if (c.denied_by.length) out.denied_by = clip(c.denied_by.join(','), 1024);
  return out;
}

/** Runs ceremony `c` to its end (see the table above). */
export async function runCeremony<T>(c: Ceremony, kind: CeremonyKind<T>, o: RunContext): Promise<RunOutcome> {
  const progress = new Map<string, Progress>(o.links.map((l) => [l.id, o.role === 'driver' ? 'unproposed' : 'pending']));
  const accepted: Accepted<T>[] = [];
  const finish = (state: Ceremony['state'], error: string, reason?: Reason, details?: Record<string, string>) => finishCeremony(c, state, error, o, details, reason);
  const warned = new Set<string>();
  try {
    while (c.state === OPEN) {
      if (o.abandoned?.()) break;
      const cancel = o.cancelled?.();
      if (cancel) return { state: (await finish('CEREMONY_STATE_CANCELLED', cancel), c.state) };
      if (o.role === 'driver' && !(await stillOpen(c, o.records))) break;
      if (isExpired(c)) return { state: (await finish('CEREMONY_STATE_EXPIRED', `expired before a quorum of custodians answered`), c.state) };
      const changed = await round(c, kind, o, progress, accepted, warned);
      if (c.state !== OPEN) break; // ended meanwhile (a seal cancels its unseal)
      if (changed && o.role === 'driver') await o.records.progress(c);
      if (accepted.length >= c.threshold) {
        // Cancelled, sealed or abandoned while this round's answers were checked and recorded: nothing is done.
        if (o.abandoned?.() || o.cancelled?.() || (c.state as Ceremony['state']) !== OPEN) continue; // the checks above end it
        if (o.role === 'driver') {
          const stored = await o.records.current(c);
          if (stored?.state !== OPEN) return { state: adopt(c, stored) };
          if (!matches(stored, c)) return { state: (await finish('CEREMONY_STATE_FAILED', MISMATCH, 'INTEGRITY_FAILURE'), c.state) };
        }
        const details = await kind.complete(c, accepted);
        await finish('CEREMONY_STATE_COMPLETED', '', undefined, details);
        break;
      }
      const open = [...progress.values()].filter(undecided).length;
      if (accepted.length + open < c.threshold) {
        await finish('CEREMONY_STATE_FAILED', `only ${accepted.length + open} ${kind.unit} can still be collected, ${c.threshold} needed`, 'QUORUM_NOT_MET');
        break;
      }
      await new Promise((r) => setTimeout(r, o.pollMs));
    }
    return { state: c.state };
  } catch (e) {
    o.log.error({ ceremonyId: c.id, role: o.role, err: (e as Error).message }, `${c.operation} ceremony failed`);
    if (c.state === OPEN) await finish('CEREMONY_STATE_FAILED', e instanceof KeyshardError ? e.message : 'internal error', reasonOf(e)).catch(() => {});
    return { state: c.state, error: e };
  } finally {
    kind.dispose(accepted.map((a) => a.value));
  }
}

/** Driver: whether the recorded ceremony is still open (if not, `c` takes its recorded end). */
async function stillOpen(c: Ceremony, records: CeremonyRecords): Promise<boolean> {
  const stored = await records.current(c);
  if (stored?.state === OPEN) return true;
  adopt(c, stored);
  return false;
}

function adopt(c: Ceremony, stored: Ceremony | undefined): Ceremony['state'] {
  c.state = stored?.state ?? 'CEREMONY_STATE_CANCELLED';
  c.error = stored ? stored.error : 'the ceremony record is gone';
  c.error_reason = stored ? (stored.error_reason ?? '') : 'CANCELLED';
  return c.state;
}

/** Errors that only say a custodian cannot be reached now (logged at debug level while retried). */
const UNREACHABLE: ReadonlySet<string> = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED']);

/**
 * One round: asks every undecided custodian at once, then decides the answers in custodian order.
 * Returns whether anything was decided. `warned`: custodians whose retried error was logged as a warning.
 */
async function round<T>(
  c: Ceremony, kind: CeremonyKind<T>, o: RunContext, progress: Map<string, Progress>, accepted: Accepted<T>[], warned: Set<string>,
): Promise<boolean> {
  const asked = o.links.filter((l) => undecided(progress.get(l.id)));
  const answers = await Promise.allSettled(asked.map((l) => (progress.get(l.id) === 'unproposed' ? l.propose(c, o.vouch) : l.release(c.id))));
  let changed = false;
  for (const [i, answer] of answers.entries()) {
    const id = asked[i]!.id;
    if (answer.status === 'rejected') {
      const e = answer.reason as unknown;
      const refusal = e instanceof KeyshardError && (e.code === 'FAILED_PRECONDITION' || e.code === 'PERMISSION_DENIED');
      if (!(refusal && o.refusalsFinal && o.role === 'driver')) {
        // Unreachable (or, for a follower, not asked yet by the driver): asked again next round.
        const fields = { ceremonyId: c.id, custodian: id, err: (e as Error).message, code: (e as { code?: unknown }).code, reason: (e as { reason?: unknown }).reason };
        // A custodian that answers with an error (INTERNAL, NOT_FOUND, or a refusal of an approval ceremony) is worth one warning.
        const quiet = (e instanceof KeyshardError && UNREACHABLE.has(e.code) && !e.metadata.custodian_status) || warned.has(id) || o.role !== 'driver';
        if (quiet) o.log.debug(fields, 'custodian not answering');
        else o.log.warn(fields, 'custodian answered with an error; asking again');
        if (!quiet) warned.add(id);
        continue;
      }
      progress.set(id, 'refused');
      c.failures.push({ custodian_id: id, reason: e.message, error_reason: e.reason });
      o.log.warn({ ceremonyId: c.id, custodian: id, reason: e.message, errorReason: e.reason }, 'custodian refused the ceremony');
      await o.audit.record({
        operation: `ceremony.${c.operation}.refused`, principal: id, ceremony_id: c.id, result: 'denied', code: e.code,
        details: { custodian: id, reason: e.message, error_reason: e.reason },
      });
      changed = true;
      continue;
    }
    const res = answer.value;
    if (res.status === 'pending') {
      progress.set(id, 'pending');
      continue;
    }
    if (accepted.length >= c.threshold && !kind.acceptsBeyondQuorum) continue; // a quorum is in hand: further releases stay unopened
    changed = true;
    if (res.status === 'denied') {
      progress.set(id, 'denied');
      c.denied_by.push(id);
      if (o.role === 'driver')
        await o.audit.record({ operation: `ceremony.${c.operation}.denied`, principal: id, ceremony_id: c.id, result: 'denied', details: { custodian: id, reason: res.reason } });
      continue;
    }
    await decide(c, kind, o, id, res, progress, accepted);
  }
  return changed;
}

/** A released answer: accepted (counted once) or rejected with its reason; audited either way. */
async function decide<T>(c: Ceremony, kind: CeremonyKind<T>, o: RunContext, id: string, res: ReleaseResponse, progress: Map<string, Progress>, accepted: Accepted<T>[]): Promise<void> {
  let value: T;
  try {
    value = await kind.accept(c, id, res);
  } catch (e) {
    const reason = e instanceof KeyshardError ? e.message : 'the answer could not be processed';
    const errorReason = reasonOf(e);
    progress.set(id, 'rejected');
    c.failures.push({ custodian_id: id, reason, error_reason: errorReason });
    o.log.warn({ ceremonyId: c.id, custodian: id, reason, errorReason }, 'custodian answer rejected');
    await o.audit.record({
      operation: `ceremony.${c.operation}.${kind.events.rejected}`, principal: id, ceremony_id: c.id, result: 'error', code: 'FAILED_PRECONDITION',
      details: { custodian: id, reason, error_reason: errorReason, ...kind.details },
    });
    return;
  }
  accepted.push({ custodianId: id, value });
  progress.set(id, 'accepted');
  c.approved_by.push(id);
  await o.audit.record({ operation: `ceremony.${c.operation}.${kind.events.accepted}`, principal: id, ceremony_id: c.id, result: 'ok', details: { custodian: id, ...kind.details } });
}
