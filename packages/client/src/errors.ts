/**
 * The errors every SDK call rejects with: a `KeyshardError` carrying the gRPC status (its name
 * as `code`, its number as `grpcCode`), the server's machine-readable `reason` (the
 * google.rpc.ErrorInfo of the status details, https://google.aip.dev/193) and its metadata,
 * and the request id the audit log records the call under. Branch on the class or the reason,
 * never on the message text:
 *
 *   try { await client.decrypt(ct, ctx) }
 *   catch (e) { if (e instanceof WrongContextError) …; else if (e instanceof UnavailableError) … }
 *
 * Each status code has a class (FailedPreconditionError, NotFoundError, …) and the common
 * reasons a subclass of their code's class (SealedError extends FailedPreconditionError, …).
 * A server that sends no details (older than reasons), and errors the SDK or grpc-js detect
 * themselves (no connection, deadline), get the code's default reason. A reason this SDK does
 * not know (a newer server) keeps its string and its code's class.
 */
import { codeName, errorInfoOf, reasonOfStatus, type Reason } from '@keyshard/rpc';

export type { Reason };

/** The status (a grpc-js ServiceError, or anything with its shape) an error is made from. */
export interface StatusLike {
  code: number;
  details?: string;
  message?: string;
  metadata?: { get(key: string): unknown[] };
}

export class KeyshardError extends Error {
  /** The gRPC status name, e.g. 'FAILED_PRECONDITION'. */
  readonly code: string;
  /** The numeric gRPC status code, e.g. 9. */
  readonly grpcCode: number;
  /** Which refusal it is, e.g. 'SEALED' (Reason; a newer server may send one this SDK does not list). */
  readonly reason: Reason | (string & {});
  /** Non-secret facts the server gave with the refusal, e.g. `{ key_id: 'k_…' }`. */
  readonly metadata: Readonly<Record<string, string>>;
  /** The x-request-id of the call (the audit log's record of it), when the server echoed it. */
  readonly requestId: string | undefined;

  constructor(init: { code: number; message: string; reason?: string; metadata?: Record<string, string>; requestId?: string; cause?: unknown }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.grpcCode = init.code;
    this.code = codeName(init.code);
    this.reason = init.reason ?? reasonOfStatus({ code: init.code });
    this.metadata = init.metadata ?? {};
    this.requestId = init.requestId;
  }
}

// One class per status code keyshard answers with (the others are KeyshardError itself).
export class InvalidArgumentError extends KeyshardError {}
export class NotFoundError extends KeyshardError {}
export class AlreadyExistsError extends KeyshardError {}
export class FailedPreconditionError extends KeyshardError {}
export class PermissionDeniedError extends KeyshardError {}
export class UnauthenticatedError extends KeyshardError {}
export class ResourceExhaustedError extends KeyshardError {}
export class UnavailableError extends KeyshardError {}
export class DeadlineExceededError extends KeyshardError {}
export class InternalError extends KeyshardError {}

// The common reasons, each a subclass of its code's class.
/** SEALED: the replica is sealed; a custodian quorum must unseal it. */
export class SealedError extends FailedPreconditionError {}
/** UNINITIALIZED: the cluster does not exist (never initialised, destroyed, or mid-restore). */
export class UninitializedError extends FailedPreconditionError {}
/** KEY_NOT_FOUND: no key has that id, name or alias. */
export class KeyNotFoundError extends NotFoundError {}
/** KEY_DISABLED: the key is disabled. */
export class KeyDisabledError extends FailedPreconditionError {}
/** KEY_PENDING_DESTRUCTION: the key is scheduled for destruction. */
export class KeyPendingDestructionError extends FailedPreconditionError {}
/** KEY_DESTROYED: the key is destroyed. */
export class KeyDestroyedError extends FailedPreconditionError {}
/** WRONG_KEY_USAGE: the key's type does not do this (e.g. encrypt with a signing key). */
export class WrongKeyUsageError extends FailedPreconditionError {}
/** WRONG_CONTEXT: the ciphertext does not authenticate under the given encryption context (or was modified). */
export class WrongContextError extends InvalidArgumentError {}
/** INVALID_CIPHERTEXT: not a ciphertext keyshard made. */
export class InvalidCiphertextError extends InvalidArgumentError {}
/** CEREMONY_NOT_FOUND: no ceremony has that id. */
export class CeremonyNotFoundError extends NotFoundError {}
/** OVERLOADED: the replica is at its concurrency limit; retry with backoff. */
export class OverloadedError extends ResourceExhaustedError {}
/** AUDIT_UNAVAILABLE: the audit sink cannot record the call, so it was refused. */
export class AuditUnavailableError extends UnavailableError {}

