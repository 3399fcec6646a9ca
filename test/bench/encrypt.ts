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
 *   BENCH_CHANNELS  channels (= TLS connections) the load spreads over (default 1; same for both)
 *   BENCH_ROUNDS    echo/encrypt pairs, alternating; the median run of each counts (default 1)
 *   BENCH_EXTRA=1   also runs diagnostic rows: Echo through @keyshard/rpc unaryService
 *                   ("echo+rpc"), and additionally through the coordinator's audit observer
 *                   ("echo+rpc+audit", recording into this cluster's audit sink)
 *   BENCH_KEEP=1    keep the cluster directory (logs) instead of deleting it
 *   BENCH_CPU_PROF=DIR  run the coordinator, the audit sink and the echo servers under
 *                   `node --cpu-prof`; profiles (whole process lifetime) land in DIR/<process>/.
 *                   Summarize with `node --import tsx test/bench/cpuprofile-summary.ts FILE`.
 * Every process it starts (cluster, echo servers, load generators) is stopped by PID, also on
 * error or SIGINT/SIGTERM. Exit code 1 if any measured call failed (the JSON line still prints).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ADMIN, COORDINATOR, DevCluster } from '@keyshard/devcluster';
import { BENCH_DIR, Child } from './common.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
const CHANNELS = Number(process.env.BENCH_CHANNELS ?? 1);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 1);
const EXTRA = process.env.BENCH_EXTRA === '1';
let keep = process.env.BENCH_KEEP === '1'; // also set when the run fails, for the logs
const CONCURRENCY = 64;
const PAYLOAD = 1024;
const KEY_NAME = 'bench-encrypt';
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
}

interface Row {
  label: string;
  result: LoadResult;
  cpu: Record<string, number>; // process name -> % of one core over the measured window
}

const children = new Set<Child>();
let cluster: DevCluster | undefined;
let dir: string | undefined;
let cleaning: Promise<void> | undefined;

