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
 *   BENCH_KEEP=1    keep the cluster directory (logs) instead of deleting it
 *   BENCH_AUDIT=disk|tmpfs|ack  diagnostics (default disk = the real setup): tmpfs puts the audit
 *                   sink's log on /dev/shm (fdatasync is free); ack points the coordinator at
 *                   test/bench/ack-sink.ts, which acknowledges every batch at once and stores
 *                   nothing. The JSON line then carries "diagnostic":"audit=<mode>".
 *   BENCH_CPU_PROF=DIR  run the coordinator, the audit sink and the echo servers under
 *                   `node --cpu-prof`; profiles (whole process lifetime) land in DIR/<process>/.
 *                   Summarize with `node --import tsx test/bench/cpuprofile-summary.ts FILE`.
 * Every process it starts (cluster, echo servers, load generators) is stopped by PID, also on
 * error or SIGINT/SIGTERM. Exit code 1 if any measured call failed (the JSON line still prints).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ADMIN, COORDINATOR, DevCluster } from '@keyshard/devcluster';
import { BENCH_DIR, Child } from './common.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
// Default: the SDK's default number of connections (KeyshardClient `connections`), for both targets.
const CHANNELS = Number(process.env.BENCH_CHANNELS ?? 4);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3); // medians of 3 alternating rounds damp the noise of a shared machine
const EXTRA = process.env.BENCH_EXTRA === '1';
let keep = process.env.BENCH_KEEP === '1'; // also set when the run fails, for the logs
const CONCURRENCY = 64;
const PAYLOAD = 1024;
const KEY_NAME = 'bench-encrypt';
const AUDIT_MODE = process.env.BENCH_AUDIT ?? 'disk';
if (!['disk', 'tmpfs', 'ack'].includes(AUDIT_MODE)) throw new Error('BENCH_AUDIT must be disk, tmpfs or ack');
const CPU_PROF = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;
const profArgs = (name: string) => (CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${path.join(CPU_PROF, name)}`] : []);

for (const [name, v] of Object.entries({ BENCH_SECONDS: SECONDS, BENCH_WARMUP: WARMUP, BENCH_CHANNELS: CHANNELS, BENCH_ROUNDS: ROUNDS }))
  if (!Number.isFinite(v) || v < (name === 'BENCH_WARMUP' ? 0 : 1)) throw new Error(`${name} must be a positive number`);

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

interface LoadResult {
  target: string;
  calls: number;
  seconds: number;
  callsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  errorCodes?: Record<string, number>;
  firstError?: string;
  warmupErrors: number;
  loadCpuSec: number;
  eventsPerBatch?: number;
  auditBatches?: number;
}

interface Row {
  label: string;
  result: LoadResult;
  cpu: Record<string, number>; // process name -> % of one core over the measured window
  serverStats?: Record<string, unknown>; // echo servers' own counters (BENCH_EXTRA)
}

const children = new Set<Child>();
let cluster: DevCluster | undefined;
let dir: string | undefined;
let shmDir: string | undefined;
let cleaning: Promise<void> | undefined;

function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    await Promise.allSettled([...children].map((c) => c.stop()));
    children.clear();
    if (cluster) await cluster.stop().catch((e) => log(`stopping the cluster: ${(e as Error).message}`));
    if (shmDir) rmSync(shmDir, { recursive: true, force: true });
    if (dir) {
      if (keep) log(`kept ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    }
  })());
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    interrupted = true;
    log(`${sig}: stopping everything`);
    void cleanup().finally(() => process.exit(130));
  });

function spawnChild(name: string, file: string, args: string[], nodeArgs: string[] = []): Child {
  const c = new Child(name, path.join(BENCH_DIR, file), args, { nodeArgs });
  children.add(c);
  void c.exited.then(() => children.delete(c));
  return c;
}

/** utime+stime of a process in clock ticks (100/s on Linux), or undefined when it is gone. */
function cpuTicks(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return undefined;
  }
}

/** Clock ticks of the whole host from /proc/stat: process time (user+nice+system) and irq+softirq+steal. */
function hostTicks(): { proc: number; irq: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  return { proc: f[0]! + f[1]! + f[2]!, irq: f[5]! + f[6]! + f[7]! };
}

