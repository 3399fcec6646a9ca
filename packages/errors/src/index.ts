/**
 * The one error type of keyshard. Domain modules throw `KeyshardError` with a code;
 * `@keyshard/rpc` maps the code to a gRPC status in one place. Messages are shown to
 * callers, so they must never contain key material, plaintext or PINs.
 */
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

export class KeyshardError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KeyshardError';
    this.code = code;
  }
}

export const invalidArgument = (message: string) => new KeyshardError('INVALID_ARGUMENT', message);
export const notFound = (message: string) => new KeyshardError('NOT_FOUND', message);
export const alreadyExists = (message: string) => new KeyshardError('ALREADY_EXISTS', message);
export const failedPrecondition = (message: string) => new KeyshardError('FAILED_PRECONDITION', message);
export const permissionDenied = (message: string) => new KeyshardError('PERMISSION_DENIED', message);
export const unavailable = (message: string, cause?: unknown) =>
  new KeyshardError('UNAVAILABLE', message, { cause });
export const internal = (message: string, cause?: unknown) => new KeyshardError('INTERNAL', message, { cause });

/** The sealed-state refusal every key operation returns; the word "sealed" is part of the contract. */
export const sealedError = () => failedPrecondition('keyshard is sealed: a custodian quorum must unseal it');

export function isKeyshardError(e: unknown): e is KeyshardError {
  return e instanceof KeyshardError;
}
