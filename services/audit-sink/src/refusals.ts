/**
 * Refused Append batches (server.ts), in the sink's own words: every refusal is counted
 * (keyshard_audit_append_refusals_total{reason}) and logged (warn), and recorded in the Merkle
 * log as an `audit.append_refused` event of the sink (APPEND_REFUSED_OPERATION) naming the
 * appender (`principal`), its scope and the operation it tried (and the `source` it claimed, when
 * that was not its own) — never the refused events.
 *
 * Bounded: at most one event per `windowSeconds` for each (appender, kind) — and, for scope
 * refusals, each operation tried — so a flood of refused batches cannot flood the log with
 * refusals; the next event says how many refusals went unrecorded since the last one
 * (`suppressed`). At most MAX_TRACKED such keys are remembered (the oldest dropped first, which
 * can only make a refusal recorded sooner). Refused batches also cost the appender its quota
 * (quota.ts runs first), so one appender's scope refusals are bounded by its quota too.
 */
import { randomUUID } from 'node:crypto';
import { APPEND_REFUSED_OPERATION, type AppenderScope, type AuditEvent, type SensitiveFields } from '@keyshard/audit-log';
import type { Logger } from '@keyshard/config';
import type { Counter } from '@keyshard/metrics';
import { normalizeEvent } from './event.ts';
import type { QuotaLimit } from './quota.ts';

/** What the metric's `reason` label can be: a fixed set. */
export const REFUSAL_KINDS = ['scope', 'quota'] as const;
export type RefusalKind = (typeof REFUSAL_KINDS)[number];

export interface Refusal {
  kind: RefusalKind;
  /** The appender's certificate CN. */
  principal: string;
  scope: AppenderScope;
  /** The operation that was out of scope; for quota refusals the batch's first. */
  operation: string;
  /** The `source` an event claimed when it was not the appender's own CN. */
  claimedSource?: string;
  limit?: QuotaLimit;
  events: number;
  bytes: number;
}

export interface RefusalRecorderDeps {
  /** The sink's certificate identity: source of the refusal events. */
  identity: string;
  append: (events: AuditEvent[]) => Promise<unknown>;
  sensitive: SensitiveFields;
  logger: Logger;
  refusalsTotal: Counter<'reason'>;
  windowSeconds: number;
  now?: () => number;
}

const MAX_TRACKED = 10_000;
const OPERATION_CHARS = 128;
const clip = (s: string) => (s.length > OPERATION_CHARS ? `${s.slice(0, OPERATION_CHARS)}…` : s);

export class RefusalRecorder {
  readonly #d: RefusalRecorderDeps;
  readonly #now: () => number;
  /** Map order is age: the first entry was recorded longest ago. */
  readonly #last = new Map<string, { at: number; suppressed: number }>();

  constructor(deps: RefusalRecorderDeps) {
    this.#d = deps;
    this.#now = deps.now ?? (() => performance.now());
  }

  refused(r: Refusal): void {
    const d = this.#d;
    d.refusalsTotal.inc({ reason: r.kind });
    const operation = clip(r.operation);
    d.logger.warn({ reason: r.kind, principal: r.principal, scope: r.scope, operation, limit: r.limit, events: r.events, bytes: r.bytes }, 'append refused');
    const key = r.kind === 'scope' ? `scope\0${r.principal}\0${operation}\0${clip(r.claimedSource ?? '')}` : `quota\0${r.principal}`;
    const now = this.#now();
    const last = this.#last.get(key);
    if (last && now - last.at < d.windowSeconds * 1000) {
      last.suppressed += 1;
      return;
    }
    this.#last.delete(key);
    if (this.#last.size >= MAX_TRACKED) this.#last.delete(this.#last.keys().next().value!);
    this.#last.set(key, { at: now, suppressed: 0 });
    const details: Record<string, string> = {
      reason: r.kind === 'scope' ? 'AUDIT_SCOPE' : 'AUDIT_QUOTA',
      scope: r.scope,
      tried_operation: operation,
      events: String(r.events),
      bytes: String(r.bytes),
      suppressed: String(last?.suppressed ?? 0),
      window_seconds: String(d.windowSeconds),
    };
    if (r.limit) details.limit = r.limit;
    if (r.claimedSource !== undefined) details.claimed_source = clip(r.claimedSource);
    let event: AuditEvent;
    try {
      event = d.sensitive.apply(
        normalizeEvent(
          {
            id: randomUUID(), time: new Date().toISOString(), source: d.identity, principal: r.principal, operation: APPEND_REFUSED_OPERATION,
            key_id: '', ceremony_id: '', result: 'denied', code: r.kind === 'scope' ? 'PERMISSION_DENIED' : 'RESOURCE_EXHAUSTED', request_id: '', details,
          },
          d.identity,
        ),
      );
    } catch (e) {
      d.logger.error({ reason: (e as Error).message }, 'refusal event is invalid; not appended');
      return;
    }
    d.append([event]).catch((e: unknown) => d.logger.error({ reason: (e as Error).message }, 'refusal event could not be appended'));
  }
}
