/**
 * `npm run bench:audit`: audit log append throughput with group commit, and what auditing
 * costs an Encrypt call. With one audit sink (default) or, with BENCH_AUDIT_REPLICAS=3, the
 * replicated log of services/audit-sink/REPLICATION.md (3 sink processes, Raft): parts 3 and 4
 * then go through the three replicas; parts 1 and 2 measure the one log engine every replica
 * runs, and are the same in both modes.
 *
 * 1. In process: BENCH_PRODUCERS concurrent producers append batches of BENCH_BATCH events to a
 *    real AuditLog (canonical JSON, RFC 6962 leaves and tree, one durable write per group, one
 *    Ed25519 checkpoint per group) for BENCH_SECONDS.
 * 2. Baseline, same run, same disk: a plain file append of the same record lines (same encoder)
 *    with one write + fdatasync per batch of BENCH_BATCH events (a log without group commit).
 * 3. Through the real sink process of part 4's cluster (mutual TLS, gRPC Append stream):
 *    AuditClient.recordAll from BENCH_PRODUCERS callers; informative (client and sink share the
 *    2 cores). With replicas: one AuditClient given every replica (`replicas`, every replica's
 *    checkpoint key), as a coordinator's `audit.replicas` configures it: batches go to the
 *    leader, acknowledged once a majority holds them; CPU per event summed over the replicas.
 * 4. Encrypt calls/s of an audited coordinator replica against, in the same cluster and run,
 *    a replica whose audit events are acknowledged by ack-sink.ts without being stored anywhere
 *    ("unaudited": exactly what that means, and what it still costs, is in audited-encrypt.ts),
 *    alternating, BENCH_ROUNDS times, with the load generator and settings of bench:encrypt
 *    (1 KiB, 64 in flight, BENCH_CHANNELS channels).
 * Last line, JSON: {"bench":"audit-append","value":<events/s, 1>,"baseline":<events/s, 2>,"ratio",
 *   "target":20000 (for value: "target_for":"value"), "audit_replicas":<1 or 3>, "sink_mtls":<3>,
 *   "encrypt_audited","encrypt_unaudited", "encrypt_ratio" (target encrypt_ratio_target = 0.85), ...}.
 * Targets (issue 5, set for one sink): value ≥ 20,000 events/s; encrypt_ratio ≥ 0.85. They are
 * checked in both modes (value is the engine's figure either way); no target is committed for
 * sink_mtls with replicas (issue 18's target is bench:encrypt's: audited Encrypt ≥ 0.6× echo).
 *
 *   npm run bench:audit                          # one sink
 *   BENCH_AUDIT_REPLICAS=3 npm run bench:audit   # three replicas
 *
 * Environment: BENCH_SECONDS (default 10; each of 1–3 and each Encrypt run), BENCH_WARMUP,
 * BENCH_ROUNDS, BENCH_CHANNELS, BENCH_KEEP, BENCH_CPU_PROF, BENCH_AUDIT_REPLICAS (bench-run.ts);
 * BENCH_BATCH (default 16), BENCH_PRODUCERS (default 32). BENCH_AUDIT does not apply (this
 * bench sets up both sides).
 * Every process it starts is stopped by PID, also on error or SIGINT/SIGTERM. Exit code 1 if
 * an Encrypt call failed (the JSON line still prints).
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AuditClient, loadCheckpointKeys, type AuditEvent } from '@keyshard/audit-client';
import { encodeEntry, encodeRecords } from '@keyshard/audit-log';
import { AuditLog } from '@keyshard/audit-sink/audit-log';
import { COORDINATOR } from '@keyshard/devcluster';
import { readTls } from '@keyshard/rpc';
import { signerFromKey } from '../../services/audit-sink/src/checkpoint-store.ts';
import { compareAuditedEncrypt, cpuPerCall, encryptTable, startAuditComparisonCluster } from './audited-encrypt.ts';
import { BenchRun, auditLabel, envNumber } from './bench-run.ts';
import { log } from './common.ts';
import { cpuWindow, logProfileWindow, monotonicUs } from './load-run.ts';

const BATCH = envNumber('BENCH_BATCH', 16, { integer: true });
const PRODUCERS = envNumber('BENCH_PRODUCERS', 32, { integer: true });
const APPEND_TARGET = 20_000;
const ENCRYPT_RATIO_TARGET = 0.85;

const event = (i: number): AuditEvent => ({
  id: randomUUID(),
  time: new Date().toISOString(),
  source: COORDINATOR,
  principal: 'app',
  operation: 'keys.Encrypt',
  key_id: 'k_AIoq0mFtHqvnipR8XTN68Q',
  ceremony_id: '',
  result: 'ok',
  code: '',
  request_id: randomUUID(),
  details: { version: String(1 + (i % 3)) },
});
const batch = () => Array.from({ length: BATCH }, (_, i) => event(i));

/** Runs `producers` closed loops of `step` for `seconds`; returns events/s. */
async function closedLoop(seconds: number, producers: number, step: () => Promise<number>): Promise<number> {
  const end = performance.now() + seconds * 1000;
  let events = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: producers }, async () => {
      while (performance.now() < end) {
        const n = await step(); // not `events += await step()`: that reads `events` before the await
        events += n;
      }
    }),
  );
  return events / ((performance.now() - t0) / 1000);
}