function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    await Promise.allSettled([...children].map((c) => c.stop()));
    children.clear();
    if (cluster) await cluster.stop().catch((e) => log(`stopping the cluster: ${(e as Error).message}`));
    if (dir) {
      if (keep) log(`kept ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    }
  })());
}

for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
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

/** Busy (non-idle, non-iowait) clock ticks of the whole host, from /proc/stat. */
function hostBusyTicks(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  return f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!;
}

async function runLoad(label: string, target: 'encrypt' | 'echo', address: string, watch: Record<string, () => number | undefined>): Promise<Row> {
  const c = cluster!;
  const certs = c.layout.certs[ADMIN]!;
  log(`load: ${label} (${address}), ${CONCURRENCY} in flight over ${CHANNELS} channel(s), ${WARMUP} s warm-up + ${SECONDS} s`);
  const load = spawnChild(`load ${label}`, 'load.ts', [
    '--target', target, '--address', address,
    '--ca', certs.ca, '--cert', certs.cert, '--key', certs.key,
    '--keyname', KEY_NAME,
    '--concurrency', String(CONCURRENCY), '--seconds', String(SECONDS), '--warmup', String(WARMUP),
    '--payload', String(PAYLOAD), '--channels', String(CHANNELS),
  ]);
  const pids = { ...watch, load: () => load.pid };
  await load.waitFor(/"phase":"measure"/, (WARMUP + 30) * 1000);
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuTicks(pid())]));
  const hostBefore = hostBusyTicks();
  const t0 = performance.now();
  await load.waitFor(/"phase":"done"/, (SECONDS + 30) * 1000);
  const after = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuTicks(pid())]));
  const hostAfter = hostBusyTicks();
  const wall = (performance.now() - t0) / 1000;
  const resultLine = await load.waitFor(/"callsPerSec"/, 30_000);
  const { code } = await load.exited;
  if (code !== 0) throw new Error(`load generator for ${label} exited with ${code}\n${load.stderr}`);
  const cpu: Record<string, number> = {};
  for (const k of Object.keys(pids)) {
    const a = before[k];
    const b = after[k];
    if (a !== undefined && b !== undefined) cpu[k] = Math.round(((b - a) / 100 / wall) * 100);
  }
  // Everything else on the host (other processes, other people's work): the run's noise.
  const ours = Object.values(cpu).reduce((n, x) => n + x, 0);
  cpu.other = Math.max(0, Math.round(((hostAfter - hostBefore) / 100 / wall) * 100) - ours);
  const result = JSON.parse(resultLine) as LoadResult;
  if (result.errors > 0) log(`WARNING: ${label}: ${result.errors} failed calls ${JSON.stringify(result.errorCodes)}; first: ${result.firstError}`);
  return { label, result, cpu };
}

async function startEcho(wrap: 'none' | 'rpc' | 'audit'): Promise<{ address: string; child: Child }> {
  const c = cluster!;
  // The coordinator's own certificate and the cluster CA: the same TLS setup as the coordinator.
  const certs = c.layout.certs[COORDINATOR]!;
  const args = ['--ca', certs.ca, '--cert', certs.cert, '--key', certs.key, '--wrap', wrap];
  if (wrap === 'audit') args.push('--audit-address', `127.0.0.1:${c.layout.plan.ports.audit}`, '--audit-source', COORDINATOR);
  const child = spawnChild(`echo-server (${wrap})`, 'echo-server.ts', args, profArgs(`echo-${wrap}`));
  const line = await child.waitFor(/"listening"/);
  return { address: (JSON.parse(line) as { listening: string }).listening, child };
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
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r.cpu)))].filter((k) => k !== 'other');
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

  const echo = await startEcho('none');
  const extras = EXTRA ? { rpc: await startEcho('rpc'), audit: await startEcho('audit') } : undefined;
  const proc = (name: string) => () => cluster!.process(name).pid;
  const clusterPids = { coordinator: proc(COORDINATOR), 'audit-sink': proc('audit-sink'), etcd: proc('etcd') };

  const rows: Row[] = [];
  const echoRows: Row[] = [];
  const encryptRows: Row[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const suffix = ROUNDS > 1 ? ` #${r}` : '';
    const e = await runLoad(`echo${suffix}`, 'echo', echo.address, { 'echo-server': () => echo.child.pid });
    echoRows.push(e);
    rows.push(e);
    if (extras) {
      rows.push(await runLoad(`echo+rpc${suffix}`, 'echo', extras.rpc.address, { 'echo-server': () => extras.rpc.child.pid }));
      rows.push(
        await runLoad(`echo+rpc+audit${suffix}`, 'echo', extras.audit.address, {
          'echo-server': () => extras.audit.child.pid,
          'audit-sink': clusterPids['audit-sink'],
        }),
      );
    }
    const x = await runLoad(`encrypt${suffix}`, 'encrypt', cluster.coordinatorAddress, clusterPids);
    encryptRows.push(x);
    rows.push(x);
  }

  const base = median(echoRows).result;
  const enc = median(encryptRows).result;
  const errors = rows.reduce((n, r) => n + r.result.errors, 0);
  const ratio = base.callsPerSec > 0 ? enc.callsPerSec / base.callsPerSec : 0;

  console.log('');
  console.log(`Encrypt vs bare gRPC echo: ${PAYLOAD} B payload, mutual TLS, ${CONCURRENCY} in flight, ${CHANNELS} channel(s), ` +
    `${SECONDS} s measured after ${WARMUP} s warm-up, ${os.cpus().length} CPUs`);
  console.log('(cpu% = share of one core used by each process during the measured window; other = rest of the host)');
  console.log(table(rows));
  console.log('');
  console.log(cpuPerCall(rows));
  console.log('');
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
    }),
  );
  return errors > 0 ? 1 : 0;
}

let exitCode = 1;
try {
  exitCode = await main();
} catch (e) {
  log(`FAILED: ${(e as Error).stack ?? e}`);
  if (dir) log(`cluster logs: ${path.join(dir, 'logs')} (kept)`);
  keep = true;
} finally {
  await cleanup();
}
process.exit(exitCode);
