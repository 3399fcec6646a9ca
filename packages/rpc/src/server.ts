/**
 * The one place where gRPC meets the domain: authenticates the caller from its certificate,
 * carries the request id, calls a thin handler, and maps `KeyshardError` codes and reasons to
 * gRPC status (the reason in the status details: status-details.ts).
 * Every outcome (ok, denied, error) is reported to an observer so services can audit and log it,
 * and every reply to `onReply` (metrics). An optional concurrency limit sheds load.
 */
import { randomUUID } from 'node:crypto';
import { TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { KeyshardError, MAX_QUOTED, clip, type ErrorCode } from '@keyshard/errors';
import type { ConcurrencyLimit } from './concurrency-limit.ts';
import { requestLimitCheck } from './field-limits.ts';
import { runInCall } from './request-context.ts';
import { STATUS_DETAILS_KEY, encodeStatusDetails } from './status-details.ts';

export const STATUS_OF: Record<ErrorCode, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  NOT_FOUND: grpc.status.NOT_FOUND,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  DEADLINE_EXCEEDED: grpc.status.DEADLINE_EXCEEDED,
  UNIMPLEMENTED: grpc.status.UNIMPLEMENTED,
  INTERNAL: grpc.status.INTERNAL,
};

export interface CallContext {
  principal: string;
  requestId: string;
  method: string;
  deadline: number; // epoch ms; Infinity when the caller set none
  /** Non-secret facts a handler learns (key id, ceremony id, custodian id) for the audit record. */
  facts: { keyId?: string; ceremonyId?: string; details?: Record<string, string> };
}

export interface CallOutcome {
  ctx: CallContext;
  ok: boolean;
  code: ErrorCode | 'OK';
  message?: string;
  error?: unknown;
  durationMs: number;
  /** Refused by the service's concurrency limit before it ran (RESOURCE_EXHAUSTED): nothing happened. */
  shed?: boolean;
}

/** A reply as it is sent: its final status (an observer's refusal included) and the time since the call arrived. */
export interface CallReply {
  ctx: CallContext;
  code: ErrorCode | 'OK';
  durationMs: number;
}

/**
 * Called with every outcome before the reply is sent. If it rejects (e.g. the audit sink
 * cannot record the call), the caller gets that error instead of the result: fail closed.
 */
export type Observer = (outcome: CallOutcome) => Promise<void> | void;

type AnyCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

// One TLS connection has one verified peer certificate, so its principal is cached per socket:
// parsing the peer certificate on every call (getAuthContext) costs ~20 µs and garbage.
const principalBySocket = new WeakMap<TLSSocket, string>();

/**
 * The TLS socket a call arrived on. grpc-js (1.14) exposes it only internally: without server
 * interceptors, a call's `call` is the BaseServerInterceptingCall holding the http2 stream.
 * If that ever changes, this returns undefined and principalOf falls back to getAuthContext.
 */
function tlsSocketOf(call: AnyCall): TLSSocket | undefined {
  const socket = (call as unknown as { call?: { stream?: { session?: { socket?: unknown } } } }).call?.stream?.session?.socket;
  return socket instanceof TLSSocket && socket.authorized ? socket : undefined;
}

/** The caller's principal: the common name of its verified client certificate. */
export function principalOf(call: AnyCall): string | undefined {
  const socket = tlsSocketOf(call);
  const cached = socket && principalBySocket.get(socket);
  if (cached) return cached;
  const cert = call.getAuthContext()?.sslPeerCertificate;
  const cn = cert?.subject?.CN;
  if (typeof cn !== 'string' || cn.length === 0) return undefined;
  if (socket) principalBySocket.set(socket, cn);
  return cn;
}

export function contextOf(call: AnyCall, method: string): CallContext {
  const principal = principalOf(call);
  if (!principal) throw new KeyshardError('UNAUTHENTICATED', 'a client certificate is required');
  const rid = call.metadata.get('x-request-id')[0];
  const deadline = call.getDeadline();
  const requestId = typeof rid === 'string' && /^[\w.-]{1,64}$/.test(rid) ? rid : randomUUID();
  return {
    principal,
    requestId,
    method,
    facts: {},
    deadline: deadline instanceof Date ? deadline.getTime() : deadline === Infinity ? Infinity : Number(deadline),
  };
}

