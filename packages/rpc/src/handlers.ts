/**
 * Handler tables typed from the generated service types: `ServiceHandlers<'KeyService'>` has
 * one handler per method of KeyService, each taking the method's request as grpc-js decodes it
 * (`pb.X__Output`) and answering its response (`pb.Y`). unaryService (server.ts) serves them.
 *  - unary: `(request, ctx) => Promise<response>`;
 *  - client streaming: reads the call, resolves with the response;
 *  - server streaming and bidirectional: read and write the call, resolve when done.
 * A message of a stream may be the undecodable marker (server.ts decodingSafe): stream handlers
 * check each one with isUndecodable.
 */
import type * as grpc from '@grpc/grpc-js';
import type { KeyshardServices, ServiceName } from './proto.ts';
import type { CallContext, UnaryHandler } from './server.ts';

export type ClientStreamHandler<Req, Res> = (call: grpc.ServerReadableStream<Req, Res>, ctx: CallContext) => Promise<Res>;
export type ServerStreamHandler<Req, Res> = (call: grpc.ServerWritableStream<Req, Res>, ctx: CallContext) => Promise<void>;
export type BidiStreamHandler<Req, Res> = (call: grpc.ServerDuplexStream<Req, Res>, ctx: CallContext) => Promise<void>;

/** The request and response types of a method, from grpc-js's generated handler type of it. */
type Messages<H> =
  H extends grpc.handleBidiStreamingCall<infer Req, infer Res> ? { kind: 'bidi'; req: Req; res: Res }
  : H extends grpc.handleClientStreamingCall<infer Req, infer Res> ? { kind: 'client'; req: Req; res: Res }
  : H extends grpc.handleServerStreamingCall<infer Req, infer Res> ? { kind: 'server'; req: Req; res: Res }
  : H extends grpc.handleUnaryCall<infer Req, infer Res> ? { kind: 'unary'; req: Req; res: Res }
  : never;

/** keyshard's handler for a method, from grpc-js's generated handler type of it. */
export type HandlerOf<H, M extends Messages<H> = Messages<H>> =
  M['kind'] extends 'bidi' ? BidiStreamHandler<M['req'], M['res']>
  : M['kind'] extends 'client' ? ClientStreamHandler<M['req'], M['res']>
  : M['kind'] extends 'server' ? ServerStreamHandler<M['req'], M['res']>
  : UnaryHandler<M['req'], M['res']>;

/** The methods of a keyshard.v1 service (the generated interfaces also carry grpc-js's string index). */
export type MethodName<S extends ServiceName> = keyof { [M in keyof KeyshardServices[S]['handlers'] as string extends M ? never : M]: unknown } & string;

/** One handler per method of service S. */
export type ServiceHandlers<S extends ServiceName> = { [M in MethodName<S>]: HandlerOf<KeyshardServices[S]['handlers'][M]> };

/** What method M of S receives: its request as grpc-js decodes it (`pb.X__Output`). */
export type RequestOf<S extends ServiceName, M extends MethodName<S>> = Messages<KeyshardServices[S]['handlers'][M]>['req'];

/** What method M of S answers: its response as a sender fills it in (`pb.Y`). */
export type ResponseOf<S extends ServiceName, M extends MethodName<S>> = Messages<KeyshardServices[S]['handlers'][M]>['res'];
