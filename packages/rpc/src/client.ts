/** Promise wrappers over grpc-js clients, with deadlines and request ids on every call. */
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS, channelCredentials, type TlsMaterial } from './tls.ts';
import { ANY_CLUSTER_SERVER, type ExpectedServer } from './server-identity.ts';
import { currentRequestId } from './request-context.ts';

/** A service's client constructor, typed by its generated client (keyshardProto()'s). */
export type ClientConstructor<T extends grpc.Client> = new (address: string, credentials: grpc.ChannelCredentials, options?: Partial<grpc.ChannelOptions>) => T;

/**
 * A client of `address` whose server must be `server` (server-identity.ts). Every link that
 * carries data names the server it expects; ANY_CLUSTER_SERVER (the default) is for probes
 * and tests that dial a component by address on purpose (server-identity.spec.ts checks that
 * no service or package source relies on the default).
 */
export function makeClient<T extends grpc.Client>(Ctor: ClientConstructor<T>, address: string, tls: TlsMaterial, options?: grpc.ChannelOptions, server?: ExpectedServer): T;
/** A client of a service without generated types (grpc-js's makeGenericClientConstructor): the caller names its type. */
export function makeClient<T extends grpc.Client>(Ctor: grpc.ServiceClientConstructor, address: string, tls: TlsMaterial, options?: grpc.ChannelOptions, server?: ExpectedServer): T;
export function makeClient<T extends grpc.Client>(
  Ctor: ClientConstructor<T> | grpc.ServiceClientConstructor,
  address: string,
  tls: TlsMaterial,
  options: grpc.ChannelOptions = {},
  server: ExpectedServer = ANY_CLUSTER_SERVER,
): T {
  // For loopback IP targets, verify the certificate's DNS:localhost name instead of sending an
  // IP address as TLS SNI (RFC 6066 forbids it and node warns on every connection). That name
  // every dev certificate carries: the CN check of `server` is what tells them apart.
  const loopback = /^127\.\d+\.\d+\.\d+:\d+$/.test(address) ? { 'grpc.ssl_target_name_override': 'localhost' } : {};
  const seen: { refusal?: string } = {};
  const credentials = channelCredentials(tls, server, address, (refusal) => (seen.refusal = refusal));
  const client = new Ctor(address, credentials, { ...CHANNEL_OPTIONS, ...loopback, ...options }) as T;
  refusals.set(client, seen);
  return client;
}

const refusals = new WeakMap<grpc.Client, { refusal?: string }>();

/**
 * Why the last server this client reached failed its identity check, if it did (and none has
 * passed since): for callers that see only a channel in TRANSIENT_FAILURE (the SDK's replica
 * pool). A certificate without serverAuth is refused by TLS before this check and leaves nothing.
 */
export function lastServerRefusal(client: grpc.Client): string | undefined {
  return refusals.get(client)?.refusal;
}

export interface CallOptions {
  timeoutMs?: number;
  requestId?: string;
}

/**
 * Call metadata carrying the request id the server logs and audits: the given one, else that of
 * the call being served here (so a call made on behalf of a request carries its id), else a fresh one.
 */
export function requestMetadata(requestId?: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set('x-request-id', requestId ?? currentRequestId() ?? randomUUID());
  return metadata;
}

/**
 * The unary methods of a generated client type (their proto names), with their request (`pb.X`,
 * what a sender may fill in) and response (`pb.Y__Output`, as grpc-js decodes it): the last
 * overload of each method is `(argument, callback)`.
 */
type UnarySignature<F> = F extends (argument: infer Req, callback: grpc.requestCallback<infer Res>) => grpc.ClientUnaryCall ? { req: Req; res: Res } : never;
export type UnaryMethod<C> = { [M in keyof C & string]: string extends M ? never : M extends Capitalize<M> ? (UnarySignature<C[M]> extends never ? never : M) : never }[keyof C & string];
export type UnaryRequest<C, M extends UnaryMethod<C>> = UnarySignature<C[M]>['req'];
export type UnaryResponse<C, M extends UnaryMethod<C>> = UnarySignature<C[M]>['res'];

/**
 * Calls a unary method of a keyshard.v1 client (made from keyshardProto().X), typed by the
 * generated client: the request as the proto defines it, the response as grpc-js decodes it.
 * Rejects with the grpc ServiceError.
 */
export function unaryCall<C extends grpc.Client, M extends UnaryMethod<C>>(client: C, method: M, request: UnaryRequest<C, M>, options: CallOptions = {}): Promise<UnaryResponse<C, M>> {
  return unaryCallUnchecked<UnaryResponse<C, M>>(client, method, request, options);
}

/**
 * unaryCall without the types: for callers that pick the method at run time or send what the
 * protos' types forbid on purpose (probes, fault and property tests). The caller vouches for `Res`.
 */
export function unaryCallUnchecked<Res = unknown>(client: grpc.Client, method: string, request: unknown, options: CallOptions = {}): Promise<Res> {
  const metadata = requestMetadata(options.requestId);
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, Function>)[method];
    if (typeof fn !== 'function') {
      reject(new Error(`no such method ${method}`));
      return;
    }
    fn.call(client, request, metadata, { deadline }, (err: grpc.ServiceError | null, res: Res) => {
      if (err) reject(err);
      else resolve(res);
    });
  });
}

export function isServiceError(e: unknown): e is grpc.ServiceError {
  return typeof e === 'object' && e !== null && 'code' in e && 'details' in e;
}

export function statusName(code: number): string {
  return grpc.status[code] ?? String(code);
}
