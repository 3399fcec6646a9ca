/** CLI output conventions: results on stdout, progress and errors on stderr, one line each. */
import { KeyshardError, toKeyshardError } from '@keyshard/client';

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

/**
 * How a failure is shown, on one line: a refusal (any gRPC status, the SDK's KeyshardError) as
 * `keyshard: <REASON>: <message>`, the reason being the server's (KEY_NOT_FOUND, SEALED, …:
 * what scripts branch on); anything else as `keyshard: <message>`. With `json`, one JSON object
 * {code, reason, message} (request_id when known) instead; a usage error has code and reason
 * USAGE.
 */
export function errorLine(e: unknown, json: boolean): string {
  const err = toKeyshardError(e);
  // A refusal: the SDK's typed error, or a check this CLI ran itself (e.g. a backup read offline) with the same fields.
  if (err instanceof KeyshardError || isReasoned(err)) {
    if (!json) return `keyshard: ${err.reason}: ${err.message}`;
    const requestId = err instanceof KeyshardError ? err.requestId : undefined;
    return JSON.stringify({ code: err.code, reason: err.reason, message: err.message, ...(requestId ? { request_id: requestId } : {}) });
  }
  const message = (e as Error)?.message ?? String(e);
  if (!json) return `keyshard: ${message}`;
  const kind = e instanceof UsageError ? 'USAGE' : 'UNKNOWN';
  return JSON.stringify({ code: kind, reason: kind, message });
}

/** An error of keyshard's own modules (@keyshard/errors): a status name and a reason. */
function isReasoned(e: unknown): e is Error & { code: string; reason: string } {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'string' && typeof (e as { reason?: unknown }).reason === 'string';
}

/** Prints the failure (errorLine) on stderr and exits: 2 for a usage error, 1 otherwise (a refusal included). */
export function fail(e: unknown, json = process.argv.includes('--json')): never {
  process.stderr.write(`${errorLine(e, json)}\n`);
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
