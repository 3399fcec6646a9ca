/** Shared by the bench scripts: the echo proto, child processes stopped by PID, argument parsing. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { LOADER_OPTIONS, readTls, type TlsMaterial } from '@keyshard/rpc';

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));

/** Progress and warnings of a bench, on stderr (stdout is its report). */
export const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
export const REPO_ROOT = path.resolve(BENCH_DIR, '../..');

/** keyshard.bench.Echo, loaded with the same options as the keyshard.v1 protos. */
export function echoService(): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync(path.join(BENCH_DIR, 'echo.proto'), { ...LOADER_OPTIONS, includeDirs: [BENCH_DIR] });
  const root = grpc.loadPackageDefinition(def) as unknown as { keyshard: { bench: { Echo: grpc.ServiceClientConstructor } } };
  return root.keyshard.bench.Echo;
}

/** A `node --conditions=keyshard-source --import tsx` child (TypeScript sources) with line-split stdout (`echo`: also passed through); stopped by its PID only. */
export class Child {
  readonly proc: ChildProcess;
  readonly lines: string[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #waiters: { re: RegExp; resolve: (line: string) => void }[] = [];

  constructor(
    readonly name: string,
    entry: string,
    args: string[],
    opts: { env?: NodeJS.ProcessEnv; nodeArgs?: string[]; echo?: boolean } = {},
  ) {
    this.proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), '--conditions=keyshard-source', '--import', 'tsx', entry, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buf = '';
    this.proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.lines.push(line);
        if (opts.echo) process.stdout.write(`${line}\n`);
        this.#waiters = this.#waiters.filter((w) => (w.re.test(line) ? (w.resolve(line), false) : true));
      }
    });
    this.proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      if (opts.echo) process.stderr.write(chunk);
      this.stderr = (this.stderr + chunk).slice(-16_384);
    });
    // 'close', not 'exit': only then has all of its stdout been read.
    this.exited = new Promise((resolve) => this.proc.once('close', (code, signal) => resolve({ code, signal })));
  }

  get pid(): number | undefined {
    return this.proc.exitCode === null && this.proc.signalCode === null ? this.proc.pid : undefined;
  }

  /**
   * Resolves with the first stdout line matching `re` (among lines from index `from` on);
   * rejects if the child exits first or on timeout.
   */
  waitFor(re: RegExp, timeoutMs = 30_000, from = 0): Promise<string> {
    const seen = this.lines.slice(from).find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no line matching ${re} within ${timeoutMs} ms\n${this.stderr}`)), timeoutMs);
      this.#waiters.push({ re, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      void this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${signal ?? code}) before printing ${re}\n${this.stderr}`));
      });
    });
  }

  /** SIGTERM by PID, SIGKILL after a grace period. */
  async stop(graceMs = 3_000): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) return;
    process.kill(pid, 'SIGTERM');
    const timer = setTimeout(() => {
      if (this.pid !== undefined) process.kill(pid, 'SIGKILL');
    }, graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** `--name value` pairs into a record (values are strings; flags without a value are 'true'). */
export function parseFlags(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) out[a.slice(2)] = 'true';
    else {
      out[a.slice(2)] = next;
      i++;
    }
  }
  return out;
}

export function required(flags: Record<string, string>, name: string): string {
  const v = flags[name];
  if (v === undefined) throw new Error(`--${name} is required`);
  return v;
}

/**
 * An AuditClient's sink from a bench child's flags (BenchRun.auditFlags): --audit-address HOST:PORT
 * (the first replica), --audit-key PEM[,PEM…] (every replica's checkpoint public key) and, for a
 * replicated log, --audit-replicas ID=HOST:PORT[,…].
 */
export function auditSinkFromFlags(flags: Record<string, string>): { address: string; keyFiles: string[]; replicas?: { address: string; serverId: string }[] } {
  const replicas = flags['audit-replicas']?.split(',').map((r) => {
    const eq = r.indexOf('=');
    if (eq <= 0) throw new Error(`--audit-replicas: ID=HOST:PORT, not ${r}`);
    return { serverId: r.slice(0, eq), address: r.slice(eq + 1) };
  });
  return { address: required(flags, 'audit-address'), keyFiles: required(flags, 'audit-key').split(','), ...(replicas ? { replicas } : {}) };
}

/** The certificates named by --ca, --cert and --key. */
export const tlsFromFlags = (flags: Record<string, string>): TlsMaterial =>
  readTls({ ca: required(flags, 'ca'), cert: required(flags, 'cert'), key: required(flags, 'key') });
