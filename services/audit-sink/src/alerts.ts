/**
 * Alerts over the audit stream (issue 5 item 8). The AlertEngine sees every record once it is
 * durable in the log and raises an Alert when a rule fires (rules and defaults: config.ts):
 *   denials       `threshold` PERMISSION_DENIED/UNAUTHENTICATED outcomes by one principal within
 *                 the window; that principal then raises nothing for a window: one alert per
 *                 principal per window, however long the attempts go on;
 *   destroy       any successful event with a destroy operation (a destroy ceremony opened or
 *                 completed, a key scheduled for destruction): one alert each;
 *   refusals      any refused event of a quorum safeguard (a custodian refusing a ceremony, e.g.
 *                 a join no unsealed replica vouched for; a replica refusing to vouch): one each;
 *   integrity     any event of a record refused by its integrity check (a coordinator found a
 *                 record in etcd altered outside keyshard; it reports each stored value once): one each;
 *   decryptSpike  the decrypt rate over the short window above `factor` times the rate over the
 *                 baseline window before it, and at least `minRatePerSecond`: one alert when a
 *                 spike starts, re-armed once the rate is back down, never two within a short
 *                 window; silent until a whole baseline has been seen since start-up (a
 *                 restart is not a spike).
 * Invariants: memory is bounded whatever the traffic: counts live in fixed buckets
 * (SlidingCount) and at most `maxPrincipals` principals are tracked (the least recently denied
 * is dropped first, losing only its count). Alert events are never themselves counted. Events
 * whose own time is older than `backlogSeconds` (a producer's spool draining after an outage)
 * count toward no rate: late delivery is neither a burst of denials nor a spike.
 * The engine knows no logger, metric or log: `alertReporter` turns an Alert into all three.
 */
import { randomUUID } from 'node:crypto';
import { ALERT_OPERATION, type AuditEvent } from '@keyshard/audit-log';
import type { Logger } from '@keyshard/config';
import type { Counter } from '@keyshard/metrics';
import type { CommittedRecord } from './audit-log.ts';
import type { AlertRules } from './config.ts';
import { normalizeEvent } from './event.ts';

export const ALERT_RULES = ['denials', 'destroy', 'refusals', 'integrity', 'decryptSpike'] as const;
export type AlertRuleName = (typeof ALERT_RULES)[number];

export interface Alert {
  rule: AlertRuleName;
  /** One line for people. Built only from values already in the log: no secret can be in it. */
  summary: string;
  /** The principal the alert is about ('' when none). */
  subject: string;
  keyId: string;
  ceremonyId: string;
  /** Log index of the record that made the rule fire. */
  triggerIndex: number;
  /** Counts and thresholds, as strings (they become audit details). */
  facts: Record<string, string>;
}

const DENIED_CODES = new Set(['PERMISSION_DENIED', 'UNAUTHENTICATED']);
const DENIAL_BUCKETS = 12;
const RECENT_BUCKETS = 10;
const BASELINE_BUCKETS = 60;
/** A batch event counts as its `items` decrypts, up to this many (a bound on one event's weight). */
const MAX_BATCH_ITEMS = 100_000;
const SUMMARY_SUBJECT_CHARS = 128;

/**
 * A count over a sliding window kept in `buckets` fixed buckets: O(buckets) memory and time.
 * The window's far edge is as coarse as one bucket (it covers between window − bucket and window).
 */
export class SlidingCount {
  readonly #bucketMs: number;
  readonly #counts: Float64Array;
  readonly #bucketOf: Float64Array; // which bucket number each slot currently holds

  constructor(windowMs: number, buckets: number) {
    this.#bucketMs = windowMs / buckets;
    this.#counts = new Float64Array(buckets);
    this.#bucketOf = new Float64Array(buckets).fill(-Infinity);
  }

  add(now: number, n = 1): void {
    const b = Math.floor(now / this.#bucketMs);
    const slot = b % this.#counts.length;
    if (this.#bucketOf[slot] !== b) {
      this.#bucketOf[slot] = b;
      this.#counts[slot] = 0;
    }
    this.#counts[slot]! += n;
  }

  total(now: number): number {
    const b = Math.floor(now / this.#bucketMs);
    const oldest = b - this.#counts.length;
    let sum = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      const at = this.#bucketOf[i]!;
      if (at > oldest && at <= b) sum += this.#counts[i]!;
    }
    return sum;
  }
}

interface PrincipalDenials {
  count: SlidingCount;
  quietUntil: number;
}

type EventView = Partial<AuditEvent>;

export class AlertEngine {
  readonly #rules: AlertRules;
  readonly #raise: (a: Alert) => void;
  readonly #now: () => number;
  readonly #destroyOps: ReadonlySet<string>;
  readonly #refusalOps: ReadonlySet<string>;
  readonly #integrityOps: ReadonlySet<string>;
  readonly #decryptOps: ReadonlySet<string>;
  /** Map order is recency: the first entry is the least recently denied principal. */
  readonly #denials = new Map<string, PrincipalDenials>();
  readonly #recent: SlidingCount;
  readonly #baseline: SlidingCount;
  readonly #startedAt: number;
  #spiking = false;
  #lastSpikeAlert = -Infinity;