async function runLoad(
  label: string,
  target: 'encrypt' | 'echo' | 'audit',
  address: string,
  watch: Record<string, () => number | undefined>,
  opts: { principal?: string; channels?: number; probe?: Child } = {},
): Promise<Row> {
  const c = cluster!;
  const principal = opts.principal ?? ADMIN;
  const channels = opts.channels ?? CHANNELS;
  const certs = c.layout.certs[principal]!;
  log(`load: ${label} (${address}), ${CONCURRENCY} in flight over ${channels} channel(s), ${WARMUP} s warm-up + ${SECONDS} s`);
  const load = spawnChild(`load ${label}`, 'load.ts', [
    '--target', target, '--address', address,
    '--ca', certs.ca, '--cert', certs.cert, '--key', certs.key,
    '--keyname', KEY_NAME, '--source', principal,
    '--concurrency', String(CONCURRENCY), '--seconds', String(SECONDS), '--warmup', String(WARMUP),
    '--payload', String(PAYLOAD), '--channels', String(channels),
  ]);
  const pids = { ...watch, load: () => load.pid };
  await load.waitFor(/"phase":"measure"/, (WARMUP + 30) * 1000);
  if (opts.probe?.pid) process.kill(opts.probe.pid, 'SIGUSR1');
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuTicks(pid())]));
  const hostBefore = hostTicks();
  const t0 = performance.now();
  await load.waitFor(/"phase":"done"/, (SECONDS + 30) * 1000);
  const after = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuTicks(pid())]));
  const hostAfter = hostTicks();
  const wall = (performance.now() - t0) / 1000;
  let serverStats: Record<string, unknown> | undefined;
  if (opts.probe?.pid) {
    const from = opts.probe.lines.length;
    process.kill(opts.probe.pid, 'SIGUSR2');
    serverStats = JSON.parse(await opts.probe.waitFor(/"stats"/, 10_000, from)) as Record<string, unknown>;
  }
  const resultLine = await load.waitFor(/"callsPerSec"/, 30_000);
  const { code } = await load.exited;
  if (code !== 0) throw new Error(`load generator for ${label} exited with ${code}\n${load.stderr}`);
  const cpu: Record<string, number> = {};
  for (const k of Object.keys(pids)) {
    const a = before[k];
    const b = after[k];
    if (a !== undefined && b !== undefined) cpu[k] = Math.round(((b - a) / 100 / wall) * 100);
  }
  // Everything else on the host (other processes, other people's work): the run's noise;
  // and interrupt/softirq/steal time, which no process is charged for.
  const ours = Object.values(cpu).reduce((n, x) => n + x, 0);
  cpu.other = Math.max(0, Math.round(((hostAfter.proc - hostBefore.proc) / 100 / wall) * 100) - ours);
  cpu['irq+steal'] = Math.round(((hostAfter.irq - hostBefore.irq) / 100 / wall) * 100);
  const result = JSON.parse(resultLine) as LoadResult;
  if (result.errors > 0) log(`WARNING: ${label}: ${result.errors} failed calls ${JSON.stringify(result.errorCodes)}; first: ${result.firstError}`);
  if (result.warmupErrors > 0) log(`WARNING: ${label}: ${result.warmupErrors} calls failed during the warm-up`);
  return { label, result, cpu, serverStats };
}

async function startEcho(
  label: string,
  wrap: 'none' | 'rpc' | 'audit',
  audit: { address?: string } = {},
): Promise<{ label: string; address: string; child: Child }> {
  const c = cluster!;
  // The coordinator's own certificate and the cluster CA: the same TLS setup as the coordinator.
  const certs = c.layout.certs[COORDINATOR]!;
  const args = ['--ca', certs.ca, '--cert', certs.cert, '--key', certs.key, '--wrap', wrap];
  if (wrap === 'audit')
    args.push(
      '--audit-address', audit.address ?? `127.0.0.1:${c.layout.plan.ports.audit}`,
      '--audit-source', COORDINATOR,
    );
  const child = spawnChild(`echo-server ${label}`, 'echo-server.ts', args, profArgs(label.replace(/[^\w+-]+/g, '_')));
  const line = await child.waitFor(/"listening"/);
  return { label, address: (JSON.parse(line) as { listening: string }).listening, child };
}

