/**
 * Closed-loop load generator (its own process, so it does not share an event loop with what it
 * measures). Keeps `--concurrency` unary calls in flight, spread round-robin over `--channels`
 * channels (each with its own subchannel pool, i.e. its own TCP+TLS connection), for a warm-up
 * and then `--seconds` of measurement.
 *
 *   node --import tsx test/bench/load.ts --target encrypt|echo|audit --address HOST:PORT
 *        --ca CA --cert CERT --key KEY [--keyname NAME] [--concurrency 64] [--seconds 10]
 *        [--warmup 2] [--payload 1024] [--channels 1]
 *
 * --target audit (diagnostics) drives the audit sink directly through @keyshard/audit-client, the
 * way the coordinator does: each "call" is one record() awaited until the sink's durable ack; the
 * cert must be an appender's (e.g. coordinator-1) and --source its CN. --channels here is the
 * number of AuditClient instances (= Append streams, i.e. batches in flight). Reports batches.
 *
 * Calls are made like the SDK makes them (`makeClient` + `unaryCall`: mutual TLS, CHANNEL_OPTIONS,
 * x-request-id metadata, 10 s deadline). Throughput counts calls that complete inside the
 * measurement window; latency is per call (issue to completion) for those calls. Failed calls
 * count as errors (with their status codes) and not as calls.
 *
 * Prints one JSON line:
 *   {"calls","seconds","callsPerSec","p50Ms","p99Ms","errors", ...details}
 * and exits 0 (also when errors > 0: the caller decides; the count is in the line).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { isServiceError, keyshardProto, makeClient, readTls, statusName, unaryCall } from '@keyshard/rpc';
import { AuditClient } from '@keyshard/audit-client';
import { echoService, parseFlags, required } from './common.ts';

const flags = parseFlags(process.argv.slice(2));
const target = required(flags, 'target');
const address = required(flags, 'address');
const tls = readTls({ ca: required(flags, 'ca'), cert: required(flags, 'cert'), key: required(flags, 'key') });
const concurrency = Number(flags.concurrency ?? 64);
const seconds = Number(flags.seconds ?? 10);
const warmup = Number(flags.warmup ?? 2);
const payloadBytes = Number(flags.payload ?? 1024);
const channels = Number(flags.channels ?? 1);

let Ctor: grpc.ServiceClientConstructor;
let method: string;
let request: unknown;
const payload = randomBytes(payloadBytes);
if (target === 'encrypt') {
  Ctor = keyshardProto().KeyService;
  method = 'Encrypt';
  request = { key: required(flags, 'keyname'), plaintext: payload, context: {} };
} else if (target === 'echo') {
  Ctor = echoService();
  method = 'Echo';
  request = { payload };
} else if (target === 'audit') {
  Ctor = keyshardProto().AuditService;
  method = '';
  request = undefined;
} else {
  throw new Error(`--target must be encrypt, echo or audit (got ${target})`);
}

// A local subchannel pool per channel: otherwise grpc-js would share one connection between
// channels with equal target, credentials and options.
const clients =
  target === 'audit'
    ? []
    : Array.from({ length: channels }, () => makeClient<grpc.Client>(Ctor, address, tls, { 'grpc.use_local_subchannel_pool': 1 }));
await Promise.all(
  clients.map((c) => new Promise<void>((resolve, reject) => c.waitForReady(Date.now() + 10_000, (e) => (e ? reject(e) : resolve())))),
);
const audits =
  target === 'audit'
    ? Array.from({ length: channels }, () => new AuditClient({ address, tls, source: required(flags, 'source'), timeoutMs: 10_000 }))
    : [];
const auditEvent = { principal: 'admin', operation: 'bench.Audit', result: 'ok', key_id: 'k_AAAAAAAAAAAAAAAAAAAAAA', details: { version: '1' } };

const t0 = performance.now();
const measureFrom = t0 + warmup * 1000;
const measureTo = measureFrom + seconds * 1000;
// Phase markers, so the parent can sample server CPU over (about) the measured window.
setTimeout(() => process.stdout.write('{"phase":"measure"}\n'), measureFrom - t0);
setTimeout(() => process.stdout.write('{"phase":"done"}\n'), measureTo - t0);
let latencies = new Float64Array(1 << 16);
let calls = 0;
let errors = 0;
let warmupCalls = 0;
let warmupErrors = 0;
const codes: Record<string, number> = {};
let firstError: string | undefined;

function record(latency: number): void {
  if (calls === latencies.length) {
    const bigger = new Float64Array(latencies.length * 2);
    bigger.set(latencies);
    latencies = bigger;
  }
  latencies[calls++] = latency;
}

async function worker(client: grpc.Client | undefined, audit: AuditClient | undefined): Promise<void> {
  for (;;) {
    const start = performance.now();
    if (start >= measureTo) return;
    let err: unknown;
    try {
      if (audit) await audit.record({ ...auditEvent, request_id: randomUUID() });
      else await unaryCall(client!, method, request, { timeoutMs: 10_000 });
    } catch (e) {
      err = e;
    }
    const end = performance.now();
    const measured = end >= measureFrom && end <= measureTo;
    if (err === undefined) {
      if (measured) record(end - start);
      else if (end < measureFrom) warmupCalls++;
    } else {
      const code = isServiceError(err) ? statusName(err.code) : 'CLIENT';
      if (measured) {
        errors++;
        codes[code] = (codes[code] ?? 0) + 1;
        firstError ??= `${code}: ${isServiceError(err) ? err.details : (err as Error).message}`;
      } else if (end < measureFrom) warmupErrors++;
    }
  }
}

await Promise.all(
  Array.from({ length: concurrency }, (_, i) => worker(clients[i % clients.length], audits[i % audits.length])),
);
for (const c of clients) c.close();
// AuditClient numbers its batches (private field; diagnostics only): events per batch.
const batches = audits.reduce((n, a) => n + (a as unknown as { batchSeq: number }).batchSeq, 0);
await Promise.all(audits.map((a) => a.close()));

const sorted = latencies.subarray(0, calls).sort();
const pct = (p: number) => (calls === 0 ? NaN : sorted[Math.min(calls - 1, Math.ceil((p / 100) * calls) - 1)]!);
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const cpu = process.cpuUsage();
const result = {
  target,
  calls,
  seconds,
  callsPerSec: round(calls / seconds, 1),
  p50Ms: round(pct(50)),
  p99Ms: round(pct(99)),
  errors,
  ...(errors > 0 ? { errorCodes: codes, firstError } : {}),
  warmupCalls,
  warmupErrors,
  concurrency,
  channels,
  payloadBytes,
  loadCpuSec: round((cpu.user + cpu.system) / 1e6, 1), // whole process, warm-up included
  ...(target === 'audit' ? { auditBatches: batches, eventsPerBatch: round((calls + warmupCalls) / Math.max(1, batches), 1) } : {}),
};
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
