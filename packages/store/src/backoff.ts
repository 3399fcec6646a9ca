/**
 * How long to wait before trying etcd again after a failure (a lease to grant again, an
 * election to enter again): exponential backoff with jitter, capped, and reset by a success.
 *
 * Why it must wait: while the etcd3 client's circuit breaker is open, every call fails at once
 * without touching the network, so a loop that retries on failure spins the CPU and floods the
 * log (the fault suite saw 32,000 lines in 4.4 s). The delay is "equal jitter": uniformly
 * random between half the cap and the cap, where the cap doubles per failure in a row from
 * `initialMs` up to `maxMs`. Jitter keeps replicas that failed together from retrying together;
 * the lower half-cap bound keeps any retry from coming sooner than that.
 *
 * Logging: a failure streak is reported when it starts and then at most once per
 * `reportEveryMs`, and its end once, so an outage costs a few log lines, not one per attempt.
 */
import { setTimeout as delay } from 'node:timers/promises';

export interface BackoffOptions {
  /** Cap of the delay after the first failure (default 100 ms); it doubles per failure in a row. */
  initialMs?: number;
  /** Largest cap (default 5 s). */
  maxMs?: number;
  /** A streak is reported when it starts, then at most this often (default 30 s). */
  reportEveryMs?: number;
  random?: () => number;
  now?: () => number;
}

/** One failure, as the backoff sees it. */
export interface Failure {
  /** Failures in a row, this one included. */
  failures: number;
  /** How long to wait before the next attempt. */
  delayMs: number;
  /** Whether to log it: the first failure of a streak, or the first one `reportEveryMs` after the last reported. */
  report: boolean;
}

export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly reportEveryMs: number;
  #random: () => number;
  #now: () => number;
  #failures = 0;
  #reportedAt = -Infinity;

  constructor(opts: BackoffOptions = {}) {
    this.initialMs = opts.initialMs ?? 100;
    this.maxMs = opts.maxMs ?? 5_000;
    this.reportEveryMs = opts.reportEveryMs ?? 30_000;
    this.#random = opts.random ?? Math.random;
    this.#now = opts.now ?? Date.now;
    if (!(this.initialMs > 0) || !(this.maxMs >= this.initialMs)) throw new RangeError('backoff: need 0 < initialMs <= maxMs');
    if (!(this.reportEveryMs >= 0)) throw new RangeError('backoff: reportEveryMs must be >= 0');
  }

  /** Failures in a row so far (0 after a success). */
  get failures(): number {
    return this.#failures;
  }

  /** Records a failure; says how long to wait before the next attempt and whether to log it. */
  failed(): Failure {
    this.#failures += 1;
    const cap = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.#failures - 1, 30));
    const delayMs = cap / 2 + (this.#random() * cap) / 2;
    const now = this.#now();
    const report = this.#failures === 1 || now - this.#reportedAt >= this.reportEveryMs;
    if (report) this.#reportedAt = now;
    return { failures: this.#failures, delayMs, report };
  }

  /** Records a success: the next failure starts a new streak. Returns the length of the streak it ended (0: none). */
  succeeded(): number {
    const ended = this.#failures;
    this.#failures = 0;
    this.#reportedAt = -Infinity;
    return ended;
  }
}

export interface RetryOptions {
  /** The backoff to follow (shared by successive loops of one owner, so a streak spans them), or options for a new one. */
  backoff?: Backoff | BackoffOptions;
  /** Aborting it ends the loop: during a wait at once, during an attempt once the attempt settles. */
  signal?: AbortSignal;
  /** Waits `ms` or until `signal` aborts, whichever is first (tests inject a fake). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Called with the failures the backoff says to report (see Backoff.failed). */
  onFailure?: (err: unknown, failure: Failure) => void;
  /** Called once when an attempt succeeds after `failures` failed ones. */
  onRecovered?: (failures: number) => void;
}

/** Resolves after `ms`, or as soon as `signal` aborts; never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return delay(ms, undefined, { signal }).catch(() => {});
}

/**
 * Runs `attempt` until it succeeds, waiting the backoff's delay after each failure. Resolves
 * with its result, or with undefined if `signal` aborted first (a stop is not an error).
 */
export async function retryWithBackoff<T>(attempt: () => Promise<T>, opts: RetryOptions = {}): Promise<T | undefined> {
  const backoff = opts.backoff instanceof Backoff ? opts.backoff : new Backoff(opts.backoff);
  const wait = opts.sleep ?? sleep;
  while (!opts.signal?.aborted) {
    let result: T;
    try {
      result = await attempt();
    } catch (e) {
      if (opts.signal?.aborted) return undefined;
      const failure = backoff.failed();
      if (failure.report) opts.onFailure?.(e, failure);
      await wait(failure.delayMs, opts.signal);
      continue;
    }
    const ended = backoff.succeeded();
    if (ended > 0) opts.onRecovered?.(ended);
    return result;
  }
  return undefined;
}
