/**
 * Load shedding: at most `max` calls of a service run at once; one more is refused at once
 * with RESOURCE_EXHAUSTED instead of waiting in a queue. A queue under overload only adds
 * latency until every caller's deadline passes; a prompt refusal lets callers back off or go
 * to another replica while the calls already admitted finish in time (cf. gRPC's guidance on
 * RESOURCE_EXHAUSTED, https://grpc.io/docs/guides/status-codes/).
 */
export class ConcurrencyLimit {
  readonly max: number;
  #inFlight = 0;

  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`a concurrency limit must be a positive integer, got ${max}`);
    this.max = max;
  }

  /** Calls admitted and not yet answered. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Admits one call if there is room; every `true` must be matched by one `release()`. */
  tryAcquire(): boolean {
    if (this.#inFlight >= this.max) return false;
    this.#inFlight++;
    return true;
  }

  release(): void {
    if (this.#inFlight === 0) throw new Error('ConcurrencyLimit.release() without a matching tryAcquire()');
    this.#inFlight--;
  }
}
