/**
 * The call a piece of code runs on behalf of, kept across await points (AsyncLocalStorage).
 * `unaryService` enters it for every call it serves; outgoing calls (`requestMetadata`) send
 * its request id as x-request-id, audit events default to it and log lines carry it: one id
 * follows a request from the client through the coordinator to the custodians and into the
 * audit log. Work a call starts and leaves running (a ceremony it opened) keeps its id too.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/** What is known of the call being served; a subset of the server's CallContext. */
export interface CurrentCall {
  requestId: string;
  method: string;
  principal: string;
}

const storage = new AsyncLocalStorage<CurrentCall>();

/** Runs `fn` (and everything it starts) as part of `call`. */
export function runInCall<T>(call: CurrentCall, fn: () => T): T {
  return storage.run(call, fn);
}

/** Runs `fn` outside any call: for long-lived work that must not keep the id of the call that happened to start it. */
export function runOutsideCall<T>(fn: () => T): T {
  return storage.exit(fn);
}

/** The request id of the call being served here, if any. */
export function currentRequestId(): string | undefined {
  return storage.getStore()?.requestId;
}

/** Fields for structured log lines (a pino `mixin`): the request id while serving a call. */
export function requestLogFields(): { request_id?: string } {
  const id = storage.getStore()?.requestId;
  return id ? { request_id: id } : {};
}