/** The most characters of an error message sent to a caller (grpc-message, and again in the status details). */
export const MAX_ERROR_MESSAGE = 1024;
/** The most ErrorInfo metadata entries sent; each value at most MAX_QUOTED characters (a key over 64 is dropped). */
export const MAX_ERROR_METADATA = 16;
const MAX_METADATA_KEY = 64;

/**
 * An error's message and metadata as they may go on the wire: clipped, whatever the domain put in
 * them. They travel in the HTTP/2 trailers (grpc-message, grpc-status-details-bin), and trailers
 * beyond what the client's HPACK decoder accepts (nghttp2 in node: measured, a 60 KB message
 * suffices) make it end the whole connection with COMPRESSION_ERROR: the call then hangs until
 * its deadline (the SDK's default 10 s) and every other call on that connection fails — the
 * ~10 s stall of issue 17. Clipped here, the trailers of any error stay under ~6 KB of ASCII
 * (~25 KB if every character needs percent-encoding), far below what breaks the connection.
 */
export function boundedError(message: string, metadata: Readonly<Record<string, string>>): { message: string; metadata: Record<string, string> } {
  const md: Record<string, string> = {};
  let n = 0;
  for (const [k, v] of Object.entries(metadata)) {
    if (k.length > MAX_METADATA_KEY) continue; // not one of the code's lower_snake names
    if (n++ >= MAX_ERROR_METADATA) break;
    md[k] = clip(String(v), MAX_QUOTED);
  }
  return { message: clip(message, MAX_ERROR_MESSAGE), metadata: md };
}

/**
 * The status a failed call ends with: a KeyshardError's code and message, its reason and
 * metadata as a google.rpc.ErrorInfo in the `grpc-status-details-bin` trailer, and the call's
 * request id (x-request-id) so the caller can quote it. Any other error is INTERNAL, reason
 * INTERNAL: unknown errors may carry anything in their message, so none of it reaches the caller.
 * Message and metadata are bounded (boundedError).
 */
export function toServiceError(e: unknown, requestId?: string): Partial<grpc.ServiceError> {
  const known = e instanceof KeyshardError;
  const code = known ? STATUS_OF[e.code] : grpc.status.INTERNAL;
  const { message, metadata: info } = known ? boundedError(e.message, e.metadata) : { message: 'internal error', metadata: {} };
  const metadata = new grpc.Metadata();
  metadata.set(STATUS_DETAILS_KEY, encodeStatusDetails(code, message, known ? e.reason : 'INTERNAL', info));
  if (requestId) metadata.set('x-request-id', requestId);
  return { code, details: message, message, metadata };
}

export type UnaryHandler<Req, Res> = (req: Req, ctx: CallContext) => Promise<Res>;

export interface ServiceOptions {
  /** Service name used in method labels, e.g. "keys". */
  name: string;
  observer?: Observer;
  /** Principals allowed to call anything on this service; other callers get PERMISSION_DENIED. */
  authorize?: (ctx: CallContext) => void;
  /**
   * Runs after authorisation and before the handler; if it rejects, the handler never runs.
   * Services record the intent of state-changing calls here, so that none happens unaudited.
   */
  before?: (ctx: CallContext) => Promise<void> | undefined;
  /**
   * Calls of this service running at once (see ConcurrencyLimit): one more is refused with
   * RESOURCE_EXHAUSTED after authorisation and before the audit intent and the handler. Share
   * one limit between services to bound them together.
   */
  limit?: ConcurrencyLimit;
  /** Called as each reply is sent, with its final status (e.g. request metrics); must not throw. */
  onReply?: (reply: CallReply) => void;
}

const codeOf = (e: unknown): ErrorCode | 'OK' => (e === undefined ? 'OK' : e instanceof KeyshardError ? e.code : 'INTERNAL');

/** What a request that does not decode as its message becomes (see decodingSafe). */
const UNDECODABLE = Symbol('undecodable request');

/**
 * The service definition with requests that fail to decode turned into a marker instead of
 * an exception: grpc-js would answer those INTERNAL before any keyshard code runs (and so
 * unaudited); unaryService answers them INVALID_ARGUMENT, after authorization, and audits it.
 */
