/**
 * The coordinator replicas one client talks to, and how one call finds its way through them.
 *
 * Selection: round robin over the replicas that are healthy and, for key operations, not known
 * to be sealed; when there is none, a sealed one (it answers at once, and says why), else the
 * one whose skip ends first. Within a replica, round robin over its channels.
 * Health: a replica that fails with UNAVAILABLE, or whose connection cannot be established, is
 * skipped for a jittered period that doubles per failure in a row (call-policy.ts); its next
 * success clears it. A replica that answers "sealed" to a key operation is skipped for key
 * operations until the same period ends or it answers one.
 * Sending: an attempt hands its request to grpc-js only on a READY connection; until then it
 * waits (at most connectTimeoutMs, and never past the deadline). So "never became READY" proves
 * the request was not sent, and any call may then move to another replica (call-policy.ts says
 * what may be retried after it was sent). Every attempt carries the caller's one deadline and
 * the same request id.
 */
import * as grpc from '@grpc/grpc-js';
import { lastServerRefusal, requestMetadata } from '@keyshard/rpc';
import { methodSafety, outcomeOf, retryDelayMs, sealedForMs, statusError, unhealthyForMs, type RetryPolicy } from './call-policy.ts';

const { READY, TRANSIENT_FAILURE, SHUTDOWN } = grpc.connectivityState;

export type UnaryCallback = (err: grpc.ServiceError | null, res?: unknown) => void;

/** One channel (one HTTP/2 connection) as the pool uses it; tests give the pool fakes. */
export interface Transport {
  /** The connectivity state now; with `connect`, an idle channel also starts connecting. */
  state(connect: boolean): grpc.connectivityState;
  /** Calls back once the state is no longer `current`, or with an error at `deadline`. */
  watch(current: grpc.connectivityState, deadline: number, cb: (err?: Error) => void): void;
  unary(method: string, request: unknown, metadata: grpc.Metadata, deadline: number, cb: UnaryCallback): void;
  close(): void;
  /** Why connecting failed, when known (a server that failed its identity check). */
  failure?(): string | undefined;
}

export function grpcTransport(client: grpc.Client): Transport {
  const channel = client.getChannel();
  const methods = client as unknown as Record<string, Function | undefined>;
  return {
    state: (connect) => channel.getConnectivityState(connect),
    watch: (current, deadline, cb) => channel.watchConnectivityState(current, deadline, cb),
    unary(method, request, metadata, deadline, cb) {
      const fn = methods[method];
      if (typeof fn !== 'function') throw new Error(`no such method ${method}`);
      fn.call(client, request, metadata, { deadline }, cb);
    },
    close: () => client.close(),
    failure: () => lastServerRefusal(client),
  };
}

export class Replica {
  readonly address: string;
  readonly channels: readonly Transport[];
  failures = 0;
  unhealthyUntil = 0;
  sealedUntil = 0;
  #next = 0;

  constructor(address: string, channels: readonly Transport[]) {
    if (channels.length === 0) throw new Error(`replica ${address} has no channels`);
    this.address = address;
    this.channels = channels;
  }

  channel(): Transport {
    const c = this.channels[this.#next];
    this.#next = (this.#next + 1) % this.channels.length;
    return c!;
  }
}

export class ReplicaPool {
  readonly replicas: readonly Replica[];
  readonly policy: RetryPolicy;
  /** Key operations: replicas that answered "sealed" are avoided, and such calls retried. */
  readonly keyOperations: boolean;
  closed = false;
  #next = 0;

  constructor(replicas: readonly Replica[], policy: RetryPolicy, keyOperations: boolean) {
    if (replicas.length === 0) throw new Error('at least one coordinator address is needed');
    this.replicas = replicas;
    this.policy = policy;
    this.keyOperations = keyOperations;
  }

  /** Sends one call (retrying as call-policy.ts allows) and settles with its response or last error. */
  call<T>(method: string, request: unknown, deadline: number, requestId?: string): Promise<T> {
    const idempotent = methodSafety(method) === 'idempotent'; // unknown methods: at most once
    return new Promise<T>((resolve, reject) => {
      new PendingCall(this, method, request, deadline, requestMetadata(requestId), idempotent, resolve as (v: unknown) => void, reject).attempt();
    });
  }