  constructor(rules: AlertRules, raise: (a: Alert) => void, now: () => number = Date.now) {
    this.#rules = rules;
    this.#raise = raise;
    this.#now = now;
    this.#destroyOps = new Set(rules.destroy.operations);
    this.#refusalOps = new Set(rules.refusals.operations);
    this.#integrityOps = new Set(rules.integrity.operations);
    this.#decryptOps = new Set(rules.decryptSpike.operations);
    this.#recent = new SlidingCount(rules.decryptSpike.windowSeconds * 1000, RECENT_BUCKETS);
    this.#baseline = new SlidingCount(rules.decryptSpike.baselineSeconds * 1000, BASELINE_BUCKETS);
    this.#startedAt = now();
  }

  /** Principals the denials rule currently tracks (bounded by maxPrincipals). */
  get trackedPrincipals(): number {
    return this.#denials.size;
  }

  /** Feeds records just made durable, in index order (AuditLogOptions.onCommitted). */
  observe(records: readonly CommittedRecord[]): void {
    for (const r of records) this.#observe(r.index, r.event as EventView);
  }

  #observe(index: number, ev: EventView): void {
    const op = ev.operation ?? '';
    if (op === ALERT_OPERATION) return;
    const { destroy, refusals, integrity, denials, decryptSpike, backlogSeconds } = this.#rules;
    if (destroy.enabled && ev.result === 'ok' && this.#destroyOps.has(op)) this.#destroyEvent(index, ev);
    if (refusals.enabled && ev.result !== 'ok' && this.#refusalOps.has(op)) this.#oneEach('refusals', `${op} refused`, index, ev);
    if (integrity.enabled && this.#integrityOps.has(op)) this.#integrityEvent(index, ev);
    // Every append passes here: most events match no rate rule and cost two set lookups.
    const denied = denials.enabled && DENIED_CODES.has(ev.code ?? '');
    const decrypt = decryptSpike.enabled && this.#decryptOps.has(op);
    if (!denied && !decrypt) return;
    const now = this.#now();
    if (now - Date.parse(ev.time ?? '') > backlogSeconds * 1000) return; // late delivery: counts toward no rate
    if (denied) this.#denied(index, ev, now);
    if (decrypt) this.#decrypted(index, ev, now);
  }

  #destroyEvent(index: number, ev: EventView): void {
    this.#oneEach('destroy', ev.operation!, index, ev);
  }

  /** One alert for one event: `what` by its principal, naming the key or ceremony. */
  #oneEach(rule: 'destroy' | 'refusals', what: string, index: number, ev: EventView): void {
    const op = ev.operation!;
    const who = ev.principal ?? '';
    const keyId = ev.key_id || ev.details?.key_id || '';
    const target = keyId ? ` (key ${clip(keyId)})` : ev.ceremony_id ? ` (ceremony ${clip(ev.ceremony_id)})` : '';
    this.#raise({
      rule,
      summary: `${what} by ${clip(who) || '(no identity)'}${target}`,
      subject: who,
      keyId,
      ceremonyId: ev.ceremony_id ?? '',
      triggerIndex: index,
      facts: rule === 'refusals' ? { trigger_operation: op, code: ev.code ?? '' } : { trigger_operation: op },
    });
  }

  #integrityEvent(index: number, ev: EventView): void {
    const record = ev.details?.record ?? '';
    const source = ev.source ?? '';
    this.#raise({
      rule: 'integrity',
      summary: `${clip(source) || '(no source)'} refused record ${clip(record) || '(unnamed)'}: it failed its integrity check (altered outside keyshard?)`,
      subject: source,
      keyId: ev.key_id ?? '',
      ceremonyId: ev.ceremony_id ?? '',
      triggerIndex: index,
      facts: { trigger_operation: ev.operation!, record: clip(record), reason: clip(ev.details?.reason ?? '') },
    });
  }

  #denied(index: number, ev: EventView, now: number): void {
    const { threshold, windowSeconds } = this.#rules.denials;
    const who = ev.principal ?? '';
    let state = this.#denials.get(who);
    if (state) this.#denials.delete(who); // re-inserted below as the most recent
    else {
      if (this.#denials.size >= this.#rules.maxPrincipals) this.#denials.delete(this.#denials.keys().next().value!);
      state = { count: new SlidingCount(windowSeconds * 1000, DENIAL_BUCKETS), quietUntil: -Infinity };
    }
    this.#denials.set(who, state);
    state.count.add(now);
    const n = state.count.total(now);
    if (n < threshold || now < state.quietUntil) return;
    // Quiet for one window: the denials that made this alert have left the window by then.
    state.quietUntil = now + windowSeconds * 1000;
    this.#raise({
      rule: 'denials',
      summary: `${n} denied calls by ${clip(who) || '(no identity)'} within ${windowSeconds} s`,
      subject: who,
      keyId: '',
      ceremonyId: '',
      triggerIndex: index,
      facts: {
        count: String(n),
        threshold: String(threshold),
        window_seconds: String(windowSeconds),
        last_operation: ev.operation ?? '',
        last_code: ev.code ?? '',
      },
    });
  }

  #decrypted(index: number, ev: EventView, now: number): void {
    const r = this.#rules.decryptSpike;
    const n = weightOf(ev);
    this.#recent.add(now, n);
    this.#baseline.add(now, n);
    if (now - this.#startedAt < r.baselineSeconds * 1000) return; // no baseline yet
    const recent = this.#recent.total(now);
    const rate = recent / r.windowSeconds;
    const before = Math.max(0, this.#baseline.total(now) - recent);
    const baseRate = before / (r.baselineSeconds - r.windowSeconds);
    const spike = rate >= r.minRatePerSecond && rate > r.factor * baseRate;
    const wasSpiking = this.#spiking;
    this.#spiking = spike;
    // A rate hovering at the threshold re-arms and fires again: at most one alert per window.
    if (!spike || wasSpiking || now - this.#lastSpikeAlert < r.windowSeconds * 1000) return;
    this.#lastSpikeAlert = now;
    this.#raise({
      rule: 'decryptSpike',
      summary: `decrypts at ${rate.toFixed(1)}/s over ${r.windowSeconds} s, ${baseRate.toFixed(1)}/s over the ${r.baselineSeconds - r.windowSeconds} s before (factor ${r.factor} allowed)`,
      subject: '',
      keyId: '',
      ceremonyId: '',
      triggerIndex: index,
      facts: {
        count: String(recent),
        rate_per_second: rate.toFixed(2),
        baseline_per_second: baseRate.toFixed(2),
        factor: String(r.factor),
        window_seconds: String(r.windowSeconds),
        baseline_seconds: String(r.baselineSeconds),
      },
    });
  }
}

