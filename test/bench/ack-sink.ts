/**
 * Diagnostics for test/bench/encrypt.ts (BENCH_AUDIT=ack): a stand-in audit sink that
 * acknowledges every Append batch at once, storing nothing. Pointing the coordinator at it
 * shows what Encrypt would do if the durable audit round trip cost nothing. Same mutual TLS
 * as the real sink (the audit-sink certificate, client certificate required).
 *
 *   node --import tsx test/bench/ack-sink.ts --ca CA --cert CERT --key KEY [--listen 127.0.0.1:0]
 * Prints {"listening":"host:port"} when ready; exits 0 on SIGTERM/SIGINT.
 */
import * as grpc from '@grpc/grpc-js';
import { keyshardProto, readTls, serverCredentials, serverOptions } from '@keyshard/rpc';
import { parseFlags, required } from './common.ts';

const flags = parseFlags(process.argv.slice(2));
const tls = readTls({ ca: required(flags, 'ca'), cert: required(flags, 'cert'), key: required(flags, 'key') });
const listen = flags.listen ?? '127.0.0.1:0';
const server = new grpc.Server(serverOptions(16 * 1024 * 1024));
let index = 0;
server.addService(keyshardProto().AuditService.service, {
  Append(call: grpc.ServerDuplexStream<{ events?: unknown[]; batch?: string }, unknown>) {
    call.on('data', (req) => {
      const count = req.events?.length ?? 0;
      call.write({ batch: req.batch ?? '0', first_index: String(index), count: String(count), head_hash: '' });
      index += count;
    });
    call.on('end', () => call.end());
  },
});
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync(listen, serverCredentials(tls), (err, p) => (err ? reject(err) : resolve(p))),
);
process.stdout.write(`${JSON.stringify({ listening: `${listen.slice(0, listen.lastIndexOf(':'))}:${port}` })}\n`);
const stop = () => {
  server.forceShutdown();
  process.exit(0);
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