type ErrorClass = new (init: ConstructorParameters<typeof KeyshardError>[0]) => KeyshardError;

const BY_REASON: Readonly<Record<string, ErrorClass>> = {
  SEALED: SealedError,
  UNINITIALIZED: UninitializedError,
  KEY_NOT_FOUND: KeyNotFoundError,
  KEY_DISABLED: KeyDisabledError,
  KEY_PENDING_DESTRUCTION: KeyPendingDestructionError,
  KEY_DESTROYED: KeyDestroyedError,
  WRONG_KEY_USAGE: WrongKeyUsageError,
  WRONG_CONTEXT: WrongContextError,
  INVALID_CIPHERTEXT: InvalidCiphertextError,
  CEREMONY_NOT_FOUND: CeremonyNotFoundError,
  OVERLOADED: OverloadedError,
  AUDIT_UNAVAILABLE: AuditUnavailableError,
};

const BY_CODE: Readonly<Record<string, ErrorClass>> = {
  INVALID_ARGUMENT: InvalidArgumentError,
  NOT_FOUND: NotFoundError,
  ALREADY_EXISTS: AlreadyExistsError,
  FAILED_PRECONDITION: FailedPreconditionError,
  PERMISSION_DENIED: PermissionDeniedError,
  UNAUTHENTICATED: UnauthenticatedError,
  RESOURCE_EXHAUSTED: ResourceExhaustedError,
  UNAVAILABLE: UnavailableError,
  DEADLINE_EXCEEDED: DeadlineExceededError,
  INTERNAL: InternalError,
};

/**
 * A KeyshardError of the class of its code, or of its reason when that class is one of the
 * code's (SealedError for FAILED_PRECONDITION + SEALED): for a refusal the SDK makes itself
 * from what the server said (a ceremony that failed: ceremonyError).
 */
export function typedError(init: ConstructorParameters<typeof KeyshardError>[0]): KeyshardError {
  const byCode = BY_CODE[codeName(init.code)] ?? KeyshardError;
  const byReason = init.reason ? BY_REASON[init.reason] : undefined;
  const Class = byReason && byReason.prototype instanceof byCode ? byReason : byCode;
  return new Class(init);
}

/**
 * The typed error of a failed call: its class from the reason (else from the code), its reason
 * from the status details (else the code's default). `requestId` is the id the call was sent
 * with, for an error the server did not echo it in (one the SDK or grpc-js made).
 */
export function fromServiceError(err: StatusLike, requestId?: string): KeyshardError {
  if (err instanceof KeyshardError) return err;
  const info = errorInfoOf(err as Parameters<typeof errorInfoOf>[0]);
  const reason = info?.reason || reasonOfStatus({ code: err.code });
  const Class = BY_REASON[reason] ?? BY_CODE[codeName(err.code)] ?? KeyshardError;
  const echoed = err.metadata?.get('x-request-id')[0];
  return new Class({
    code: err.code,
    message: err.details || err.message || codeName(err.code),
    reason,
    metadata: info?.metadata,
    requestId: typeof echoed === 'string' ? echoed : requestId,
    cause: err,
  });
}

/** Whether `e` is a gRPC status error (code and details), which fromServiceError turns into a KeyshardError. */
export function isStatusError(e: unknown): e is StatusLike & { details: string } {
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'number' && typeof (e as { details?: unknown }).details === 'string';
}

/** `e` as the SDK rejects: a status error becomes a KeyshardError; anything else is left as it is. */
export function toKeyshardError(e: unknown, requestId?: string): unknown {
  return isStatusError(e) ? fromServiceError(e, requestId) : e;
}
