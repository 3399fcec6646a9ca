/**
 * The one error type of keyshard. Domain modules throw `KeyshardError` with a code (the kind of
 * failure, a gRPC status name) and a reason (which refusal it is: reasons.ts); `@keyshard/rpc`
 * maps both to the wire in one place (the status code, and a google.rpc.ErrorInfo in the
 * status details). Messages and metadata are shown to callers, so they must never contain key
 * material, plaintext or PINs, and quote caller input only bounded (`quote`).
 */
import { REASONS, isReason, type Reason } from './reasons.ts';

export { REASONS, isReason, type Reason };

export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'FAILED_PRECONDITION'
  | 'PERMISSION_DENIED'
  | 'UNAUTHENTICATED'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'DEADLINE_EXCEEDED'
  | 'UNIMPLEMENTED'
  | 'INTERNAL';

/** The reason of an error that names none: its code's. */
export const DEFAULT_REASON: Readonly<Record<ErrorCode, Reason>> = {
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  NOT_FOUND: 'NOT_FOUND',
  ALREADY_EXISTS: 'ALREADY_EXISTS',
  FAILED_PRECONDITION: 'FAILED_PRECONDITION',
  PERMISSION_DENIED: 'NOT_AUTHORIZED',
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  RESOURCE_EXHAUSTED: 'RESOURCE_EXHAUSTED',
  UNAVAILABLE: 'UNAVAILABLE',
  DEADLINE_EXCEEDED: 'DEADLINE_EXCEEDED',
  UNIMPLEMENTED: 'UNIMPLEMENTED',
  INTERNAL: 'INTERNAL',
};

export interface KeyshardErrorOptions {
  /** Which refusal this is; default: the code's (DEFAULT_REASON). */
  reason?: Reason;
  /** Non-secret facts for the caller (ErrorInfo.metadata), e.g. `{ key: 'k_…' }`: bounded, lower_snake keys. */
  metadata?: Record<string, string>;
  cause?: unknown;
}

export class KeyshardError extends Error {
  readonly code: ErrorCode;
  readonly reason: Reason;
  readonly metadata: Readonly<Record<string, string>>;
  constructor(code: ErrorCode, message: string, options: KeyshardErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KeyshardError';
    this.code = code;
    this.reason = options.reason ?? DEFAULT_REASON[code];
    this.metadata = options.metadata ?? {};
  }
}

type Options = KeyshardErrorOptions;
export const invalidArgument = (message: string, o?: Options) => new KeyshardError('INVALID_ARGUMENT', message, o);
export const notFound = (message: string, o?: Options) => new KeyshardError('NOT_FOUND', message, o);
export const alreadyExists = (message: string, o?: Options) => new KeyshardError('ALREADY_EXISTS', message, o);
export const failedPrecondition = (message: string, o?: Options) => new KeyshardError('FAILED_PRECONDITION', message, o);
export const permissionDenied = (message: string, o?: Options) => new KeyshardError('PERMISSION_DENIED', message, o);
export const unavailable = (message: string, o?: Options) => new KeyshardError('UNAVAILABLE', message, o);
export const internal = (message: string, o?: Options) => new KeyshardError('INTERNAL', message, o);

/** The refusal of every key operation on a sealed replica (reason SEALED). */
export const sealedError = () => failedPrecondition('keyshard is sealed: a custodian quorum must unseal it', { reason: 'SEALED' });

/** The refusal of what needs a cluster when there is none: never initialised, destroyed, or mid-restore (reason UNINITIALIZED). */
export const uninitializedError = () =>
  failedPrecondition('keyshard is not initialized: run `keyshard init` (or restore a backup)', { reason: 'UNINITIALIZED' });

/** A key reference that resolves to no key (reason KEY_NOT_FOUND). */
export const keyNotFound = (ref: string) => notFound(`key ${clip(ref)} not found`, { reason: 'KEY_NOT_FOUND', metadata: { key: clip(ref) } });

/** A ceremony id that names no ceremony (reason CEREMONY_NOT_FOUND). */
export const ceremonyNotFound = (id: unknown) =>
  notFound(`no ceremony ${quote(id)}`, { reason: 'CEREMONY_NOT_FOUND', metadata: { ceremony_id: clip(String(id ?? '')) } });

/** The most characters of caller input a message or metadata value repeats. */
export const MAX_QUOTED = 128;

/** `s` cut to `max` characters (an ellipsis marks the cut): caller input, repeated in a message. */
export function clip(s: string, max = MAX_QUOTED): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}

/** Caller input for a message: JSON-quoted (control characters escaped), at most `max` characters of it. */
export function quote(value: unknown, max = MAX_QUOTED): string {
  return JSON.stringify(clip(typeof value === 'string' ? value : String(value), max));
}

export function isKeyshardError(e: unknown): e is KeyshardError {
  return e instanceof KeyshardError;
}

/** The reason `e` carries: its own for a KeyshardError, INTERNAL for anything else. */
export function reasonOf(e: unknown): Reason {
  return e instanceof KeyshardError ? e.reason : 'INTERNAL';
}
