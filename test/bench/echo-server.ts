/**
 * Baseline server for the Encrypt benchmark: a grpc-js server with the coordinator's mutual
 * TLS setup (serverCredentials: client certificate required and verified against the cluster
 * CA) serving keyshard.bench.Echo, which returns the request's payload.
 *
 *   node --import tsx test/bench/echo-server.ts --ca CA --cert CERT --key KEY [--listen 127.0.0.1:0]
 *        [--wrap none|rpc|audit --audit-address HOST:PORT --audit-source coordinator-1]
 *
 * --wrap none (default) is the bare baseline. For attributing the coordinator's per-call cost:
 *   rpc    serves Echo through @keyshard/rpc `unaryService` (principal from the peer cert,
 *          request id, error mapping) with no observer;
 *   audit  the same plus the coordinator's `auditObserver`: every call is recorded in the dev
 *          cluster's audit sink and the reply waits for its durable ack, exactly like Encrypt.
 * Prints one JSON line {"listening":"host:port"} when ready; exits 0 on SIGTERM/SIGINT.
 */
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '@keyshard/config';
import { readTls, serverCredentials, unaryService } from '@keyshard/rpc';
import { AuditClient, auditObserver } from '@keyshard/audit-client';
import { echoService, parseFlags, required } from './common.ts';

const flags = parseFlags(process.argv.slice(2));
const tls = readTls({ ca: required(flags, 'ca'), cert: required(flags, 'cert'), key: required(flags, 'key') });
const listen = flags.listen ?? '127.0.0.1:0';
const wrap = flags.wrap ?? 'none';

const Echo = echoService();
// Same server options as the coordinator's.
const server = new grpc.Server({ 'grpc.max_receive_message_length': 8 * 1024 * 1024 });
let audit: AuditClient | undefined;

if (wrap === 'none') {
  server.addService(Echo.service, {
    Echo: (call: grpc.ServerUnaryCall<{ payload: Buffer }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      callback(null, { payload: call.request.payload });
    },
  });
} else if (wrap === 'rpc' || wrap === 'audit') {
  let observer;
  if (wrap === 'audit') {
    audit = new AuditClient({ address: required(flags, 'audit-address'), tls, source: required(flags, 'audit-source') });
    observer = auditObserver(audit, createLogger('bench-echo', 'warn'));
  }
  const handlers = { Echo: async (req: { payload: Buffer }) => ({ payload: req.payload }) };
  server.addService(Echo.service, unaryService(Echo.service, handlers, { name: 'bench', observer }));
} else {
  throw new Error(`--wrap must be none, rpc or audit (got ${wrap})`);
}

const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync(listen, serverCredentials(tls), (err, p) => (err ? reject(err) : resolve(p))),
);
const host = listen.slice(0, listen.lastIndexOf(':'));
process.stdout.write(`${JSON.stringify({ listening: `${host}:${port}`, wrap, pid: process.pid })}\n`);

const stop = () => {
  server.forceShutdown();
  void Promise.resolve(audit?.close()).finally(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
