/**
 * `npm run bench:startup`: what running the compiled output instead of TypeScript through tsx
 * saves at start-up, for each service and for one exec health probe.
 *
 * 1. Builds nothing: it needs `npm run build` done (DevCluster refuses a stale build). Starts a
 *    real dev cluster (1 etcd, 3 custodians, threshold 2, temp dir), initialized and unsealed.
 * 2. For the coordinator, custodian-1 and the audit sink in turn: stops the cluster's process,
 *    then starts the same service with the same config and environment STARTUP_RUNS times
 *    (default 5) in each of three ways, alternating, and stops it again (SIGTERM):
 *      compiled   node services/<svc>/dist/main.js             (what deploy/ runs)
 *      tsx        node --conditions=keyshard-source --import tsx services/<svc>/src/main.ts
 *                 (tsx's transform cache warm, as on a host that ran it before)
 *      tsx-cold   the same with TSX_DISABLE_CACHE=1 (a new pod: /tmp, where tsx caches, is empty)
 *    measuring the time from spawn to its `"msg":"listening"` log line, the CPU time it used
 *    until then (/proc/<pid>/stat) and its resident memory then and at its peak (VmRSS, VmHWM).
 * 3. Runs the coordinator's liveness probe (health-probe, CeremonyService, its own certificate)
 *    STARTUP_RUNS times each way, compiled and through tsx (warm), measuring wall time, CPU time
 *    (user + system) and peak RSS of the whole probe process (process.resourceUsage() at exit,
 *    from a preloaded module).
 * 4. Prints medians in a table and, as its LAST line, one JSON object:
 *    {"bench":"startup","coordinator":{"compiled":{ms,cpuMs,rssMb,hwmMb},"tsx":…},…,"probe":{…}}
 *
 * Environment: STARTUP_RUNS, BENCH_KEEP (test/bench/bench-run.ts). Every process it starts is
 * stopped by PID, also on error or SIGINT/SIGTERM.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { COORDINATOR, REPO_ROOT } from '@keyshard/devcluster';
import { BenchRun, envNumber } from './bench-run.ts';
import { log } from './common.ts';
import { formatTable } from './report.ts';

const RUNS = envNumber('STARTUP_RUNS', 5, { integer: true });
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

type Variant = 'compiled' | 'tsx' | 'tsx-cold';
const VARIANTS: Variant[] = ['compiled', 'tsx', 'tsx-cold'];

interface Start {
  ms: number;
  cpuMs: number;
  rssMb: number;
  hwmMb: number;
}

/** How a variant starts `services/<svc>`: node arguments and extra environment. */
function command(svc: string, variant: Variant): { args: string[]; env: NodeJS.ProcessEnv } {
  if (variant === 'compiled') return { args: [path.join(REPO_ROOT, `services/${svc}/dist/main.js`)], env: {} };
  const args = ['--conditions=keyshard-source', '--import', 'tsx', path.join(REPO_ROOT, `services/${svc}/src/main.ts`)];
  return { args, env: variant === 'tsx-cold' ? { TSX_DISABLE_CACHE: '1' } : {} };
}

const live = new Set<ChildProcess>();

function procStatus(pid: number): { rssMb: number; hwmMb: number; cpuMs: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  // /proc/<pid>/stat: fields 14 and 15 (utime, stime) in clock ticks, counted after the ")" of the command name.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024, cpuMs: (ticks * 1000) / CLK_TCK };
}

