/**
 * Child processes of a local cluster: spawned with their output in a log file, ready when a
 * line says so, stopped by PID (SIGTERM, then SIGKILL after a grace period). Nothing else
 * on the machine is touched.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export interface ProcessSpec {
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** Resolves readiness when a line of output matches. */
  ready: RegExp;
  readyTimeoutMs?: number;
}

export class ManagedProcess {
  readonly spec: ProcessSpec;
  readonly logFile: string;
  child: ChildProcess | undefined;
  #exited: Promise<number | null> = Promise.resolve(null);

  constructor(spec: ProcessSpec, logDir: string) {
    this.spec = spec;
    mkdirSync(logDir, { recursive: true });
    this.logFile = path.join(logDir, `${spec.name}.log`);
  }

  get pid(): number | undefined {
    return this.child?.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
  }

  get running(): boolean {
    return this.pid !== undefined;
  }

  async start(): Promise<void> {
    if (this.running) return;
    const { spec } = this;
    const out = createWriteStream(this.logFile, { flags: 'a' });
    const child = spawn(spec.command, spec.args, {
      cwd: REPO_ROOT,
      env: { ...process.env, ...spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.#exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    let buffered = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${spec.name} did not become ready within ${spec.readyTimeoutMs ?? 30_000} ms (see ${this.logFile})`)),
        spec.readyTimeoutMs ?? 30_000,
      );
      const onData = (chunk: Buffer) => {
        out.write(chunk);
        if (buffered === null) return;
        buffered += chunk.toString('utf8');
        if (spec.ready.test(buffered)) {
          buffered = null as unknown as string;
          clearTimeout(timer);
          resolve();
        } else if (buffered.length > 1 << 20) buffered = buffered.slice(-65536);
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        out.end();
        reject(new Error(`${spec.name} exited (${signal ?? code}) before it was ready; see ${this.logFile}`));
      });
    });
  }

  signal(sig: NodeJS.Signals): void {
    const pid = this.pid;
    if (pid !== undefined) process.kill(pid, sig);
  }

  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    this.signal('SIGCONT'); // a paused process handles SIGTERM only once it runs again
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await this.#exited;
    clearTimeout(timer);
  }

  /** SIGSTOP: the process keeps its sockets open but answers nothing (a hung machine). */
  pause(): void {
    this.signal('SIGSTOP');
  }

  resume(): void {
    this.signal('SIGCONT');
  }

  /** Resolves when the process exits (at once if it is not running). */
  exited(): Promise<number | null> {
    return this.#exited;
  }

  /** SIGKILL, as a crash. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.signal('SIGKILL');
    await this.#exited;
  }
}

/** A currently free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/**
 * How a service process runs. By default compiled, as deployed: `node services/<svc>/dist/main.js`
 * (`npm run build` makes it). With KEYSHARD_FROM_SOURCE=1 in the environment, from its
 * TypeScript sources instead: `node --conditions=keyshard-source --import tsx services/<svc>/src/main.ts`
 * (no build needed; workspace packages resolve to their sources too). `entry` is the source path.
 *
 * Compiled output that is missing, or older than a source file it was built from, throws an
 * error saying to run `npm run build`: a test never silently runs stale code.
 */
export function nodeService(entry: string, configFile: string): { command: string; args: string[] } {
  if (process.env.KEYSHARD_FROM_SOURCE === '1')
    return { command: process.execPath, args: ['--conditions=keyshard-source', '--import', 'tsx', path.join(REPO_ROOT, entry), '--config', configFile] };
  const compiled = entry.replace(/\/src\/(.+)\.ts$/, '/dist/$1.js');
  assertBuilt();
  if (!existsSync(path.join(REPO_ROOT, compiled))) throw new Error(`${compiled} is missing: run \`npm run build\` (or set KEYSHARD_FROM_SOURCE=1 to run the TypeScript sources)`);
  return { command: process.execPath, args: [path.join(REPO_ROOT, compiled), '--config', configFile] };
}

let built: true | undefined;

/**
 * Throws unless every workspace (packages/*, services/*) has been built since its sources last
 * changed: `tsc -b` rewrites a project's dist/.tsbuildinfo whenever one of its inputs is newer,
 * so a source file (of those the build compiled; its inputs are listed there) newer than it,
 * or deleted since, means `npm run build` has not run since. Checked once per process: a few
 * milliseconds.
 */
export function assertBuilt(): void {
  if (built) return;
  const stale: string[] = [];
  for (const group of ['packages', 'services']) {
    for (const name of readdirSync(path.join(REPO_ROOT, group))) {
      const dir = path.join(REPO_ROOT, group, name);
      // Without its sources (an image or install that ships dist/ only) there is nothing to compare.
      if (!existsSync(path.join(dir, 'tsconfig.build.json')) || !existsSync(path.join(dir, 'src'))) continue;
      const info = path.join(dir, 'dist/.tsbuildinfo');
      if (!existsSync(info)) {
        stale.push(`${group}/${name} (not built)`);
        continue;
      }
      const builtAt = statSync(info).mtimeMs;
      const src = path.join(dir, 'src') + path.sep;
      // src/generated/ (packages/rpc: types from the protos, `npm run gen:proto` rewrites them)
      // holds types only, which nothing runs: regenerating them leaves the compiled code current.
      const inputs = (JSON.parse(readFileSync(info, 'utf8')) as { fileNames: string[] }).fileNames
        .map((f) => path.resolve(path.dirname(info), f))
        .filter((f) => f.startsWith(src) && !f.startsWith(path.join(src, 'generated') + path.sep));
      const newer = inputs.find((f) => (statSync(f, { throwIfNoEntry: false })?.mtimeMs ?? Infinity) > builtAt);
      if (newer) stale.push(`${group}/${name} (${path.relative(REPO_ROOT, newer)} changed since the last build)`);
    }
  }
  if (stale.length > 0)
    throw new Error(`the compiled services are out of date: run \`npm run build\` (or set KEYSHARD_FROM_SOURCE=1 to run the TypeScript sources). Stale: ${stale.join('; ')}`);
  built = true;
}
