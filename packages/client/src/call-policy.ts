/**
 * When the SDK may send a keyshard.v1 call again: each method's idempotency (from the protos'
 * `idempotency_level` option), the retry limits and the backoff. Invariants:
 * - An `idempotent` call is retried on UNAVAILABLE (on another replica when one is healthy),
 *   and for key operations on a sealed replica's FAILED_PRECONDITION (reason SEALED) when another replica is
 *   not known to be sealed. Repeating it changes no key state; it may appear twice in the
 *   audit log, with the same request id.
 * - A state change whose request takes a `request_token` (every KeyService state change, Init,
 *   StartUnseal, StartCeremony) is `idempotent` too: the SDK fills one random token per logical
 *   call (index.ts), every attempt carries it, and the coordinator applies the change at most
 *   once and answers a repeat with the original outcome — the same key, the same ceremony
 *   (keys.proto and ceremony.proto, "Idempotent state changes"). Seal is idempotent as it is.
 * - A `once` call changes state without a token (CancelCeremony): a second one would be refused.
 *   It is sent at most once, and moves to another replica only when it provably was not
 *   sent: the chosen connection never became READY, so the SDK never handed the request to grpc-js.
 * - DEADLINE_EXCEEDED is never retried: every attempt carries the caller's whole remaining
 *   deadline, so when it expires no time remains, and a server-side expiry means an
 *   overloaded replica, which a retry would load further.
 * - Nothing else is retried: every other status is the server's answer.
 * Backoff is "full jitter" (a uniformly random delay below an exponentially growing cap), which
 * keeps many clients that failed together from retrying together.
 */
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { methodPolicies, reasonOfStatus } from '@keyshard/rpc';

export type Safety = 'idempotent' | 'once';

let safety: ReadonlyMap<string, Safety> | undefined;

/**
 * How the SDK may repeat a unary method of KeyService or CeremonyService, as the protos say it
 * (each rpc's `idempotency_level` and request fields, read by @keyshard/rpc method-policy.ts):
 * NO_SIDE_EFFECTS (reads) and IDEMPOTENT (pure crypto: fresh nonces or data keys each time, no
 * key state changes, the first answer simply dropped; Seal: sealed stays sealed) are 'idempotent',
 * and so is a state change whose request takes a `request_token` (sent with one: the server
 * applies it once). Every other method changes state without a token (CancelCeremony) and is
 * 'once', as is a method the protos do not declare.
 */
export function methodSafety(method: string): Safety {
  safety ??= new Map(
    (['KeyService', 'CeremonyService'] as const).flatMap((s) =>
      [...methodPolicies(s).values()].map((p) => [p.method, p.retryable || p.requestToken ? 'idempotent' : 'once'] as const),
    ),
  );
  return safety.get(method) ?? 'once';
}

let tokened: ReadonlySet<string> | undefined;

/** Whether a KeyService or CeremonyService method's request takes a `request_token` (the SDK fills one per logical call). */
export function takesRequestToken(method: string): boolean {
  tokened ??= new Set(
    (['KeyService', 'CeremonyService'] as const).flatMap((s) => [...methodPolicies(s).values()].filter((p) => p.requestToken).map((p) => p.method)),
  );
  return tokened.has(method);
}

/** A fresh request token: 128 random bits, base64url (22 characters). */
export const newRequestToken = (): string => randomBytes(16).toString('base64url');

/** Retry limits a client is created with; every field is optional. */
export interface RetryOptions {
  /** Attempts per call, the first included (default 5; 1 turns retries off). */
  maxAttempts?: number;
  /** Cap of the first retry's random delay; doubles per retry (default 100 ms). */
  initialBackoffMs?: number;
  /** Largest cap of a retry's random delay (default 2000 ms). */
  maxBackoffMs?: number;
  /** How long an attempt waits for a connection before trying another replica (default 2000 ms). */
  connectTimeoutMs?: number;
  /** Largest time a failed or sealed replica is skipped while another is usable (default 5000 ms). */
  maxUnhealthyMs?: number;
}

export type RetryPolicy = Required<RetryOptions> & {
  /** A replica's first failure skips it for this long (jittered), doubling per failure. */
  unhealthyMs: number;
  random: () => number;
};

export function retryPolicy(o: RetryOptions = {}): RetryPolicy {
  const p: RetryPolicy = {
    maxAttempts: o.maxAttempts ?? 5,
    initialBackoffMs: o.initialBackoffMs ?? 100,
    maxBackoffMs: o.maxBackoffMs ?? 2_000,
    connectTimeoutMs: o.connectTimeoutMs ?? 2_000,
    maxUnhealthyMs: o.maxUnhealthyMs ?? 5_000,
    unhealthyMs: 200,
    random: Math.random,
  };
  if (!Number.isInteger(p.maxAttempts) || p.maxAttempts < 1 || p.maxAttempts > 100) throw new Error('retry.maxAttempts must be an integer between 1 and 100');
  for (const k of ['initialBackoffMs', 'maxBackoffMs', 'connectTimeoutMs', 'maxUnhealthyMs'] as const)
    if (!Number.isFinite(p[k]) || p[k] < 0) throw new Error(`retry.${k} must be a non-negative number of milliseconds`);
  p.unhealthyMs = Math.min(p.unhealthyMs, p.maxUnhealthyMs);
  return p;
}

/** The random delay before retry number `retry` (1 = the first retry). */
export function retryDelayMs(p: RetryPolicy, retry: number): number {
  return p.random() * Math.min(p.maxBackoffMs, p.initialBackoffMs * 2 ** (retry - 1));
}

/** How long a replica that just failed for the `failures`-th time in a row is skipped. */
export function unhealthyForMs(p: RetryPolicy, failures: number): number {
  const cap = Math.min(p.maxUnhealthyMs, p.unhealthyMs * 2 ** Math.min(failures - 1, 30));
  return cap * (0.5 + p.random() / 2); // jittered, so replicas marked together recover apart
}

/** How long a replica that answered "sealed" is skipped for key operations: unsealing takes a ceremony. */
export function sealedForMs(p: RetryPolicy): number {
  return p.maxUnhealthyMs * (0.5 + p.random() / 2);
}

/** What a failed attempt that reached the server means for the call. */
export type Outcome = 'final' | 'unavailable' | 'sealed';

export function outcomeOf(err: grpc.ServiceError, keyOperation: boolean): Outcome {
  if (err.code === grpc.status.UNAVAILABLE) return 'unavailable';
  // Every key operation on a sealed replica answers FAILED_PRECONDITION with reason SEALED in
  // the status details (never judged by the message). A server that sends no details is not
  // recognised as sealed: its refusal is final, as any other.
  if (keyOperation && err.code === grpc.status.FAILED_PRECONDITION && reasonOfStatus(err) === 'SEALED') return 'sealed';
  return 'final';
}

/** A status error like the ones grpc-js produces, for failures the SDK itself detects. */
export function statusError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(`${code} ${grpc.status[code]}: ${details}`), { code, details, metadata: new grpc.Metadata() });
}
