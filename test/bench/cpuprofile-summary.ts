/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`): self time by function and by package/file,
 * and inclusive time of selected functions. Diagnostics for the bench scripts (BENCH_CPU_PROF).
 *
 *   node --conditions=keyshard-source --import tsx test/bench/cpuprofile-summary.ts FILE.cpuprofile [--top 40] [--match REGEX]
 *        [--from-us T0 --to-us T1]
 *
 * --from-us/--to-us keep only the samples taken in that window. Profile timestamps are
 * CLOCK_MONOTONIC microseconds, the clock of `process.hrtime` in every process on the host, so
 * a bench can print the window of what it measured (test/bench/rotate.ts does, per sweep).
 */
import { readFileSync } from 'node:fs';
import { parseFlags } from './common.ts';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const [file, ...rest] = process.argv.slice(2);
if (!file) throw new Error('usage: cpuprofile-summary.ts FILE [--top N] [--match REGEX]');
const flags = parseFlags(rest);
const top = Number(flags.top ?? 40);
const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile;

const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Each sample's time: the profile's start plus the deltas so far (µs).
const from = Number(flags['from-us'] ?? -Infinity);
const to = Number(flags['to-us'] ?? Infinity);
let clock = prof.startTime;
const inWindow = prof.samples.map((_, i) => ((clock += prof.timeDeltas[i] ?? 0), clock >= from && clock <= to));

// Self time per node from samples and deltas (µs).
const self = new Map<number, number>();
prof.samples.forEach((id, i) => inWindow[i] && self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)));
const total = [...self.values()].reduce((a, b) => a + b, 0);

const shortUrl = (url: string) => {
  if (!url) return '(native)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1]!;
  const w = /\/work\/main\/(.*)$/.exec(url.replace('file://', ''));
  if (w) return w[1]!;
  return url.replace('file://', '');
};
const label = (n: Node) => `${n.callFrame.functionName || '(anonymous)'} ${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;

const pct = (us: number) => `${((us / total) * 100).toFixed(1).padStart(5)}%`;
const ms = (us: number) => `${(us / 1000).toFixed(0).padStart(7)} ms`;

function tally(key: (n: Node) => string): [string, number][] {
  const m = new Map<string, number>();
  for (const [id, t] of self) {
    const k = key(byId.get(id)!);
    m.set(k, (m.get(k) ?? 0) + t);
  }
  return [...m.entries()].sort((a, b) => b[1] - a[1]);
}

const span = (Math.min(to, prof.endTime) - Math.max(from, prof.startTime)) / 1e6;
console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled over ${span.toFixed(1)} s${flags['from-us'] || flags['to-us'] ? ' (window)' : ''}`);
console.log('\nself time by package/file:');
for (const [k, t] of tally((n) => (['(idle)', '(program)', '(garbage collector)'].includes(n.callFrame.functionName) ? n.callFrame.functionName : shortUrl(n.callFrame.url))).slice(0, top))
  console.log(`${pct(t)} ${ms(t)}  ${k}`);
console.log('\nself time by function:');
for (const [k, t] of tally(label).slice(0, top)) console.log(`${pct(t)} ${ms(t)}  ${k}`);

// Inclusive time of functions matching --match (counted once per sample even if recursive).
if (flags.match) {
  const re = new RegExp(flags.match);
  const incl = new Map<string, number>();
  prof.samples.forEach((id, i) => {
    if (!inWindow[i]) return;
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur)!;
      const l = label(n);
      if (re.test(l) && !seen.has(l)) {
        seen.add(l);
        incl.set(l, (incl.get(l) ?? 0) + (prof.timeDeltas[i] ?? 0));
      }
    }
  });
  console.log(`\ninclusive time of functions matching ${re}:`);
  for (const [k, t] of [...incl.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(t)} ${ms(t)}  ${k}`);
}