async function groupCommit(dir: string, seconds: number): Promise<{ rate: number; syncs: number; records: number }> {
  const log = await AuditLog.open(dir, { signer: signerFromKey(generateKeyPairSync('ed25519').privateKey) });
  const rate = await closedLoop(seconds, PRODUCERS, async () => (await log.append(batch())).count);
  const r = { rate, syncs: log.syncs, records: log.size };
  await log.close();
  return r;
}

async function plainAppend(file: string, seconds: number): Promise<number> {
  const fh = await fs.promises.open(file, 'a', 0o600);
  let index = 0;
  try {
    return await closedLoop(seconds, 1, async () => {
      const lines = encodeRecords(index, batch().map(encodeEntry));
      index += BATCH;
      await fh.write(lines);
      await fh.datasync();
      return BATCH;
    });
  } finally {
    await fh.close();
  }
}

/**
 * events/s through the cluster's sink as a coordinator reaches it (every replica of a replicated
 * log), the sink processes' CPU time per event (µs, summed over the replicas) and, with
 * replicas, the leader's alone (the replica that acknowledged the last batch).
 */
async function throughSink(run: BenchRun, seconds: number): Promise<{ rate: number; sinkUsPerEvent: number; leader?: string; leaderUsPerEvent?: number }> {
  const { layout } = run.cluster!;
  const sink = run.auditProducer();
  const client = new AuditClient({
    address: sink.address, replicas: sink.replicas, tls: readTls(layout.certs[COORDINATOR]!), source: COORDINATOR, timeoutMs: 10_000,
    checkpointKeys: loadCheckpointKeys(sink.checkpointPublicKeys),
  });
  const usPerEvent = (cpuPercent: number, rate: number) => Math.round(((cpuPercent / 100) * 1e6) / rate);
  try {
    const cpu = cpuWindow(run.pids(...run.sinkIds));
    const fromUs = monotonicUs();
    const rate = await closedLoop(seconds, PRODUCERS, async () => {
      await client.recordAll(batch());
      return BATCH;
    });
    const byProcess = cpu.stop();
    logProfileWindow(run, 'through the sink', fromUs, monotonicUs());
    const total = run.sinkIds.reduce((n, id) => n + (byProcess[id] ?? NaN), 0);
    const to = client.sendingTo;
    const leader = sink.replicas && to.acknowledged ? to.serverId : undefined;
    return { rate, sinkUsPerEvent: usPerEvent(total, rate), ...(leader ? { leader, leaderUsPerEvent: usPerEvent(byProcess[leader] ?? NaN, rate) } : {}) };
  } finally {
    await client.close();
  }
}

