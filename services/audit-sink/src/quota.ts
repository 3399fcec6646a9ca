/**
 * Per-appender rate and size quotas of Append batches (config `quotas`, defaults per scope in
 * config.ts). Each appender identity has two token buckets, events and bytes: a bucket holds at
 * most `burst` tokens and refills at `perSecond`; a batch is admitted only if both buckets hold
 * its whole cost, and then takes it from both (all or nothing, so a refused batch costs nothing
 * and a partly admitted batch does not exist). A batch over `maxBatchEvents` / `maxBatchBytes` is
 * refused whatever the buckets hold; any smaller one fits a full bucket (the config ensures it),
 * so a producer that waits always gets its batch in.
 * Buckets exist only for configured appenders (authorization runs first): memory is bounded by
 * the config. Time is monotonic (performance.now), so a wall-clock step neither refills nor
 * starves a bucket.
 */
import type { AppenderScope } from '@keyshard/audit-log';
import type { Quotas } from './config.ts';

export class TokenBucket {
  readonly #perMs: number;
  readonly #capacity: number;
  #tokens: number;
  #at: number;

  constructor(perSecond: number, capacity: number, now: number) {
    this.#perMs = perSecond / 1000;
    this.#capacity = capacity;
    this.#tokens = capacity;
    this.#at = now;
  }

  get capacity(): number {
    return this.#capacity;
  }

  /** Tokens held at `now` (refilled since the last look, at most the capacity). */
  level(now: number): number {
    if (now > this.#at) {
      this.#tokens = Math.min(this.#capacity, this.#tokens + (now - this.#at) * this.#perMs);
      this.#at = now;
    }
    return this.#tokens;
  }

  /** Takes `n` tokens (the caller checked `level`). */
  take(n: number): void {
    this.#tokens -= n;
  }
}

/** What a refusal hit: an Append bucket or batch bound, or cosigned.ts's one cosignature write per caller per interval. */
export type QuotaLimit = 'events' | 'bytes' | 'batch' | 'cosignatures';

export interface QuotaRefusal {
  limit: QuotaLimit;
  /** One line for the refused appender: which limit, and what it is. */
  message: string;
}

export class AppenderQuotas {
  readonly #q: Quotas;
  readonly #now: () => number;
  readonly #buckets = new Map<string, { events: TokenBucket; bytes: TokenBucket }>();

  constructor(quotas: Quotas, now: () => number = () => performance.now()) {
    this.#q = quotas;
    this.#now = now;
  }

  /** Admits a batch of `events` events and `bytes` bytes from `principal` (taking its cost), or says why not. */
  admit(principal: string, scope: AppenderScope, events: number, bytes: number): QuotaRefusal | undefined {
    const { maxBatchEvents, maxBatchBytes } = this.#q;
    const q = this.#q[scope];
    // A batch within these always fits a full bucket (config.ts checks burst >= max batch).
    if (events > maxBatchEvents) return { limit: 'batch', message: `a batch of ${events} events is over the sink's limit of ${maxBatchEvents}` };
    if (bytes > maxBatchBytes) return { limit: 'batch', message: `a batch of ${bytes} bytes is over the sink's limit of ${maxBatchBytes}` };
    const now = this.#now();
    let b = this.#buckets.get(principal);
    if (!b) {
      b = { events: new TokenBucket(q.eventsPerSecond, q.burstEvents, now), bytes: new TokenBucket(q.bytesPerSecond, q.burstBytes, now) };
      this.#buckets.set(principal, b);
    }
    if (b.events.level(now) < events) return { limit: 'events', message: `over the audit quota of ${q.eventsPerSecond} events/s (burst ${q.burstEvents}) for a ${scope}` };
    if (b.bytes.level(now) < bytes) return { limit: 'bytes', message: `over the audit quota of ${q.bytesPerSecond} bytes/s (burst ${q.burstBytes}) for a ${scope}` };
    b.events.take(events);
    b.bytes.take(bytes);
    return undefined;
  }
}