/** Starts one service process, measures it at its "listening" line, stops it (SIGTERM, by PID). */
async function startOnce(name: string, args: string[], env: NodeJS.ProcessEnv): Promise<Start> {
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const exited = new Promise<void>((r) => child.once('exit', () => (live.delete(child), r())));
  let out = '';
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name}: no "listening" line within 60 s:\n${out.slice(-4000)}`)), 60_000);
      const onData = (d: Buffer) => {
        out += d.toString('utf8');
        if (out.includes('"msg":"listening"')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code, sig) => (clearTimeout(timer), reject(new Error(`${name} exited (${sig ?? code}) before listening:\n${out.slice(-4000)}`))));
    });
    const ms = performance.now() - t0;
    return { ms, ...procStatus(child.pid!) };
  } finally {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

// Prints the whole process's resource use at exit (the probe exits with process.exit).
const RUSAGE = `data:text/javascript,${encodeURIComponent(
  "import { writeSync } from 'node:fs'; process.on('exit', () => { const u = process.resourceUsage(); writeSync(2, '\\nRUSAGE ' + JSON.stringify({ cpuUs: u.userCPUTime + u.systemCPUTime, maxRssKb: u.maxRSS }) + '\\n'); });",
)}`;

interface ProbeRun {
  ms: number;
  cpuMs: number;
  rssMb: number;
  code: number | null;
}

async function probeOnce(variant: Variant, probeArgs: string[]): Promise<ProbeRun> {
  const entry =
    variant === 'compiled'
      ? [path.join(REPO_ROOT, 'packages/rpc/dist/health-probe.js')]
      : ['--conditions=keyshard-source', '--import', 'tsx', path.join(REPO_ROOT, 'packages/rpc/src/health-probe.ts')];
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--import', RUSAGE, ...entry, ...probeArgs], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...(variant === 'tsx-cold' ? { TSX_DISABLE_CACHE: '1' } : {}) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  live.add(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString('utf8')));
  const code = await new Promise<number | null>((r) => child.once('close', (c) => (live.delete(child), r(c))));
  const ms = performance.now() - t0;
  const m = /^RUSAGE (.+)$/m.exec(err);
  if (!m) throw new Error(`the ${variant} probe printed no resource usage (exit ${code}):\n${err}`);
  const u = JSON.parse(m[1]!) as { cpuUs: number; maxRssKb: number };
  return { ms, cpuMs: u.cpuUs / 1000, rssMb: u.maxRssKb / 1024, code };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const round = (x: number, digits = 0) => Number(x.toFixed(digits));

await BenchRun.main(async (run) => {
  run.onCleanup(() => {
    for (const c of live) c.kill('SIGKILL');
  });
  const cluster = await run.startCluster();
  const results: Record<string, Record<string, Record<string, number>>> = {};
  const rows: string[][] = [];

  for (const name of [COORDINATOR, 'custodian-1', 'audit-sink']) {
    const svc = name === COORDINATOR ? 'coordinator' : name === 'audit-sink' ? 'audit-sink' : 'custodian';
    const proc = cluster.process(name);
    const config = proc.spec.args.slice(proc.spec.args.indexOf('--config'));
    await proc.stop();
    const samples = new Map<Variant, Start[]>(VARIANTS.map((v) => [v, []]));
    for (let i = 0; i < RUNS; i++)
      for (const v of VARIANTS) {
        const { args, env } = command(svc, v);
        const s = await startOnce(`${svc} (${v})`, [...args, ...config], { ...proc.spec.env, ...env });
        samples.get(v)!.push(s);
        log(`${svc} ${v}: listening after ${s.ms.toFixed(0)} ms, ${s.cpuMs.toFixed(0)} ms CPU, RSS ${s.rssMb.toFixed(1)} MB (peak ${s.hwmMb.toFixed(1)} MB)`);
      }
    results[svc] = {};
    for (const v of VARIANTS) {
      const s = samples.get(v)!;
      const r = { ms: round(median(s.map((x) => x.ms))), cpuMs: round(median(s.map((x) => x.cpuMs))), rssMb: round(median(s.map((x) => x.rssMb)), 1), hwmMb: round(median(s.map((x) => x.hwmMb)), 1) };
      results[svc][v] = r;
      rows.push([`${svc} ${v}`, String(r.ms), String(r.cpuMs), r.rssMb.toFixed(1), r.hwmMb.toFixed(1)]);
    }
    await proc.start(); // back as the cluster had it (the coordinator sealed)
  }

  const certs = cluster.layout.certs[COORDINATOR]!;
  const probeArgs = ['--address', cluster.coordinatorAddress, '--ca', certs.ca, '--cert', certs.cert, '--key', certs.key, '--service', 'keyshard.v1.CeremonyService'];
  const probeVariants: Variant[] = ['compiled', 'tsx'];
  const probes = new Map<Variant, ProbeRun[]>(probeVariants.map((v) => [v, []]));
  for (let i = 0; i < RUNS; i++)
    for (const v of probeVariants) {
      const p = await probeOnce(v, probeArgs);
      if (p.code !== 0) throw new Error(`the ${v} probe exited ${p.code} (CeremonyService is SERVING while the process runs)`);
      probes.get(v)!.push(p);
      log(`probe ${v}: ${p.ms.toFixed(0)} ms, ${p.cpuMs.toFixed(0)} ms CPU, peak RSS ${p.rssMb.toFixed(1)} MB`);
    }
  results.probe = {};
  const probeRows: string[][] = [];
  for (const v of probeVariants) {
    const s = probes.get(v)!;
    const r = { ms: round(median(s.map((x) => x.ms))), cpuMs: round(median(s.map((x) => x.cpuMs))), rssMb: round(median(s.map((x) => x.rssMb)), 1) };
    results.probe[v] = r;
    probeRows.push([`health-probe ${v}`, String(r.ms), String(r.cpuMs), r.rssMb.toFixed(1)]);
  }

  console.log(`Service start-up, spawn to "listening" (median of ${RUNS}; node ${process.version}):`);
  console.log(formatTable(['process', 'ms', 'CPU ms', 'RSS MB', 'peak RSS MB'], rows));
  console.log(`\nOne exec health probe (coordinator, CeremonyService; median of ${RUNS}):`);
  console.log(formatTable(['probe', 'ms', 'CPU ms', 'peak RSS MB'], probeRows));
  console.log(JSON.stringify({ bench: 'startup', runs: RUNS, ...results }));
  return 0;
});
