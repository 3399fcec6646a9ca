/**
 * Whether this replica can use etcd, for its health and Status (main.ts, cluster-status.ts).
 *
 * Every `intervalMs` it makes one cheap probe (main.ts: a linearizable read of one small key,
 * which needs the etcd leader and a quorum, so a member that answers but cannot commit counts as
 * unreachable too). etcd is unreachable once no probe has succeeded for `unreachableAfterMs`,
 * and reachable again at the first probe that does. One slow probe on a loaded machine does not
 * flip health; a stopped or partitioned etcd does within a few seconds. A probe still in flight
 * is not doubled, and staleness is judged on every tick even while one hangs.
 */
import type { Logger } from '@keyshard/config';

export interface EtcdReachabilityOptions {
  intervalMs: number;
  unreachableAfterMs: number;
  log?: Logger;
  now?: () => number;
}

export class EtcdReachability {
  #probe: () => Promise<unknown>;
  #opts: EtcdReachabilityOptions;
  #now: () => number;
  #lastSuccess: number;
  #reachable = true;
  #inFlight = false;
  #timer: NodeJS.Timeout | undefined;
  #listeners: ((reachable: boolean) => void)[] = [];

  /** Starts reachable: the replica has just used etcd to start. */
  constructor(probe: () => Promise<unknown>, opts: EtcdReachabilityOptions) {
    if (!(opts.intervalMs > 0) || !(opts.unreachableAfterMs >= opts.intervalMs)) throw new RangeError('etcd reachability: need 0 < intervalMs <= unreachableAfterMs');
    this.#probe = probe;
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#lastSuccess = this.#now();
  }

  get reachable(): boolean {
    return this.#reachable;
  }

  /** Milliseconds since a probe last succeeded. */
  get silentForMs(): number {
    return this.#now() - this.#lastSuccess;
  }

  /** Called with the new state on every change. */
  onChange(listener: (reachable: boolean) => void): void {
    this.#listeners.push(listener);
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.tick(), this.#opts.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Probes and then judges; with a probe still in flight, only judges. Resolves when its probe settles. */
  async tick(): Promise<void> {
    if (this.#inFlight) return this.#judge();
    this.#inFlight = true;
    try {
      await this.#probe();
      this.#lastSuccess = this.#now();
    } catch {
      // judged by the time since the last success, not per failure
    } finally {
      this.#inFlight = false;
    }
    this.#judge();
  }

  #judge(): void {
    const silent = this.silentForMs;
    const reachable = silent <= this.#opts.unreachableAfterMs;
    if (reachable === this.#reachable) return;
    this.#reachable = reachable;
    if (reachable) this.#opts.log?.info('etcd reachable again');
    else this.#opts.log?.warn({ silentForMs: silent }, 'etcd unreachable: no read succeeded; NOT_SERVING until one does');
    for (const l of this.#listeners) l(reachable);
  }
}
