/**
 * Streams of bytes through a worker thread with a capped heap: what backups and restores use,
 * so that their memory is bounded by the cap whatever the number of keys (rather than by what
 * V8's heap growth on the serving thread happens to allow) and their CPU (AES-GCM per chunk, an
 * unwrap per key version, protobuf for every etcd page) stays off the serving thread.
 *
 * Protocol, both directions: `block` messages carry bytes (moved, not copied, between threads);
 * the receiver answers each with `consumed`, and a sender keeps at most BLOCKS_AHEAD unconsumed
 * (flow control end to end: a slow gRPC peer slows the etcd reads). `end` closes a direction;
 * the worker ends with `result` or `error` (a KeyshardError's code, message and reason, nothing else).
 */
import { Worker, isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { KeyshardError, type ErrorCode, type Reason } from '@keyshard/errors';
import type { EtcdConfig } from '@keyshard/store';

const BLOCKS_AHEAD = 4;
/** The heap cap (MiB): several times what a backup or a restore holds at once. */
const OLD_GENERATION_MB = 64;
const YOUNG_GENERATION_MB = 16;

type Message =
  | { block: Uint8Array }
  | { end: true }
  | { consumed: true }
  | { progress: number }
  | { result: unknown }
  | { error: { code: ErrorCode; message: string; reason: Reason } };

interface Envelope {
  module: string;
  data: unknown;
}

/** One direction's flow control and queue, on either side of the thread boundary. */
class Channel {
  #post: (m: Message, transfer?: ArrayBuffer[]) => void;
  #queue: (Buffer | null)[] = [];
  #unconsumed = 0;
  #waiters: (() => void)[] = [];
  #closed: Error | undefined;

  constructor(post: (m: Message, transfer?: ArrayBuffer[]) => void) {
    this.#post = post;
  }

  /** Handles a flow message; false if it is not one. */
  take(m: Message): boolean {
    if ('block' in m) this.#queue.push(Buffer.from(m.block.buffer, m.block.byteOffset, m.block.byteLength));
    else if ('end' in m) this.#queue.push(null);
    else if ('consumed' in m) this.#unconsumed--;
    else return false;
    this.#notify();
    return true;
  }

  close(e: Error): void {
    this.#closed ??= e;
    this.#notify();
  }

  #notify(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  async #wait(): Promise<void> {
    if (this.#closed) throw this.#closed;
    await new Promise<void>((r) => this.#waiters.push(r));
    if (this.#closed) throw this.#closed;
  }

  async send(block: Buffer): Promise<void> {
    while (this.#unconsumed >= BLOCKS_AHEAD) await this.#wait();
    const copy = new Uint8Array(block); // its own ArrayBuffer, so moving it moves nothing else
    this.#unconsumed++;
    this.#post({ block: copy }, [copy.buffer as ArrayBuffer]);
  }

  end(): void {
    this.#post({ end: true });
  }

  async *received(): AsyncGenerator<Buffer> {
    for (;;) {
      while (this.#queue.length === 0) await this.#wait();
      const b = this.#queue.shift()!;
      if (b === null) return;
      this.#post({ consumed: true });
      yield b;
    }
  }
}

/** The parent's handle on a worker running `module` (which calls `serveBlockWorker`). */
export class BlockWorker<Result> {
  readonly result: Promise<Result>;
  #worker: Worker;
  #channel: Channel;

  /** `what` names the operation in errors ("backup", "restore"). */
  constructor(module: string, data: unknown, what: string, progress: (done: number) => void = () => {}) {
    this.#worker = new Worker(new URL('./worker-entry.mjs', import.meta.url), {
      workerData: { module, data } satisfies Envelope,
      resourceLimits: { maxOldGenerationSizeMb: OLD_GENERATION_MB, maxYoungGenerationSizeMb: YOUNG_GENERATION_MB },
    });
    this.#channel = new Channel((m, transfer) => this.#worker.postMessage(m, transfer));
    this.result = new Promise<Result>((resolve, reject) => {
      this.#worker.on('message', (m: Message) => {
        if (this.#channel.take(m)) return;
        if ('progress' in m) progress(m.progress);
        else if ('result' in m) resolve(m.result as Result);
        else if ('error' in m) reject(new KeyshardError(m.error.code, m.error.message, { reason: m.error.reason }));
      });
      this.#worker.on('error', (e: Error & { code?: string }) =>
        reject(new KeyshardError('INTERNAL', e.code === 'ERR_WORKER_OUT_OF_MEMORY' ? `the ${what} went over its memory bound` : `the ${what} worker failed`, { cause: e })),
      );
      this.#worker.on('exit', () => reject(new KeyshardError('INTERNAL', `the ${what} worker exited early`)));
    });
    this.result.then(
      () => this.#channel.close(new KeyshardError('INTERNAL', `the ${what} worker has finished`)),
      (e: Error) => this.#channel.close(e),
    );
  }

  /** Sends every block of `bytes` to the worker, then the end. */
  async send(bytes: AsyncIterable<Buffer>): Promise<void> {
    for await (const b of bytes) await this.#channel.send(b);
    this.#channel.end();
  }

  /** The blocks the worker sends, until it ends them. */
  received(): AsyncGenerator<Buffer> {
    return this.#channel.received();
  }

  /** Stops the worker (at once if it is still running). */
  async close(): Promise<void> {
    await this.#worker.terminate();
  }
}

/** What a worker module's function gets: the parent's blocks, a way to send its own, progress. */
export interface WorkerSide {
  received(): AsyncGenerator<Buffer>;
  send(block: Buffer): Promise<void>;
  /** Ends the blocks sent (the parent's `received()` returns). */
  end(): void;
  progress(done: number): void;
}

/**
 * Runs `fn` if this thread is a BlockWorker of `module` (pass `import.meta.url`): its return
 * value becomes the parent's `result`; a KeyshardError is passed on with its code, any other
 * error as INTERNAL without its message (it may name what it should not).
 */
export async function serveBlockWorker<Data>(module: string, fn: (data: Data, side: WorkerSide) => Promise<unknown>): Promise<void> {
  if (isMainThread || (workerData as Envelope | undefined)?.module !== module) return;
  const port = parentPort as MessagePort;
  const post = (m: Message, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer);
  const channel = new Channel(post);
  port.on('message', (m: Message) => channel.take(m));
  try {
    const result = await fn((workerData as Envelope).data as Data, {
      received: () => channel.received(),
      send: (b) => channel.send(b),
      end: () => channel.end(),
      progress: (done) => post({ progress: done }),
    });
    post({ result });
  } catch (e) {
    post({ error: e instanceof KeyshardError ? { code: e.code, message: e.message, reason: e.reason } : { code: 'INTERNAL', message: `internal error (${(e as Error).name})`, reason: 'INTERNAL' } });
  }
}

/** An EtcdConfig as a worker receives it: its Buffers back as Buffers (structured clone makes them Uint8Arrays). */
export function etcdConfigInWorker(cfg: EtcdConfig): EtcdConfig {
  return { ...cfg, tls: cfg.tls && { ca: Buffer.from(cfg.tls.ca), cert: Buffer.from(cfg.tls.cert), key: Buffer.from(cfg.tls.key) } };
}