/** A batch event (`items` detail, set by the coordinator on *Batch calls) counts as its items. */
function weightOf(ev: EventView): number {
  const items = ev.details?.items;
  if (items === undefined || !/^\d{1,9}$/.test(items)) return 1;
  return Math.min(Math.max(Number(items), 1), MAX_BATCH_ITEMS);
}

function clip(s: string): string {
  return s.length > SUMMARY_SUBJECT_CHARS ? `${s.slice(0, SUMMARY_SUBJECT_CHARS)}…` : s;
}

/**
 * The alert as an audit event of the sink itself. Subject, key and ceremony ids are copied from
 * stored events, i.e. already in their stored form (HMACs where configured sensitive), so the
 * event does not go through SensitiveFields again; normalizeEvent gives it the stored shape.
 */
export function alertEvent(a: Alert, identity: string, time: string): AuditEvent {
  const details = { rule: a.rule, summary: a.summary, subject: a.subject, trigger_index: String(a.triggerIndex), ...a.facts };
  return normalizeEvent(
    { id: randomUUID(), time, source: identity, principal: identity, operation: ALERT_OPERATION, key_id: a.keyId, ceremony_id: a.ceremonyId, result: 'ok', details },
    identity,
  );
}

export interface AlertReporterDeps {
  /** The sink's certificate identity: principal and source of alert events. */
  identity: string;
  /** The log's append (the path every event takes, so alerts are in the Merkle log too). */
  append: (events: AuditEvent[]) => Promise<unknown>;
  logger: Logger;
  alertsTotal: Counter<'rule'>;
  now?: () => number;
}

/** An Alert becomes a metric, a warn log line and an `audit.alert` event appended to the log. */
export function alertReporter(d: AlertReporterDeps): (a: Alert) => void {
  const now = d.now ?? Date.now;
  return (a) => {
    d.alertsTotal.inc({ rule: a.rule });
    d.logger.warn({ rule: a.rule, summary: a.summary, subject: a.subject, key_id: a.keyId, ceremony_id: a.ceremonyId, trigger_index: a.triggerIndex, ...a.facts }, 'audit alert');
    let event: AuditEvent;
    try {
      event = alertEvent(a, d.identity, new Date(now()).toISOString());
    } catch (e) {
      d.logger.error({ rule: a.rule, reason: (e as Error).message }, 'alert event is invalid; not appended');
      return;
    }
    d.append([event]).catch((e: unknown) => d.logger.error({ rule: a.rule, reason: (e as Error).message }, 'alert event could not be appended'));
  };
}