  /** The replica the next attempt goes to. */
  pick(now: number): Replica {
    const rs = this.replicas;
    const n = rs.length;
    if (n === 1) return rs[0]!;
    let sealed: Replica | undefined;
    let soonest: Replica | undefined;
    for (let i = 0; i < n; i++) {
      const r = rs[(this.#next + i) % n]!;
      if (r.unhealthyUntil > now) {
        if (!soonest || r.unhealthyUntil < soonest.unhealthyUntil) soonest = r;
      } else if (this.keyOperations && r.sealedUntil > now) {
        sealed ??= r;
      } else {
        this.#next = (this.#next + i + 1) % n;
        return r;
      }
    }
    this.#next = (this.#next + 1) % n;
    return (sealed ?? soonest)!;
  }

  /** Whether some replica is healthy (and, for key operations, not known to be sealed). */
  hasUsable(now: number): boolean {
    for (const r of this.replicas) if (r.unhealthyUntil <= now && !(this.keyOperations && r.sealedUntil > now)) return true;
    return false;
  }

  markDown(r: Replica, now: number): void {
    r.failures += 1;
    r.unhealthyUntil = now + unhealthyForMs(this.policy, r.failures);
  }

  markUp(r: Replica): void {
    if (r.failures !== 0) {
      r.failures = 0;
      r.unhealthyUntil = 0;
    }
    r.sealedUntil = 0;
  }

  markSealed(r: Replica, now: number): void {
    r.sealedUntil = now + sealedForMs(this.policy);
  }

  close(): void {
    this.closed = true;
    for (const r of this.replicas) for (const c of r.channels) c.close();
  }
}

/** One logical call: its attempts, each on a replica the pool picks, until one settles it. */
class PendingCall {
  #attempts = 0;
  #replica: Replica | undefined;
  #last: grpc.ServiceError | undefined;

  constructor(
    readonly pool: ReplicaPool,
    readonly method: string,
    readonly request: unknown,
    readonly deadline: number,
    readonly metadata: grpc.Metadata,
    readonly idempotent: boolean,
    readonly resolve: (v: unknown) => void,
    readonly reject: (e: unknown) => void,
  ) {}

  attempt(): void {
    const now = Date.now();
    if (this.pool.closed) return this.#fail(statusError(grpc.status.CANCELLED, 'the client was closed'));
    if (now >= this.deadline) return this.#fail(this.#last ?? statusError(grpc.status.DEADLINE_EXCEEDED, 'deadline exceeded before the call was sent'));
    const r = this.pool.pick(now);
    const t = r.channel();
    this.#replica = r;
    this.#attempts += 1;
    if (t.state(false) === READY) return this.#send(t);
    this.#connect(t, now);
  }

  /** Starts connecting and waits for READY; a connection that fails or times out sent nothing. */
  #connect(t: Transport, now: number): void {
    t.state(true);
    const s = t.state(false);
    if (s === READY) return this.#send(t);
    if (s === SHUTDOWN) return this.#fail(statusError(grpc.status.CANCELLED, 'the client was closed'));
    // A failing connection is not waited for: grpc-js retries it on its own backoff.
    if (s === TRANSIENT_FAILURE) return this.#notSent(now, t.failure?.() ?? 'it is failing');
    this.#waitReady(t, s, Math.min(this.deadline, now + this.pool.policy.connectTimeoutMs));
  }

  #waitReady(t: Transport, current: grpc.connectivityState, until: number): void {
    try {
      t.watch(current, until, (timedOut) => {
        const now = Date.now();
        if (timedOut) return this.#notSent(now, now >= this.deadline ? undefined : `it was not ready within ${this.pool.policy.connectTimeoutMs} ms`);
        t.state(true);
        const s = t.state(false);
        if (s === READY) return this.#send(t);
        if (s === TRANSIENT_FAILURE) return this.#notSent(now, t.failure?.() ?? 'it failed');
        if (s === SHUTDOWN) return this.#fail(statusError(grpc.status.CANCELLED, 'the client was closed'));
        this.#waitReady(t, s, until);
      });
    } catch {
      this.#fail(statusError(grpc.status.CANCELLED, 'the client was closed'));
    }
  }

  /** The request was never handed to grpc-js: any call may try again. `why` undefined: deadline. */
  #notSent(now: number, why: string | undefined): void {
    const r = this.#replica!;
    this.pool.markDown(r, now);
    this.#last =
      why === undefined
        ? statusError(grpc.status.DEADLINE_EXCEEDED, `deadline exceeded while connecting to ${r.address}`)
        : statusError(grpc.status.UNAVAILABLE, `no connection to ${r.address}: ${why}`);
    this.#retry(now);
  }

  #send(t: Transport): void {
    // grpc-js does not keep the metadata object, but a retry never shares it with an attempt in flight.
    const metadata = this.#attempts === 1 ? this.metadata : this.metadata.clone();
    try {
      t.unary(this.method, this.request, metadata, this.deadline, this.#done);
    } catch (e) {
      this.#fail(statusError(grpc.status.INTERNAL, (e as Error).message));
    }
  }

  #done: UnaryCallback = (err, res) => {
    const r = this.#replica!;
    if (!err) {
      this.pool.markUp(r);
      return this.resolve(res);
    }
    const now = Date.now();
    switch (outcomeOf(err, this.pool.keyOperations)) {
      case 'unavailable':
        this.pool.markDown(r, now);
        this.#last = err;
        return this.idempotent ? this.#retry(now) : this.#fail(err);
      case 'sealed':
        this.pool.markSealed(r, now);
        this.#last = err;
        return this.idempotent && this.pool.hasUsable(now) ? this.#retry(now) : this.#fail(err);
      default:
        return this.#fail(err);
    }
  };

  /** Another attempt: at once if a healthy replica is left, else after a jittered backoff. */
  #retry(now: number): void {
    if (this.#attempts >= this.pool.policy.maxAttempts) return this.#fail(this.#last!);
    const delay = this.pool.hasUsable(now) ? 0 : retryDelayMs(this.pool.policy, this.#attempts);
    if (now + delay >= this.deadline) return this.#fail(this.#last!);
    if (delay === 0) this.attempt();
    else setTimeout(() => this.attempt(), delay);
  }

  #fail(err: grpc.ServiceError): void {
    if (this.#attempts > 1) {
      err.details = `${err.details} (after ${this.#attempts} attempts; the last to ${this.#replica!.address})`;
      err.message = `${err.code} ${grpc.status[err.code]}: ${err.details}`;
    }
    this.reject(err);
  }
}
