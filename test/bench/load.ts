/**
 * Closed-loop load generator (its own process, so it does not share an event loop with what it
 * measures). Keeps `--concurrency` calls of a target (targets.ts) in flight, for a warm-up and
 * then `--seconds` of measurement; or, with `--count N`, exactly N calls (numbered 0 … N-1) and
 * no warm-up, measured from the first call to the last answer.
 *
 *   node --conditions=keyshard-source --import tsx test/bench/load.ts --target TARGET --ca CA --cert CERT --key KEY
 *        [--address HOST:PORT] [--concurrency 64] [--seconds 10] [--warmup 2] [--count N]
 *        [--payload 1024] [--channels 1] [target flags, see targets.ts and etcd-baseline.ts]
 *
 * --target audit (diagnostics) drives the audit sink directly through @keyshard/audit-client, the
 * way the coordinator does: each "call" is one record() awaited until the sink's durable ack; the
 * cert must be an appender's (e.g. coordinator-1) and --source its CN. --channels here is the
 * number of AuditClient instances (= Append streams, i.e. batches in flight). Reports batches.
 * --audit-key PEM[,PEM…] the sink's checkpoint keys; a replicated log: --audit-replicas
 * ID=HOST:PORT,… (every replica; --address is the one tried first).
 *
 * Throughput counts calls that complete inside the measurement window; latency is per call
 * (issue to completion) for those calls. Failed calls count as errors (with their status codes),
 * also those that fail after the window, and not as calls; failures during the warm-up are
 * counted apart (warmupErrors). Prints {"phase":"measure"} and {"phase":"done"} around the
 * window, then one JSON line:
 *   {"calls","seconds","callsPerSec","p50Ms","p99Ms","errors", ...details}
 * and exits 0 (also when errors > 0: the caller decides; the count is in the line).
 */
import { randomBytes } from 'node:crypto';
import { isServiceError, statusName } from '@keyshard/rpc';
import { parseFlags, required } from './common.ts';
import { openTarget } from './targets.ts';

const flags = parseFlags(process.argv.slice(2));
const targetName = required(flags, 'target');
const concurrency = Number(flags.concurrency ?? 64);
const count = flags.count === undefined ? undefined : Number(flags.count);
const seconds = Number(flags.seconds ?? 10);
const warmup = count === undefined ? Number(flags.warmup ?? 2) : 0;
const payloadBytes = Number(flags.payload ?? 1024);
const channels = Number(flags.channels ?? 1);

const target = await openTarget(targetName, flags, randomBytes(payloadBytes));

const t0 = performance.now();
const measureFrom = t0 + warmup * 1000;
let measureTo = count === undefined ? measureFrom + seconds * 1000 : Infinity;
// Phase markers, so the parent can sample server CPU over (about) the measured window; each
// once, also when the calls end before a timer fires (a target that computes in this process).
const printed = new Set<string>();
const phase = (name: 'measure' | 'done') => {
  if (!printed.has(name)) process.stdout.write(`{"phase":"${name}"}\n`);
  printed.add(name);
};
setTimeout(() => phase('measure'), measureFrom - t0);
if (count === undefined) setTimeout(() => phase('done'), measureTo - t0);
let latencies = new Float64Array(1 << 16);
let calls = 0;
let errors = 0;
let warmupCalls = 0;
let warmupErrors = 0;
let issued = 0;
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

async function worker(index: number): Promise<void> {
  for (;;) {
    const start = performance.now();
    if (start >= measureTo || (count !== undefined && issued >= count)) return;
    let err: unknown;
    try {
      await target.call(index, issued++);
    } catch (e) {
      err = e;
    }
    const end = performance.now();
    const measured = end >= measureFrom && end <= measureTo;
    if (err === undefined) {
      if (measured) record(end - start);
      else if (end < measureFrom) warmupCalls++;
    } else {
      // A call that fails after the window (one stuck until its deadline) is still a failure.
      const code = isServiceError(err) ? statusName(err.code) : 'CLIENT';
      if (end < measureFrom) warmupErrors++;
      else {
        errors++;
        codes[code] = (codes[code] ?? 0) + 1;
        firstError ??= `${code}: ${isServiceError(err) ? err.details : (err as Error).message}`;
      }
    }
  }
}

await Promise.all(Array.from({ length: concurrency }, (_, i) => worker(i)));
if (count !== undefined) measureTo = performance.now();
phase('measure');
phase('done');
const details = target.details?.(calls + warmupCalls) ?? {};
await target.close();

const sorted = latencies.subarray(0, calls).sort();
const pct = (p: number) => (calls === 0 ? NaN : sorted[Math.min(calls - 1, Math.ceil((p / 100) * calls) - 1)]!);
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const measuredSeconds = count === undefined ? seconds : (measureTo - measureFrom) / 1000;
const cpu = process.cpuUsage();
const result = {
  target: targetName,
  calls,
  seconds: round(measuredSeconds, 3),
  callsPerSec: round(calls / measuredSeconds, 1),
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
  ...details,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