async function startAckSink(): Promise<string> {
  const certs = cluster!.layout.certs['audit-sink']!;
  const ack = spawnChild('ack-sink', 'ack-sink.ts', ['--ca', certs.ca, '--cert', certs.cert, '--key', certs.key]);
  return (JSON.parse(await ack.waitFor(/"listening"/)) as { listening: string }).listening;
}

function median(rows: Row[]): Row {
  const sorted = [...rows].sort((a, b) => a.result.callsPerSec - b.result.callsPerSec);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

function table(rows: Row[]): string {
  const cpuKeys = [...new Set(rows.flatMap((r) => Object.keys(r.cpu)))];
  const head = ['run', 'calls/s', 'p50 ms', 'p99 ms', 'errors', ...cpuKeys.map((k) => `cpu% ${k}`)];
  const body = rows.map((r) => [
    r.label,
    r.result.callsPerSec.toFixed(1),
    r.result.p50Ms.toFixed(2),
    r.result.p99Ms.toFixed(2),
    String(r.result.errors),
    ...cpuKeys.map((k) => (r.cpu[k] === undefined ? '-' : String(r.cpu[k]))),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [fmt(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(fmt)].join('\n');
}

/** CPU time per successful call, by process (µs): less sensitive to other load on the host. */
function cpuPerCall(rows: Row[]): string {
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r.cpu)))].filter((k) => k !== 'other' && k !== 'irq+steal');
  const head = ['run', ...keys.map((k) => `µs/call ${k}`)];
  const body = rows.map((r) => [
    r.label,
    ...keys.map((k) => (r.cpu[k] === undefined || r.result.callsPerSec === 0 ? '-' : String(Math.round((r.cpu[k]! / 100 / r.result.callsPerSec) * 1e6)))),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [fmt(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(fmt)].join('\n');
}

async function main(): Promise<number> {
  dir = mkdtempSync(path.join(os.tmpdir(), 'keyshard-bench-'));
  log(`cluster in ${dir}`);
  cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2, progress: log });
  if (CPU_PROF) {
    // Diagnostics only: DevCluster runs services as `node --import tsx main.ts`; put --cpu-prof first.
    for (const name of [COORDINATOR, 'audit-sink']) cluster.process(name).spec.args.unshift(...profArgs(name));
    log(`CPU profiles of ${COORDINATOR}, audit-sink and echo servers go to ${CPU_PROF}`);
  }
  if (AUDIT_MODE !== 'disk') {
    // Diagnostics: rewrite this temp cluster's service configs before anything starts.
    const edit = (name: string, f: (cfg: Record<string, any>) => void) => {
      const file = cluster!.layout.configFile(name);
      const cfg = JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>;
      f(cfg);
      writeFileSync(file, JSON.stringify(cfg, null, 2));
    };
    if (AUDIT_MODE === 'tmpfs') {
      shmDir = mkdtempSync('/dev/shm/keyshard-bench-audit-');
      edit('audit-sink', (cfg) => (cfg.dataDir = shmDir));
      log(`DIAGNOSTIC: audit log on tmpfs (${shmDir})`);
    } else {
      const address = await startAckSink();
      edit(COORDINATOR, (cfg) => (cfg.audit.address = address));
      log(`DIAGNOSTIC: the coordinator audits to an instant-ack stand-in (${address}), not the real sink`);
    }
  }
  await cluster.start();
  await cluster.bootstrap();
  const admin = cluster.client();
  try {
    const key = await admin.createKey(KEY_NAME, { description: 'bench:encrypt' });
    log(`key ${key.name} (${key.id})`);
    // One audited Encrypt end to end before any load: fails fast if the path is broken.
    await admin.encrypt(KEY_NAME, Buffer.alloc(PAYLOAD), {});
  } finally {
    admin.close();
  }

  const echo = await startEcho('echo', 'none');
  const proc = (name: string) => () => cluster!.process(name).pid;
  const clusterPids = { coordinator: proc(COORDINATOR), 'audit-sink': proc('audit-sink'), etcd: proc('etcd') };
  const extras = [];
  if (EXTRA) {
    const ackSink = await startAckSink();
    extras.push(await startEcho('echo+rpc', 'rpc'));
    extras.push(await startEcho('echo+rpc+audit', 'audit'));
    extras.push(await startEcho('echo+rpc+audit[ack-sink]', 'audit', { address: ackSink }));
  }

  const rows: Row[] = [];
  const echoRows: Row[] = [];
  const encryptRows: Row[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const suffix = ROUNDS > 1 ? ` #${r}` : '';
    const e = await runLoad(`echo${suffix}`, 'echo', echo.address, { 'echo-server': () => echo.child.pid }, EXTRA ? { probe: echo.child } : {});
    echoRows.push(e);
    rows.push(e);
    for (const x of extras) {
      const watch = { 'echo-server': () => x.child.pid, 'audit-sink': clusterPids['audit-sink'] };
      rows.push(await runLoad(`${x.label}${suffix}`, 'echo', x.address, watch, { probe: x.child }));
    }
    if (EXTRA) {
      // The audit pipeline alone: 64 closed-loop record() callers straight into the sink, as
      // coordinator-1, over one Append stream like the coordinator.
      const sinkAddress = `127.0.0.1:${cluster.layout.plan.ports.audit}`;
      rows.push(
        await runLoad(`audit only${suffix}`, 'audit', sinkAddress, { 'audit-sink': clusterPids['audit-sink'] }, { principal: COORDINATOR, channels: 1 }),
      );
    }
    const x = await runLoad(`encrypt${suffix}`, 'encrypt', cluster.coordinatorAddress, clusterPids);
    encryptRows.push(x);
    rows.push(x);
  }

  const base = median(echoRows).result;
  const enc = median(encryptRows).result;
  // Failed calls of the runs the JSON line is made of (diagnostic rows warn on their own).
  const errors = [...echoRows, ...encryptRows].reduce((n, r) => n + r.result.errors, 0);
  const ratio = base.callsPerSec > 0 ? enc.callsPerSec / base.callsPerSec : 0;

  console.log('');
  console.log(`Encrypt vs bare gRPC echo: ${PAYLOAD} B payload, mutual TLS, ${CONCURRENCY} in flight, ${CHANNELS} channel(s), ` +
    `${SECONDS} s measured after ${WARMUP} s warm-up, ${os.cpus().length} CPUs`);
  console.log('(cpu% = share of one core used by each process during the measured window; other = other processes on the host, irq+steal = interrupts/softirq/steal)');
  console.log(table(rows));
  console.log('');
  console.log(cpuPerCall(rows));
  console.log('');
  for (const r of rows)
    if (r.result.eventsPerBatch !== undefined)
      console.log(`${r.label}: ${r.result.auditBatches} Append batches, ${r.result.eventsPerBatch} events per batch, ` +
        `${((SECONDS + WARMUP) * 1000 / Math.max(1, r.result.auditBatches ?? 0)).toFixed(2)} ms per batch`);
  for (const r of rows) if (r.serverStats) console.log(`${r.label} server side: ${JSON.stringify(r.serverStats)}`);
  if (rows.some((r) => r.result.eventsPerBatch !== undefined || r.serverStats)) console.log('');
  console.log(`ratio encrypt/echo = ${ratio.toFixed(3)} (target >= 0.6: ${ratio >= 0.6 ? 'met' : 'NOT met'})`);
  if (errors > 0) console.log(`ERRORS: ${errors} measured calls failed; the numbers above are not valid`);
  console.log(
    JSON.stringify({
      bench: `encrypt-1KiB-mtls-${CONCURRENCY}`,
      value: enc.callsPerSec,
      baseline: base.callsPerSec,
      ratio: Math.round(ratio * 1000) / 1000,
      p50_ms: enc.p50Ms,
      p99_ms: enc.p99Ms,
      baseline_p50_ms: base.p50Ms,
      baseline_p99_ms: base.p99Ms,
      errors,
      ...(AUDIT_MODE !== 'disk' ? { diagnostic: `audit=${AUDIT_MODE}` } : {}),
    }),
  );
  return errors > 0 ? 1 : 0;
}

let exitCode = 1;
try {
  exitCode = await main();
} catch (e) {
  if (!interrupted) {
    log(`FAILED: ${(e as Error).stack ?? e}`);
    if (dir) log(`cluster logs: ${path.join(dir, 'logs')} (kept)`);
    keep = true;
  }
} finally {
  await cleanup();
}
process.exit(exitCode);
