/**
 * `npm run bench:encrypt`: audited Encrypt throughput against a bare gRPC baseline.
 *
 * 1. Starts a real dev cluster (3 custodians, threshold 2, temp dir), unseals it and creates a
 *    key. Every Encrypt is audited: the coordinator replies only after the audit sink's durable ack.
 * 2. Starts test/bench/echo-server.ts (own process): grpc-js, the same mutual TLS (cluster CA,
 *    coordinator-1's certificate, client certificate required), a unary Echo of the payload.
 * 3. Runs test/bench/load.ts (own process) against the echo server, then against Encrypt: 64
 *    calls in flight, 1 KiB payload, warm-up, then BENCH_SECONDS (default 10) of measurement.
 * 4. Prints a table and, as its LAST line, one JSON object:
 *    {"bench":"encrypt-1KiB-mtls-64","value":<encrypt calls/s>,"baseline":<echo calls/s>,"ratio",...}
 *
 * Environment:
 *   BENCH_SECONDS   measured seconds per run (default 10)
 *   BENCH_WARMUP    warm-up seconds per run (default 2)
 *   BENCH_CHANNELS  channels (= TLS connections) the load spreads over (default 4, the SDK's default; same for both)
 *   BENCH_ROUNDS    echo/encrypt pairs, alternating; the median run of each counts (default 3)
 *   BENCH_EXTRA=1   also runs diagnostic rows, to attribute the gap (none changes the JSON line):
 *                     echo+rpc          Echo through @keyshard/rpc unaryService (peer-cert principal,
 *                                       request id, error mapping), no observer
 *                     echo+rpc+audit    + the coordinator's auditObserver/AuditClient into this
 *                                       cluster's audit sink: the coordinator minus the keyring
 *                     ...[ack-sink]     the same, audited to ack-sink.ts (instant ack, no storage)
 *                     audit only        64 closed-loop AuditClient.record() callers into the sink
 *                   plus each echo server's own counters (server time, audit wait, batches).
 *   BENCH_KEEP=1    keep the cluster directory (logs) instead of deleting it (also BENCH_SECONDS,
 *                   BENCH_WARMUP, BENCH_CHANNELS, BENCH_ROUNDS, BENCH_CPU_PROF: bench-run.ts)
 *   BENCH_AUDIT=disk|tmpfs|ack  diagnostics (default disk = the real setup): tmpfs puts the audit
 *                   sink's log on /dev/shm (fdatasync is free); ack points the coordinator at
 *                   test/bench/ack-sink.ts, which acknowledges every batch at once and stores
 *                   nothing (audit-modes.ts; every bench takes it). The JSON line then carries
 *                   "diagnostic":"audit=<mode>".
 *   BENCH_CPU_PROF=DIR  run the coordinator, the audit sink and the echo servers under
 *                   `node --cpu-prof`; profiles (whole process lifetime) land in DIR/<process>/.
 *                   Summarize with `node --conditions=keyshard-source --import tsx test/bench/cpuprofile-summary.ts FILE`.
 * Every process it starts (cluster, echo servers, load generators) is stopped by PID, also on
 * error or SIGINT/SIGTERM. Exit code 1 if any measured call failed (the JSON line still prints).
 */
import { COORDINATOR } from '@keyshard/devcluster';
import { startAckSink } from './audit-modes.ts';
import { BenchRun } from './bench-run.ts';
import { log } from './common.ts';
import { compareWithEcho, startEcho, type EchoServer } from './echo-baseline.ts';
import { DEFAULT_PAYLOAD, runLoad, type Row } from './load-run.ts';

const EXTRA = process.env.BENCH_EXTRA === '1';
const KEY_NAME = 'bench-encrypt';

/** BENCH_EXTRA: the echo server through @keyshard/rpc, with and without auditing, and the sink alone. */
async function extraSteps(run: BenchRun): Promise<((suffix: string) => Promise<Row>)[]> {
  const cluster = run.cluster!;
  const ackSink = await startAckSink(run);
  const servers: EchoServer[] = [
    await startEcho(run, 'echo+rpc', 'rpc'),
    await startEcho(run, 'echo+rpc+audit', 'audit'),
    await startEcho(run, 'echo+rpc+audit[ack-sink]', 'audit', ackSink),
  ];
  return [
    ...servers.map((x) => (suffix: string) =>
      runLoad(run, {
        label: `${x.label}${suffix}`,
        target: 'echo',
        address: x.address,
        watch: { 'echo-server': () => x.child.pid, ...run.pids(...run.sinkIds) },
        probe: x.child,
      }),
    ),
    // The audit pipeline alone: 64 closed-loop record() callers straight into the sink (every
    // replica of a replicated one), as coordinator-1, over one Append stream like the coordinator.
    (suffix: string) =>
      runLoad(run, { label: `audit only${suffix}`, target: 'audit', address: run.auditProducer().address, watch: run.pids(...run.sinkIds), principal: COORDINATOR, channels: 1, args: run.auditFlags() }),
  ];
}

await BenchRun.main(async (run) => {
  await run.startCluster();
  await run.withKeyUser(async (app) => {
    const key = await app.createKey(KEY_NAME, { description: 'bench:encrypt' });
    log(`key ${key.name} (${key.id})`);
    // One audited Encrypt end to end before any load: fails fast if the path is broken.
    await app.encrypt(KEY_NAME, Buffer.alloc(DEFAULT_PAYLOAD), {});
  });
  return compareWithEcho(run, {
    bench: 'encrypt-1KiB-mtls-64',
    target: 'encrypt',
    keyName: KEY_NAME,
    payloadNote: 'plaintext',
    ratioTarget: 0.6,
    extraSteps: EXTRA ? await extraSteps(run) : [],
    probeEcho: EXTRA,
  });
});