export function decodingSafe(definition: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, m] of Object.entries(definition)) {
    const decode = m.requestDeserialize;
    out[name] = {
      ...m,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decode(bytes);
        } catch {
          return UNDECODABLE;
        }
      },
    };
  }
  return out as grpc.ServiceDefinition;
}

/**
 * Any method's handler, as unaryService takes them: a unary one gets the request, a streaming one
 * the call (it reads and writes it itself; a client-streaming one resolves with the response).
 * Tables of keyshard.v1 services are typed per method: ServiceHandlers in handlers.ts.
 */
export type Handler = (requestOrCall: never, ctx: CallContext) => Promise<unknown>;

/** Whether a streamed message failed to decode (see decodingSafe); handlers of streams check each one. */
export const isUndecodable = (message: unknown): boolean => message === UNDECODABLE;

/**
 * Wraps a table of async handlers into a grpc-js service implementation. Methods that the
 * proto declares but the table lacks return UNIMPLEMENTED. Streaming methods get the same
 * authentication, authorisation, concurrency limit, audit intent and outcome observer as unary
 * ones; their handler (a StreamHandler) reads and writes the call, and its error ends the
 * stream with the mapped status. Everything a call runs, the observer included, runs inside
 * its request context (request-context.ts). A request (of a method that does not stream
 * requests) breaking a field limit of the protos (field-limits.ts) is refused INVALID_ARGUMENT
 * after authorisation and before the concurrency limit, the audit intent and the handler.
 */
export function unaryService(
  definition: grpc.ServiceDefinition,
  handlers: Readonly<Record<string, Handler>>,
  options: ServiceOptions,
): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [name, def] of Object.entries(definition)) {
    const handler = handlers[name];
    const method = `${options.name}.${name}`;
    const streaming = def.requestStream || def.responseStream;
    const checkLimits = def.requestStream ? undefined : requestLimitCheck(def.path);
    impl[name] = (call: AnyCall & { request?: unknown }, callback?: grpc.sendUnaryData<unknown>) => {
      const started = performance.now();
      let ctx: CallContext = { principal: 'unknown', requestId: '', method, deadline: Infinity, facts: {} };
      let admitted = false; // holds a place in options.limit
      const reply = (e: unknown, res?: unknown) => {
        if (admitted) {
          admitted = false;
          options.limit!.release();
        }
        options.onReply?.({ ctx, code: codeOf(e), durationMs: performance.now() - started });
        if (callback) return e === undefined ? callback(null, res) : callback(toServiceError(e, ctx.requestId));
        const stream = call as grpc.ServerWritableStream<unknown, unknown>;
        if (e === undefined) stream.end();
        else stream.emit('error', toServiceError(e, ctx.requestId));
      };
      const finish = (e: unknown, res?: unknown, shed = false) => {
        const observed = options.observer?.({
          ctx,
          ok: e === undefined,
          code: codeOf(e),
          message: e instanceof KeyshardError ? clip(e.message, MAX_ERROR_MESSAGE) : undefined,
          error: e,
          durationMs: performance.now() - started,
          ...(shed ? { shed } : {}),
        });
        if (!observed) return reply(e, res);
        observed.then(
          () => reply(e, res),
          (auditError) => reply(e ?? auditError),
        );
      };
      try {
        ctx = contextOf(call, method);
      } catch (e) {
        return finish(e);
      }
      runInCall(ctx, () => {
        try {
          options.authorize?.(ctx);
          if (!def.requestStream && call.request === UNDECODABLE) throw new KeyshardError('INVALID_ARGUMENT', `the request is not a valid ${name} request message`);
          checkLimits?.(call.request);
          if (!handler) throw new KeyshardError('UNIMPLEMENTED', `${method} is not implemented in this version`);
          if (options.limit) {
            if (!options.limit.tryAcquire())
              return finish(new KeyshardError('RESOURCE_EXHAUSTED', `${options.name} service is at its limit of ${options.limit.max} concurrent calls; retry with backoff`, { reason: 'OVERLOADED' }), undefined, true);
            admitted = true;
          }
          const run = () => (handler as (requestOrCall: unknown, ctx: CallContext) => Promise<unknown>)(streaming ? call : call.request, ctx);
          const pending = options.before?.(ctx);
          (pending ? pending.then(run) : run()).then((res) => finish(undefined, res), finish);
        } catch (e) {
          finish(e);
        }
      });
    };
  }
  return impl;
}
