/** Runs the real `keyshard` CLI as a user would, with the variables of a dev cluster's env file. */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '@keyshard/devcluster';

export const BIN = path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js');
/** What runs the CLI: `node …KEYSHARD_ARGV <command> <args>` (shells get it as `npx keyshard`). */
export const KEYSHARD_ARGV = [BIN];

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
/** A bash function that makes `npx keyshard …` run this repository's CLI (other npx calls go to npx). */
export const NPX_KEYSHARD = `npx() { if [ "$1" = keyshard ]; then shift; ${[process.execPath, ...KEYSHARD_ARGV].map(shellQuote).join(' ')} "$@"; else command npx "$@"; fi; }`;

export function readEnvFile(file: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of readFileSync(file, 'utf8').matchAll(/^export (\w+)='(.*)'$/gm)) env[m[1]!] = m[2]!.replace(/'\\''/g, "'");
  return env;
}

export function keyshard(args: string[], env: Record<string, string>, input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [...KEYSHARD_ARGV, ...args], { env: { ...process.env, ...env }, cwd: REPO_ROOT, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin!.end(input ?? '');
  });
}
