/**
 * Baseline server for the Encrypt benchmark: a grpc-js server with the coordinator's mutual
 * TLS setup (serverCredentials: client certificate required and verified against the cluster
 * CA) serving keyshard.bench.Echo, which returns the request's payload.
 *
 *   node --conditions=keyshard-source --import tsx test/bench/echo-server.ts --ca CA --cert CERT --key KEY [--listen 127.0.0.1:0]
 *        [--wrap none|rpc|audit --audit-address HOST:PORT --audit-source coordinator-1 --audit-key SINK-PUBLIC-KEY-PEM[,PEM…]
 *         [--audit-replicas ID=HOST:PORT,…]]   (a replicated log: every replica, as a coordinator's audit.replicas)
 *
 * --wrap none (default) is the bare baseline. For attributing the coordinator's per-call cost:
 *   rpc    serves Echo through @keyshard/rpc `unaryService` (principal from the peer cert,
 *          request id, error mapping) with no observer;
 *   audit  the same plus the coordinator's `auditObserver`: every call is recorded in the dev
 *          cluster's audit sink and the reply waits for its durable ack, exactly like Encrypt.
 * Prints one JSON line {"listening":"host:port"} when ready; exits 0 on SIGTERM/SIGINT.
 * Diagnostics: SIGUSR1 resets its counters, SIGUSR2 prints one JSON line of them since the reset:
 * server time per call (handler entry to reply), audit record() time, Append batches, event-loop delay.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '@keyshard/config';
import { readTls, serverCredentials, serverOptions, unaryService, type Observer } from '@keyshard/rpc';
import { AuditClient, auditObserver, loadCheckpointKeys, type AuditRecorder } from '@keyshard/audit-client';
import { auditSinkFromFlags, echoService, parseFlags, required } from './common.ts';

const flags = parseFlags(process.argv.slice(2));
const tls = readTls({ ca: required(flags, 'ca'), cert: required(flags, 'cert'), key: required(flags, 'key') });
const listen = flags.listen ?? '127.0.0.1:0';
const wrap = flags.wrap ?? 'none';

const Echo = echoService();
// Same server options as the coordinator's (@keyshard/rpc serverOptions).
const server = new grpc.Server(serverOptions());
let recorder: AuditRecorder | undefined;
let batchSeq = () => 0;
let closeAudit = async () => {};

// Diagnostics (see header): a few performance.now() calls per request.
const stats = { serverMs: [] as number[], auditMs: [] as number[], batchRttMs: [] as number[], batchesAtReset: 0 };

// Batch round trip (stream.write of an Append batch to the 'data' event of its ack), measured by
// wrapping AuditClient's private pump/connect at runtime. Diagnostics only.
{
  type Internals = { inFlight?: { batch: string }; pump(): void; connect(): NodeJS.EventEmitter };
  const proto = AuditClient.prototype as unknown as Internals;
  const writtenBy = new WeakMap<Internals, Map<string, number>>();
  const writtenOf = (c: Internals) => writtenBy.get(c) ?? (writtenBy.set(c, new Map()), writtenBy.get(c)!);
  const pump = proto.pump;
  proto.pump = function (this: Internals) {
    const before = this.inFlight?.batch;
    pump.call(this);
    const after = this.inFlight?.batch;
    if (after !== undefined && after !== before) writtenOf(this).set(`${after}`, performance.now());
  };
  const connect = proto.connect;
  proto.connect = function (this: Internals) {
    const s = connect.call(this);
    const written = writtenOf(this);
    s.prependListener('data', (res: { batch: string }) => {
      const t = written.get(res.batch);
      if (t !== undefined) stats.batchRttMs.push(performance.now() - t);
      written.delete(res.batch);
    });
    return s;
  };
}
const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();
process.on('SIGUSR1', () => {
  stats.serverMs = [];
  stats.auditMs = [];
  stats.batchRttMs = [];
  stats.batchesAtReset = batchSeq();
  loopDelay.reset();
});
process.on('SIGUSR2', () => {
  const q = (xs: number[], p: number) => {
    if (xs.length === 0) return null;
    const s = [...xs].sort((a, b) => a - b);
    return Math.round(s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! * 100) / 100;
  };
  const batches = batchSeq() - stats.batchesAtReset;
  const out = {
    stats: wrap,
    calls: stats.serverMs.length,
    serverP50Ms: q(stats.serverMs, 50),
    serverP99Ms: q(stats.serverMs, 99),
    auditP50Ms: q(stats.auditMs, 50),
    auditP99Ms: q(stats.auditMs, 99),
    batchRttP50Ms: q(stats.batchRttMs, 50),
    batchRttP99Ms: q(stats.batchRttMs, 99),
    batches,
    eventsPerBatch: batches ? Math.round((stats.auditMs.length / batches) * 10) / 10 : null,
    loopDelayP50Ms: Math.round(loopDelay.percentile(50) / 1e4) / 100,
    loopDelayP99Ms: Math.round(loopDelay.percentile(99) / 1e4) / 100,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
});

if (wrap === 'none') {
  server.addService(Echo.service, {
    Echo: (call: grpc.ServerUnaryCall<{ payload: Buffer }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      stats.serverMs.push(0);
      callback(null, { payload: call.request.payload });
    },
  });
} else if (wrap === 'rpc' || wrap === 'audit') {
  let observer: Observer | undefined;
  if (wrap === 'audit') {
    const sink = auditSinkFromFlags(flags);
    const a = new AuditClient({ address: sink.address, replicas: sink.replicas, tls, source: required(flags, 'audit-source'), checkpointKeys: loadCheckpointKeys(sink.keyFiles) });
    recorder = a;
    batchSeq = () => (a as unknown as { batchSeq: number }).batchSeq;
    closeAudit = () => a.close();
    const inner = auditObserver(recorder!, createLogger('bench-echo', 'warn'));
    observer = async (o) => {
      const t = performance.now();
      await inner(o);
      stats.auditMs.push(performance.now() - t);
    };
  }
  const handlers = { Echo: async (req: { payload: Buffer }) => ({ payload: req.payload }) };
  // Audited as `keys.Echo`: the bench appends as a coordinator, whose appender scope is keys.* and the like (@keyshard/audit-log appender-scope.ts).
  const impl = unaryService(Echo.service, handlers, { name: 'keys', observer });
  const echo = impl.Echo as (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => void;
  server.addService(Echo.service, {
    Echo: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const t = performance.now();
      echo(call, (err, res) => {
        stats.serverMs.push(performance.now() - t);
        cb(err, res);
      });
    },
  });
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
  void closeAudit().finally(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
