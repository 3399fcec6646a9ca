/**
 * The README's commands run as tests (issue 16), so the README cannot drift from the product:
 * every ```sh block under "Walk-through", "Keys", "Replicas and ceremonies", "Disaster recovery"
 * and "Audit", in README order, against a dev cluster started the way the README says.
 *
 * How the blocks run (the only substitutions):
 * - The working directory is a fresh temporary directory T, and `keyshard dev --dir .keyshard/dev`
 *   runs in the background there (the README's "first shell", `npm run dev`), so the README's
 *   `.keyshard/dev/…` paths hold as written.
 * - Each block runs in its own `bash` (the "second shell"), which sources `.keyshard/dev/env`
 *   first (the Walk-through's first line does so once for the whole session) and defines `npx` so
 *   that `npx keyshard …` runs this repository's CLI (test/support/cli.ts; any other `npx` call
 *   goes to npx). One check apart shows that `npx keyshard` resolves to it in the repository.
 * - Line by line, in that shell: each command line must exit 0 unless its trailing comment says
 *   `expect: exit N` (then exactly N). The first line that does otherwise fails the test, naming
 *   the README line, with what it printed.
 * - A line `npm run dev [-- ARGS]` is the first shell: `keyshard dev --dir .keyshard/dev ARGS`
 *   starts in the background and the block goes on once it reports the cluster is up. A comment
 *   line that mentions `Ctrl-C` stops the running `keyshard dev` as Ctrl-C does (SIGINT) and waits
 *   for every process it started to exit.
 * A section without a sh block fails the test: it would test nothing.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '@keyshard/devcluster';
import { KEYSHARD_ARGV, NPX_KEYSHARD } from './support/cli.ts';

const SECTIONS = ['Walk-through', 'Keys', 'Replicas and ceremonies', 'Disaster recovery', 'Audit'];
const DEV_DIR = '.keyshard/dev';

type Step =
  | { kind: 'shell'; lines: { line: string; at: number; expect: number }[] }
  | { kind: 'start-dev'; args: string[]; at: number }
  | { kind: 'stop-dev'; at: number };

interface Block {
  section: string;
  at: number; // README line of the opening fence
  steps: Step[];
}

/** The sh blocks of each `## ` section named in SECTIONS, in README order, parsed into steps. */
export function readmeBlocks(readme: string): Block[] {
  const blocks: Block[] = [];
  let section = '';
  let block: Block | undefined;
  for (const [i, raw] of readme.split('\n').entries()) {
    const at = i + 1;
    if (!block) {
      if (raw.startsWith('## ')) section = raw.slice(3).trim();
      else if (raw.trim() === '```sh' && SECTIONS.includes(section)) block = { section, at, steps: [] };
      continue;
    }
    if (raw.trim() === '```') {
      blocks.push(block);
      block = undefined;
      continue;
    }
    const line = raw.trim();
    if (!line) continue;
    assert.ok(!line.endsWith('\\'), `README:${at}: continued lines are not supported`);
    if (line.startsWith('#')) {
      if (line.includes('Ctrl-C')) block.steps.push({ kind: 'stop-dev', at });
      continue;
    }
    const comment = /\s#\s.*$/.exec(line)?.[0] ?? '';
    const command = line.slice(0, line.length - comment.length).trim();
    const dev = /^npm run dev(?:\s+--\s+(.*))?$/.exec(command);
    if (dev) {
      block.steps.push({ kind: 'start-dev', args: dev[1]?.split(/\s+/) ?? [], at });
      continue;
    }
    const expect = Number(/expect: exit (\d+)/.exec(comment)?.[1] ?? 0);
    const last = block.steps.at(-1);
    if (last?.kind === 'shell') last.lines.push({ line: command, at, expect });
    else block.steps.push({ kind: 'shell', lines: [{ line: command, at, expect }] });
  }
  return blocks;
}

/** One bash script for consecutive command lines: each line's exit status checked at once. */
function script(lines: { line: string; at: number; expect: number }[]): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    'set -o pipefail',
    NPX_KEYSHARD,
    `if [ -f ${DEV_DIR}/env ]; then . ${DEV_DIR}/env; fi`,
    ...lines.flatMap(({ line, at, expect }) => [
      `echo ${q(`README:${at}$ ${line}`)} >&2`,
      line,
      `rc=$?; if [ "$rc" -ne ${expect} ]; then echo ${q(`README:${at}: exit `)}"$rc"${q(`, expected ${expect}: ${line}`)} >&2; exit 100; fi`,
    ]),
  ].join('\n');
}

function runShell(cwd: string, body: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile('bash', ['-c', body], { cwd, env: { ...process.env }, maxBuffer: 64 << 20, timeout: 600_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin!.end();
  });
}

