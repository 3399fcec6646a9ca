/**
 * `npm run bench`: every benchmark of test/bench, one after another, each in its own process
 * with its own cluster: encrypt, decrypt, batch, sign, create-key, rotate, unseal, audit, backup (`npm run bench --
 * decrypt sign` runs only those). Their output passes through; at the end, a summary table and
 * each bench's JSON line, one a line, in run order. Settings (BENCH_*) pass to every bench.
 * Exit code 1 if any bench failed or reported failed calls; 130 on SIGINT/SIGTERM, after the
 * running bench has stopped everything it started.
 */
import path from 'node:path';
import { BENCH_DIR, Child } from './common.ts';
import { formatTable } from './report.ts';

const BENCHES = ['encrypt', 'decrypt', 'batch', 'sign', 'create-key', 'rotate', 'unseal', 'audit', 'backup'];

const chosen = process.argv.slice(2);
const unknown = chosen.filter((b) => !BENCHES.includes(b));
if (unknown.length) throw new Error(`unknown bench ${unknown.join(', ')}; known: ${BENCHES.join(', ')}`);

let current: Child | undefined;
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    interrupted = true;
    process.stderr.write(`[bench] ${sig}: stopping ${current?.name ?? 'nothing'}\n`);
    void current?.stop(30_000);
  });

interface Outcome {
  bench: string;
  code: number | null;
  /** `target_for: 'value'`: the target is for the value (bench:audit's events/s), not the ratio. */
  verdict?: { bench: string; value: number; baseline: number; ratio: number; unit?: string; target?: number; target_for?: 'value' | 'ratio' };
  json?: string;
}
const outcomes: Outcome[] = [];
for (const bench of chosen.length ? BENCHES.filter((b) => chosen.includes(b)) : BENCHES) {
  if (interrupted) break;
  process.stderr.write(`\n[bench] ===== bench:${bench} =====\n`);
  current = new Child(`bench:${bench}`, path.join(BENCH_DIR, `${bench}.ts`), [], { echo: true });
  const { code } = await current.exited;
  const json = [...current.lines].reverse().find((l) => l.startsWith('{"bench"'));
  outcomes.push({ bench, code, json, verdict: json ? JSON.parse(json) : undefined });
}

const body = outcomes.map((o) => {
  const v = o.verdict;
  const measured = v?.target_for === 'value' ? v.value : v?.ratio;
  const met = v && v.target !== undefined ? (measured! >= v.target ? 'met' : 'NOT met') : '-';
  return [`bench:${o.bench}`, v ? String(v.value) : '-', v ? String(v.baseline) : '-', v?.unit ?? '-', v ? v.ratio.toFixed(3) : '-',
    v?.target !== undefined ? `${v.target_for === 'value' ? 'value ' : ''}>= ${v.target}` : '-', met, String(o.code)];
});
console.log('');
console.log(formatTable(['script', 'value', 'baseline', 'unit', 'ratio', 'target', 'verdict', 'exit'], body));
console.log('');
for (const o of outcomes) if (o.json) console.log(o.json);
process.exit(interrupted ? 130 : outcomes.every((o) => o.code === 0) ? 0 : 1);
