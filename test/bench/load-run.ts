/**
 * One measured run of the load generator (test/bench/load.ts, its own process) and what it
 * cost: calls/s and latency from the generator, CPU time of each watched process over the
 * measured window from /proc (Linux); and the alternating rounds of a baseline and a measured
 * run, with the median of each. report.ts prints them.
 */
import { readFileSync } from 'node:fs';
import { APP, COORDINATOR } from '@keyshard/devcluster';
import type { BenchRun } from './bench-run.ts';
import { log, type Child } from './common.ts';

/** What load.ts prints as its last line. */
export interface LoadResult {
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

export interface Row {
  label: string;
  result: LoadResult;
  cpu: Record<string, number>; // process name -> % of one core over the measured window
  serverStats?: Record<string, unknown>; // echo servers' own counters (encrypt.ts BENCH_EXTRA)
  etcd?: Record<string, number>; // requests etcd served during the measured window, by method
}

export interface LoadSpec {
  label: string;
  /** load.ts --target */
  target: string;
  /** gRPC host:port, for the gRPC targets. */
  address?: string;
  /** Whose certificate the generator presents (default: the admin). */
  principal?: string;
  concurrency?: number;
  channels?: number;
  payload?: number;
  /** Exactly this many calls instead of a timed run (no warm-up). */
  count?: number;
  /** Target-specific flags (see load.ts). */
  args?: string[];
  /** Processes whose CPU time is sampled over the measured window. */
  watch: Record<string, () => number | undefined>;
  /** Count the requests etcd serves during the measured window (Row.etcd), and compact its history first (etcd-baseline.ts). */
  etcd?: boolean;
  /** An echo server whose counters are reset (SIGUSR1) and read (SIGUSR2) around the window. */
  probe?: Child;
  /** Seconds the generator may take beyond the usual: for its own set-up, and for a counted run as a whole (default 600). */
  setupSeconds?: number;
}

export const DEFAULT_CONCURRENCY = 64;
export const DEFAULT_PAYLOAD = 1024;

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

/**
 * CPU use of each watched process (% of one core) between `start()` and `stop()`; `other` is
 * the rest of the host's processes (the run's noise), `irq+steal` time no process is charged for.
 */
export function cpuWindow(pids: Record<string, () => number | undefined>): { stop(): Record<string, number> } {
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuTicks(pid())]));
  const hostBefore = hostTicks();
  const t0 = performance.now();
  return {
    stop() {
      const after = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuTicks(pid())]));
      const hostAfter = hostTicks();
      const wall = (performance.now() - t0) / 1000;
      const cpu: Record<string, number> = {};
      for (const k of Object.keys(pids)) {
        const a = before[k];
        const b = after[k];
        if (a !== undefined && b !== undefined) cpu[k] = Math.round(((b - a) / 100 / wall) * 100);
      }
      const ours = Object.values(cpu).reduce((n, x) => n + x, 0);
      cpu.other = Math.max(0, Math.round(((hostAfter.proc - hostBefore.proc) / 100 / wall) * 100) - ours);
      cpu['irq+steal'] = Math.round(((hostAfter.irq - hostBefore.irq) / 100 / wall) * 100);
      return cpu;
    },
  };
}

/** CLOCK_MONOTONIC µs: the clock of `node --cpu-prof` profiles in every process (cpuprofile-summary.ts). */
export const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

/** With BENCH_CPU_PROF, logs a measured window in the terms of cpuprofile-summary.ts. */
export function logProfileWindow(run: BenchRun, label: string, fromUs: number, toUs: number): void {
  if (run.settings.cpuProf) log(`${label}: profile window --from-us ${fromUs} --to-us ${toUs} (cpuprofile-summary.ts)`);
}

/** Requests etcd serves between `etcdWindow()` and `stop()`, by method (BenchRun.etcdRequests). */
export async function etcdWindow(run: BenchRun): Promise<{ stop(): Promise<Record<string, number>> }> {
  const before = await run.etcdRequests();
  return {
    async stop() {
      const after = await run.etcdRequests();
      return Object.fromEntries(Object.entries(after).map(([k, n]) => [k, n - (before[k] ?? 0)]).filter(([, n]) => (n as number) > 0));
    },
  };
}