/** `npm run dev -- ARGS` in the background, as the first shell runs it; resolves once the cluster is up. */
async function startDev(cwd: string, args: string[]): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, [...KEYSHARD_ARGV, 'dev', '--dir', DEV_DIR, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`keyshard dev ${args.join(' ')} did not come up:\n${out}`)), 180_000);
    child.stdout!.on('data', () => {
      if (/keyshard dev cluster is up/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`keyshard dev exited ${code}:\n${out}`));
    });
  });
  return { child, output: () => out };
}

async function stopDev(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGINT');
  await exited;
}

describe("the README's commands", { timeout: 1_200_000 }, () => {
  const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const cwd = mkdtempSync(path.join(tmpdir(), 'keyshard-readme-'));
  let dev: ChildProcess | undefined;
  after(async () => {
    await stopDev(dev);
    rmSync(cwd, { recursive: true, force: true });
  });

  it('every section named has sh blocks, and lines the test can run', () => {
    const blocks = readmeBlocks(readme);
    for (const s of SECTIONS) assert.ok(blocks.some((b) => b.section === s), `README section "${s}" has a sh block`);
  });

  it('fails on a line that exits otherwise than its comment says, naming it', async () => {
    const [block] = readmeBlocks(['## Keys', '```sh', 'true', 'false   # expect: exit 1', '(exit 3)  # expect: exit 3', 'echo reached', 'false', 'echo not reached', '```'].join('\n'));
    const step = block!.steps[0]!;
    assert.equal(step.kind, 'shell');
    const r = await runShell(cwd, script(step.kind === 'shell' ? step.lines : []));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /README:7: exit 1, expected 0: false/);
    assert.match(r.stdout, /^reached$/m);
    assert.doesNotMatch(r.stdout, /not reached/);
    const [wrong] = readmeBlocks(['## Audit', '```sh', 'true   # expect: exit 1', '```'].join('\n'));
    const w = await runShell(cwd, script(wrong!.steps[0]!.kind === 'shell' ? wrong!.steps[0]!.lines : []));
    assert.match(w.stderr, /README:3: exit 0, expected 1: true/, 'an expected failure that does not happen fails too');
  });

  it('`npx keyshard` in the repository runs its CLI', async () => {
    const r = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile('npx', ['--no-install', 'keyshard', '--help'], { cwd: REPO_ROOT }, (err, stdout) => resolve({ code: err ? 1 : 0, out: stdout })),
    );
    assert.equal(r.code, 0);
    assert.match(r.out, /Exit status:/);
  });

  it('run as written against `keyshard dev`, in README order', async () => {
    dev = (await startDev(cwd, [])).child;
    const printed: Record<string, string> = {};
    const progress: Record<string, string> = {};
    for (const block of readmeBlocks(readme)) {
      for (const step of block.steps) {
        if (step.kind === 'stop-dev') {
          await stopDev(dev);
          dev = undefined;
        } else if (step.kind === 'start-dev') {
          assert.equal(dev, undefined, `README:${step.at}: \`npm run dev\` while one runs (say Ctrl-C first)`);
          dev = (await startDev(cwd, step.args)).child;
        } else {
          const r = await runShell(cwd, script(step.lines));
          if (process.env.README_TRANSCRIPT) appendFileSync(process.env.README_TRANSCRIPT, `== ${block.section} (README:${block.at})\n${r.stderr}--- stdout\n${r.stdout}\n`);
          assert.equal(r.code, 0, `${block.section} (README:${block.at}) failed:\n${r.stderr}\n--- stdout\n${r.stdout}`);
          printed[block.section] = (printed[block.section] ?? '') + r.stdout;
          progress[block.section] = (progress[block.section] ?? '') + r.stderr;
        }
      }
    }
    // A few outputs the README promises, beyond exit codes.
    assert.match(printed['Walk-through']!, /card 4111-1111/);
    assert.match(printed['Walk-through']!, /^unsealed \(ceremony /m);
    assert.match(printed['Keys']!, /team=billing/);
    assert.match(printed['Replicas and ceremonies']!, /reshared: 2 of custodian-1,custodian-2,custodian-3/);
    assert.match(printed['Disaster recovery']!, /card 4111-1111/);
    assert.match(printed['Disaster recovery']!, /state\s+uninitialized/);
    assert.match(printed['Audit']!, /^ok: \d+ records/m);
    // Progress never shows more approvals than the threshold (the reshare is approved by all 5).
    assert.match(printed['Replicas and ceremonies']!, /reshared: .*approved by custodian-1, custodian-2, custodian-3, custodian-4, custodian-5\)/);
    for (const [section, text] of Object.entries(progress))
      for (const m of text.matchAll(/approvals (\d+)\/(\d+)|(\d+)\/(\d+) shares/g)) assert.ok(Number(m[1] ?? m[3]) <= Number(m[2] ?? m[4]), `${section}: ${m[0]}`);
    // The restore shows each refusal as it happens: custodians 4 and 5 hold no share of the reshared set.
    assert.match(progress['Disaster recovery']!, /^ {2}refused by custodian-4: WRONG_CLUSTER: /m);
  });
});