await BenchRun.main(async (run) => {
  const { seconds, warmup, channels } = run.settings;
  if (run.settings.audit !== 'disk') log(`BENCH_AUDIT=${run.settings.audit} ignored: this bench sets up the audited and the unaudited side itself`);
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'keyshard-bench-audit-log-'));
  run.onCleanup(() => (run.settings.keep ? log(`kept ${scratch}`) : fs.rmSync(scratch, { recursive: true, force: true })), { afterCluster: true });

  log(`in-process AuditLog, ${seconds} s`);
  const gc = await groupCommit(path.join(scratch, 'log'), seconds);
  log(`plain file append, fsync per batch, ${seconds} s`);
  const plain = await plainAppend(path.join(scratch, 'plain.log'), seconds);
  const { ackSink } = await startAuditComparisonCluster(run);
  log(`through the sink (${auditLabel(run.sinkIds.length)}), ${seconds} s`);
  const sink = await throughSink(run, seconds);
  const enc = await compareAuditedEncrypt(run, ackSink);

  const replicas = run.sinkIds.length;
  const row = (name: string, v: number, extra = '') => console.log(`${name.padEnd(56)} ${Math.round(v).toString().padStart(9)} events/s ${extra}`);
  console.log('');
  console.log(`audit append, ${seconds} s each, batches of ${BATCH}, ${PRODUCERS} producers, ${os.cpus().length} CPUs; audit log: ${auditLabel(replicas)}`);
  row('AuditLog, group commit (in process, one log)', gc.rate, `(${gc.records} records, ${gc.syncs} fsyncs: ${(gc.records / Math.max(1, gc.syncs)).toFixed(0)} events/fsync)`);
  row('plain file append, fsync per batch', plain);
  if (replicas > 1)
    row(`${replicas} sink replicas over mTLS (AuditClient with replicas)`, sink.rate,
      `(sink processes: ${sink.sinkUsPerEvent} µs CPU per event${sink.leader ? `, of which the leader ${sink.leader}: ${sink.leaderUsPerEvent}` : ''})`);
  else row('one sink process over mTLS (AuditClient)', sink.rate, `(sink process: ${sink.sinkUsPerEvent} µs CPU per event)`);
  console.log('');
  console.log(`Encrypt, audited (to ${auditLabel(replicas)}) vs unaudited replica (audited-encrypt.ts): 1024 B, 64 in flight, ${channels} channel(s), ${seconds} s measured after ${warmup} s warm-up`);
  console.log(encryptTable(enc.rows));
  const encRatio = enc.base.result.callsPerSec > 0 ? enc.value.result.callsPerSec / enc.base.result.callsPerSec : 0;
  console.log('');
  console.log(`append: ${Math.round(gc.rate)} events/s (target >= ${APPEND_TARGET}: ${gc.rate >= APPEND_TARGET ? 'met' : 'NOT met'})`);
  console.log(`encrypt audited/unaudited (medians) = ${encRatio.toFixed(3)} (target >= ${ENCRYPT_RATIO_TARGET}: ${encRatio >= ENCRYPT_RATIO_TARGET ? 'met' : 'NOT met'})`);
  if (enc.errors > 0) console.log(`ERRORS: ${enc.errors} Encrypt calls failed; the Encrypt figures are not valid`);
  const result = {
    bench: 'audit-append',
    value: Math.round(gc.rate),
    baseline: Math.round(plain),
    ratio: Number((gc.rate / plain).toFixed(2)),
    target: APPEND_TARGET,
    target_for: 'value',
    audit_replicas: replicas,
    sink_mtls: Math.round(sink.rate),
    sink_us_per_event: sink.sinkUsPerEvent,
    ...(sink.leader ? { sink_leader_us_per_event: sink.leaderUsPerEvent } : {}),
    events_per_fsync: Math.round(gc.records / Math.max(1, gc.syncs)),
    encrypt_audited: Math.round(enc.value.result.callsPerSec),
    encrypt_unaudited: Math.round(enc.base.result.callsPerSec),
    encrypt_ratio: Number(encRatio.toFixed(3)),
    encrypt_ratio_target: ENCRYPT_RATIO_TARGET,
    encrypt_p99_ms: enc.value.result.p99Ms,
    encrypt_unaudited_p99_ms: enc.base.result.p99Ms,
    encrypt_cpu_us_per_call: cpuPerCall(enc.value),
    encrypt_unaudited_cpu_us_per_call: cpuPerCall(enc.base),
    unit: 'events/s',
    errors: enc.errors,
  };
  console.log(JSON.stringify(result));
  return enc.errors > 0 ? 1 : 0;
});