/** Runs load.ts once against `spec` and samples the CPU of the watched processes meanwhile. */
export async function runLoad(run: BenchRun, spec: LoadSpec): Promise<Row> {
  const { seconds, warmup } = run.settings;
  const principal = spec.principal ?? APP; // the keys' user: admins do not use keys
  const channels = spec.channels ?? run.settings.channels;
  const concurrency = spec.concurrency ?? DEFAULT_CONCURRENCY;
  const certs = run.cluster!.layout.certs[principal]!;
  const timed = spec.count === undefined;
  log(
    `load: ${spec.label}${spec.address ? ` (${spec.address})` : ''}, ${concurrency} in flight over ${channels} channel(s), ` +
      (timed ? `${warmup} s warm-up + ${seconds} s` : `${spec.count} calls`),
  );
  const args = [
    '--target', spec.target,
    '--ca', certs.ca, '--cert', certs.cert, '--key', certs.key, '--source', principal,
    '--concurrency', String(concurrency), '--channels', String(channels),
    '--payload', String(spec.payload ?? DEFAULT_PAYLOAD),
    ...(spec.address ? ['--address', spec.address] : []),
    ...(timed ? ['--seconds', String(seconds), '--warmup', String(warmup)] : ['--count', String(spec.count)]),
    ...(spec.args ?? []),
  ];
  if (spec.etcd) await run.compactEtcd();
  const load = run.spawn(`load ${spec.label}`, 'load.ts', args);
  const pids = { ...spec.watch, load: () => load.pid };
  await load.waitFor(/"phase":"measure"/, (warmup + 30 + (spec.setupSeconds ?? 0)) * 1000);
  if (spec.probe?.pid) process.kill(spec.probe.pid, 'SIGUSR1');
  const etcd = spec.etcd ? await etcdWindow(run) : undefined;
  const window = cpuWindow(pids);
  const fromUs = monotonicUs();
  // A counted run takes as long as it takes; its caller bounds it with setupSeconds.
  await load.waitFor(/"phase":"done"/, (timed ? seconds + 30 : 30 + (spec.setupSeconds ?? 600)) * 1000);
  const cpu = window.stop();
  logProfileWindow(run, spec.label, fromUs, monotonicUs());
  const etcdServed = await etcd?.stop();
  let serverStats: Record<string, unknown> | undefined;
  if (spec.probe?.pid) {
    const from = spec.probe.lines.length;
    process.kill(spec.probe.pid, 'SIGUSR2');
    serverStats = JSON.parse(await spec.probe.waitFor(/"stats"/, 10_000, from)) as Record<string, unknown>;
  }
  const resultLine = await load.waitFor(/"callsPerSec"/, 60_000);
  const { code } = await load.exited;
  if (code !== 0) throw new Error(`load generator for ${spec.label} exited with ${code}\n${load.stderr}`);
  const result = JSON.parse(resultLine) as LoadResult;
  if (result.errors > 0) log(`WARNING: ${spec.label}: ${result.errors} failed calls ${JSON.stringify(result.errorCodes)}; first: ${result.firstError}`);
  if (result.warmupErrors > 0) log(`WARNING: ${spec.label}: ${result.warmupErrors} calls failed during the warm-up`);
  return { label: spec.label, result, cpu, serverStats, etcd: etcdServed };
}

/** Failed calls over these rows, warm-ups included: any failure makes a bench exit 1. */
export function errorsOf(rows: Row[]): number {
  return rows.reduce((n, r) => n + r.result.errors + r.result.warmupErrors, 0);
}

/** The runs of a comparison, alternating, and the median run of each side. */
export interface Comparison {
  rows: Row[];
  base: Row;
  value: Row;
  /** Failed calls of the baseline and measured runs, warm-ups included (diagnostic runs warn on their own). */
  errors: number;
}

/**
 * Runs the baseline, any diagnostic steps and the measured run, in that order, BENCH_ROUNDS
 * times (alternating, so that slow drifts of a shared machine hit both alike).
 */
export async function compareRounds(
  run: BenchRun,
  steps: { baseline: (suffix: string) => Promise<Row>; extra?: ((suffix: string) => Promise<Row>)[]; measured: (suffix: string) => Promise<Row> },
): Promise<Comparison> {
  const { rounds } = run.settings;
  const rows: Row[] = [];
  const baseRows: Row[] = [];
  const valueRows: Row[] = [];
  for (let r = 1; r <= rounds; r++) {
    const suffix = rounds > 1 ? ` #${r}` : '';
    rows.push(await steps.baseline(suffix));
    baseRows.push(rows[rows.length - 1]!);
    for (const step of steps.extra ?? []) rows.push(await step(suffix));
    rows.push(await steps.measured(suffix));
    valueRows.push(rows[rows.length - 1]!);
  }
  return { rows, base: median(baseRows), value: median(valueRows), errors: errorsOf([...baseRows, ...valueRows]) };
}

/** LoadSpec fields of a run against the coordinator: its address, its processes watched. */
export function atCoordinator(run: BenchRun): Pick<LoadSpec, 'address' | 'watch' | 'etcd'> {
  return { address: run.cluster!.coordinatorAddress, watch: run.pids(COORDINATOR, ...run.sinkIds, 'etcd'), etcd: true };
}

/** LoadSpec fields of an etcd-baseline.ts run: the cluster's etcd with the coordinator's client certificate. */
export function atEtcd(run: BenchRun, ...args: string[]): Pick<LoadSpec, 'principal' | 'args' | 'watch' | 'etcd'> {
  const e = run.etcd;
  return { principal: COORDINATOR, args: ['--etcd', e.endpoint, '--cluster', e.clusterName, ...args], watch: run.pids('etcd'), etcd: true };
}

export function median(rows: Row[]): Row {
  const sorted = [...rows].sort((a, b) => a.result.callsPerSec - b.result.callsPerSec);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}
