/**
 * What a bench prints: its runs (calls/s, latency, CPU use and CPU time per call of each
 * process), then its verdict, ending with the one JSON line that is the bench's LAST line:
 *   {"bench","value","baseline","ratio", ...details, "unit","target","errors"}
 */
import os from 'node:os';
import { auditLabel, type BenchRun } from './bench-run.ts';
import type { Comparison, Row } from './load-run.ts';

export function formatTable(head: string[], body: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [fmt(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(fmt)].join('\n');
}

function table(rows: Row[], rate?: { unit: string; perCall: number }): string {
  const cpuKeys = [...new Set(rows.flatMap((r) => Object.keys(r.cpu)))];
  const head = ['run', 'calls/s', ...(rate ? [rate.unit] : []), 'p50 ms', 'p99 ms', 'errors', ...cpuKeys.map((k) => `cpu% ${k}`)];
  const body = rows.map((r) => [
    r.label,
    r.result.callsPerSec.toFixed(1),
    ...(rate ? [(r.result.callsPerSec * rate.perCall).toFixed(1)] : []),
    ...[r.result.p50Ms, r.result.p99Ms].map((ms) => (Number.isFinite(ms) ? ms.toFixed(2) : '-')),
    String(r.result.errors + r.result.warmupErrors),
    ...cpuKeys.map((k) => (r.cpu[k] === undefined ? '-' : String(r.cpu[k]))),
  ]);
  return formatTable(head, body);
}

/** CPU time per successful call, by process (µs): less sensitive to other load on the host. */
function cpuPerCall(rows: Row[]): string {
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r.cpu)))].filter((k) => k !== 'other' && k !== 'irq+steal');
  const head = ['run', ...keys.map((k) => `µs/call ${k}`)];
  const body = rows.map((r) => [
    r.label,
    ...keys.map((k) => (r.cpu[k] === undefined || r.result.callsPerSec === 0 ? '-' : String(Math.round((r.cpu[k]! / 100 / r.result.callsPerSec) * 1e6)))),
  ]);
  return formatTable(head, body);
}

export interface Report {
  /** The first line of the printout: what runs against what, and how. */
  title: string;
  /** The JSON line's `bench`. */
  bench: string;
  /** Unit of value and baseline, e.g. "calls/s". */
  unit: string;
  /** Measured units per call when they are not calls (EncryptBatch: MB of plaintext); shown as a column. */
  perCall?: number;
  /** The ratio the issue asks for: value/baseline >= target. */
  target: number;
  /** e.g. "encrypt/echo" */
  ratioName: string;
  /** Rows shown before the comparison's (set-up runs). */
  before?: Row[];
  /** More fields for the JSON line. */
  details?: Record<string, unknown>;
}

/** Prints the runs and the verdict; returns the exit code: 1 when calls failed (the figures are then not valid). */
export function report(run: BenchRun, c: Comparison, r: Report): number {
  const rows = [...(r.before ?? []), ...c.rows];
  console.log('');
  console.log(`${r.title}, ${os.cpus().length} CPUs, ${auditLabel(run.settings.auditReplicas)}`);
  console.log('(cpu% = share of one core used by each process during the measured window; other = other processes on the host, irq+steal = interrupts/softirq/steal)');
  console.log(table(rows, r.perCall === undefined ? undefined : { unit: r.unit, perCall: r.perCall }));
  console.log('');
  console.log(cpuPerCall(rows));
  console.log('');
  const { seconds, warmup } = run.settings;
  for (const row of rows)
    if (row.result.eventsPerBatch !== undefined)
      console.log(`${row.label}: ${row.result.auditBatches} Append batches, ${row.result.eventsPerBatch} events per batch, ` +
        `${((seconds + warmup) * 1000 / Math.max(1, row.result.auditBatches ?? 0)).toFixed(2)} ms per batch`);
  for (const row of rows) if (row.serverStats) console.log(`${row.label} server side: ${JSON.stringify(row.serverStats)}`);
  if (rows.some((row) => row.result.eventsPerBatch !== undefined || row.serverStats)) console.log('');
  const served = rows.filter((row) => row.etcd && row.result.calls > 0);
  for (const row of served) {
    // Calls completed in the window (not calls/s × seconds: a counted run's window is its whole length).
    const perCall = Object.entries(row.etcd!).map(([k, n]) => `${k} ${(n / row.result.calls).toFixed(2)}`);
    console.log(`${row.label}: etcd requests per call: ${perCall.join(', ') || 'none'}`);
  }
  if (served.length) console.log('');

  const value = c.value.result.callsPerSec * (r.perCall ?? 1);
  const baseline = c.base.result.callsPerSec * (r.perCall ?? 1);
  const ratio = baseline > 0 ? value / baseline : 0;
  const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;
  const latencies = Number.isFinite(c.value.result.p50Ms)
    ? { p50_ms: c.value.result.p50Ms, p99_ms: c.value.result.p99Ms, baseline_p50_ms: c.base.result.p50Ms, baseline_p99_ms: c.base.result.p99Ms }
    : {};
  console.log(`ratio ${r.ratioName} = ${ratio.toFixed(3)} (target >= ${r.target}: ${ratio >= r.target ? 'met' : 'NOT met'})`);
  if (c.errors > 0) console.log(`ERRORS: ${c.errors} calls failed; the numbers above are not valid`);
  console.log(
    JSON.stringify({
      bench: r.bench,
      value: round(value, 1),
      baseline: round(baseline, 1),
      ratio: round(ratio, 3),
      ...latencies,
      ...r.details,
      ...(run.settings.audit !== 'disk' ? { diagnostic: `audit=${run.settings.audit}` } : {}),
      ...(run.settings.auditReplicas > 1 ? { audit_replicas: run.settings.auditReplicas } : {}),
      unit: r.unit,
      target: r.target,
      errors: c.errors,
    }),
  );
  return c.errors > 0 ? 1 : 0;
}
