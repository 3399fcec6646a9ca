/** CLI output conventions: results on stdout, progress and errors on stderr, one line each. */
import { isServiceError, statusName } from '@keyshard/client';

export class UsageError extends Error {}

export function progress(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

export interface ProgressBar {
  tick(n?: number): void;
  done(summary: string): void;
}

/**
 * Progress of a long operation on stderr: a bar redrawn in place on a terminal, otherwise
 * (logs, CI) one line at every tenth of the way.
 */
export function progressBar(label: string, total: number, out: NodeJS.WriteStream = process.stderr): ProgressBar {
  let done = 0;
  let lastTenth = -1;
  const width = 30;
  const draw = () => {
    const frac = total === 0 ? 1 : done / total;
    if (out.isTTY) {
      const filled = Math.round(frac * width);
      out.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`);
    } else if (Math.floor(frac * 10) > lastTenth) {
      lastTenth = Math.floor(frac * 10);
      out.write(`${label} ${done}/${total} (${Math.round(frac * 100)}%)\n`);
    }
  };
  draw();
  return {
    tick(n = 1) {
      done = Math.min(total, done + n);
      draw();
    },
    done(summary) {
      out.write(`${out.isTTY ? '\n' : ''}${summary}\n`);
    },
  };
}

/** JSON on stdout; bytes as base64 (JSON.stringify has already turned Buffers into {type,data}). */
export function printJson(v: unknown): void {
  const bytes = (val: unknown) => typeof val === 'object' && val !== null && (val as { type?: unknown }).type === 'Buffer' && Array.isArray((val as { data?: unknown }).data);
  process.stdout.write(`${JSON.stringify(v, (_k, val) => (bytes(val) ? Buffer.from((val as { data: number[] }).data).toString('base64') : val), 2)}\n`);
}

/** One clear line, exit non-zero. gRPC errors show their status name and the server's message. */
export function fail(e: unknown): never {
  if (isServiceError(e)) process.stderr.write(`keyshard: ${statusName(e.code)}: ${e.details || e.message}\n`);
  else process.stderr.write(`keyshard: ${(e as Error).message ?? String(e)}\n`);
  process.exit(e instanceof UsageError ? 2 : 1);
}

export async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export function parseContext(pairs: string[] | undefined): Record<string, string> {
  const ctx: Record<string, string> = {};
  for (const p of pairs ?? []) {
    const i = p.indexOf('=');
    if (i <= 0) throw new UsageError(`--context expects key=value, got ${JSON.stringify(p)}`);
    ctx[p.slice(0, i)] = p.slice(i + 1);
  }
  return ctx;
}
