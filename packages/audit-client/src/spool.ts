/**
 * A bounded durable spool on local disk for crypto-operation audit events (brief, "Audit
 * fails closed for ceremonies, admin and destructive operations; crypto operations never go
 * unrecorded (a bounded durable spool, then refusal)").
 *
 * Invariants:
 *  - `record()` resolves only after the event is durable in `<dir>/spool.log` (opened O_DSYNC,
 *    so a write returns once its data is on stable storage, as if followed by fdatasync);
 *    appends that arrive while a write is on its way to disk share the next write (group
 *    commit); up to MAX_GROUPS_IN_FLIGHT groups are written at once, at consecutive offsets,
 *    completing in order;
 *  - events are shipped to the sink in spool order; the shipped position is saved after each
 *    acknowledged batch. A crash between ack and save re-ships events, which the sink stores
 *    once (events carry their id). A torn, never-acknowledged tail line is dropped on open;
 *  - when more than `maxPending` events wait to be shipped, `record()` refuses with
 *    UNAVAILABLE: an outage of the sink turns into refusal, never into unrecorded operations;
 *  - the spool never holds secrets: only audit events, which never carry any.
 */
import { closeSync, constants, existsSync, fdatasyncSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, write, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { KeyshardError } from '@keyshard/errors';
import { runOutsideCall } from '@keyshard/rpc';
import type { Logger } from '@keyshard/config';
import type { AuditClient } from './client.ts';
import { completeEvent, type AuditEvent, type AuditEventInput } from './event.ts';
import type { AuditRecorder } from './observer.ts';

export interface AuditSpoolOptions {
  dir: string;
  source: string;
  /** Events recorded but not yet acknowledged by the sink before record() refuses. */
  maxPending?: number;
  /** Events per shipping batch. */
  shipBatch?: number;
  /** How long the oldest unshipped event may wait for a fuller batch. */
  shipDelayMs?: number;
  /** Shipped bytes at the head of the spool file above which the file is rewritten without them. */
  compactBytes?: number;
}

interface Waiter {
  line: string; // the event's JSON and a newline
  event: AuditEvent;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Writes all of `buf` at `position` (looping over short writes). */
function writeAt(fd: number, buf: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (offset: number) =>
      write(fd, buf, offset, buf.length - offset, position + offset, (e, n) => {
        if (e) reject(e);
        else if (offset + n < buf.length) step(offset + n);
        else resolve();
      });
    step(0);
  });
}

/**
 * Groups being written at once. One: every event that arrives during a write's disk round trip
 * joins the next write. With three in flight (pipelined), 64 concurrent Encrypts made about
 * three times as many O_DSYNC writes, each costing 150-350 µs of CPU, and the audited Encrypt
 * ran at 0.81 of the unaudited one; with one, 0.85 (bench:audit), at the same append throughput.
 */
const MAX_GROUPS_IN_FLIGHT = 1;

/** The refusal while the spool cannot write (or cannot trust) its file. */
const cannotWrite = (cause?: Error) => new KeyshardError('UNAVAILABLE', 'audit spool cannot write to disk', { ...(cause ? { cause } : {}), reason: 'AUDIT_UNAVAILABLE' });

interface Group {
  waiters: Waiter[];
  end: number; // file offset just past this group
  state: 'writing' | 'durable' | Error;
}

export class AuditSpool implements AuditRecorder {
  readonly #opts: Required<AuditSpoolOptions>;
  readonly #file: string;
  readonly #offsetFile: string;
  #fd: number | undefined;
  #size = 0; // bytes durably in the spool file, in order (every group before it is durable too)
  #reserved = 0; // end of the last group handed to a write
  #groups: Group[] = []; // written or being written but not yet complete, oldest first
  #writes = 0; // writes running
  #failed = false; // a write failed; no new write until the running ones are done
  #broken: Error | undefined; // the spool file cannot be trusted to stay (compaction failed midway): refuse
  #compactAt = 0; // shipped bytes at which the next compaction is tried (set at open)
  #shippedTo = 0; // byte offset up to which the sink has acknowledged
  #unshipped: { event: AuditEvent; end: number }[] = [];
  #waiting: Waiter[] = [];
  #flushQueued = false;
  #shipping = false;
  #closed = false;
  #savedAt = 0;
  #shipTimer: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;

  private constructor(opts: AuditSpoolOptions, private readonly client: AuditClient, private readonly log: Logger) {
    this.#opts = { maxPending: 100_000, shipBatch: 500, shipDelayMs: 50, compactBytes: 8 * 1024 * 1024, ...opts };
    this.#compactAt = this.#opts.compactBytes;
    this.#file = path.join(opts.dir, 'spool.log');
    this.#offsetFile = path.join(opts.dir, 'spool.offset');
  }

  /** Opens (or creates) the spool, queues what a previous run left unshipped, starts shipping. */
  static async open(opts: AuditSpoolOptions, client: AuditClient, log: Logger): Promise<AuditSpool> {
    const spool = new AuditSpool(opts, client, log);
    await spool.#load();
    spool.#ship();
    return spool;
  }

  get pending(): number {
    let writing = 0;
    for (const g of this.#groups) writing += g.waiters.length;
    return this.#unshipped.length + this.#waiting.length + writing;
  }

  async #load(): Promise<void> {
    mkdirSync(this.#opts.dir, { recursive: true, mode: 0o700 });
    if (!existsSync(this.#file)) closeSync(openSync(this.#file, 'a', 0o600));
    const data = readFileSync(this.#file);
    const complete = data.lastIndexOf(0x0a) + 1; // a torn tail was never acknowledged to anyone
    const saved = existsSync(this.#offsetFile) ? Number(readFileSync(this.#offsetFile, 'utf8')) : 0;
    // A saved position counts only on a line boundary (a crash can pair an older file with a newer offset: re-ship from 0, the sink stores each id once).
    this.#shippedTo = Number.isInteger(saved) && saved >= 0 && saved <= complete && (saved === 0 || data[saved - 1] === 0x0a) ? saved : 0;
    let pos = this.#shippedTo;
    while (pos < complete) {
      const end = data.indexOf(0x0a, pos) + 1;
      this.#unshipped.push({ event: JSON.parse(data.subarray(pos, end - 1).toString('utf8')) as AuditEvent, end });
      pos = end;
    }
    this.#fd = openSync(this.#file, constants.O_RDWR | constants.O_DSYNC);
    if (complete < data.length) {
      ftruncateSync(this.#fd, complete);
      fdatasyncSync(this.#fd);
    }
    this.#size = complete;
    this.#reserved = complete;
    if (this.#unshipped.length) this.log.info({ events: this.#unshipped.length }, 'audit spool: shipping events left by a previous run');
  }

  record(input: AuditEventInput): Promise<void> {
    if (this.#closed) return Promise.reject(new KeyshardError('UNAVAILABLE', 'audit spool is closed', { reason: 'AUDIT_UNAVAILABLE' }));
    if (this.#broken) return Promise.reject(cannotWrite());
    if (this.pending >= this.#opts.maxPending)
      return Promise.reject(new KeyshardError('UNAVAILABLE', `audit sink unavailable and the local spool is full (${this.pending} events)`, { reason: 'AUDIT_UNAVAILABLE' }));
    let event: AuditEvent;
    try {
      event = completeEvent(input, this.#opts.source);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.#waiting.push({ line: `${JSON.stringify(event)}\n`, event, resolve, reject });
      // The first event of a burst waits one turn of the event loop, so the calls that arrive in
      // the same I/O poll share one write instead of each paying for one.
      if (!this.#flushQueued) {
        this.#flushQueued = true;
        // The group's write and the shipping it starts serve many calls: none's request id goes with them.
        runOutsideCall(() => setImmediate(() => this.#flush()));
      }
    });
  }

  /** Group commit: everything waiting goes out in one durable write (if a write slot is free). */
  #flush(): void {
    this.#flushQueued = false;
    if (this.#waiting.length === 0 || this.#fd === undefined) return;
    if (this.#failed && this.#writes === 0) {
      // The file could not be cut back after a failed write: refuse rather than risk a corrupt spool.
      const err = cannotWrite();
      for (const w of this.#waiting.splice(0)) w.reject(err);
      return;
    }
    if (this.#writes >= MAX_GROUPS_IN_FLIGHT || this.#failed) return; // resumes from #settled
    if (this.#writes === 0 && this.#shippedTo >= this.#compactAt) this.#compact();
    if (this.#broken) {
      const err = cannotWrite();
      for (const w of this.#waiting.splice(0)) w.reject(err);
      return;
    }
    const waiters = this.#waiting.splice(0);
    let text = '';
    for (const w of waiters) text += w.line;
    const buf = Buffer.from(text, 'utf8');
    const group: Group = { waiters, end: this.#reserved + buf.length, state: 'writing' };
    this.#groups.push(group);
    this.#writes++;
    // Callback-style fs (not FileHandle promises): less overhead on the hot path.
    writeAt(this.#fd, buf, this.#reserved).then(
      () => this.#settled(group, 'durable'),
      (e: Error) => this.#settled(group, e),
    );
    this.#reserved = group.end;
  }

  /** Completes groups in file order: a group counts only once every group before it is durable. */
  #settled(group: Group, state: Group['state']): void {
    this.#writes--;
    group.state = state;
    if (state instanceof Error && !this.#failed) this.#fail(state);
    while (this.#groups[0] && this.#groups[0].state === 'durable') {
      const g = this.#groups.shift()!;
      let end = this.#size;
      for (const w of g.waiters) {
        end += Buffer.byteLength(w.line);
        this.#unshipped.push({ event: w.event, end });
      }
      this.#size = end;
      for (const w of g.waiters) w.resolve();
    }
    if (this.#failed && this.#writes === 0) this.#recover();
    this.#ship();
    if (this.#waiting.length) this.#flush();
  }

  /**
   * A write failed: every group not yet complete is refused (a later group may sit past a hole).
   * New writes wait until the writes still running have finished (#recover).
   */
  #fail(e: Error): void {
    this.#failed = true;
    const err = cannotWrite(e);
    this.log.error({ err: e.message }, 'audit spool write failed');
    const failed = this.#groups.splice(0);
    for (const g of failed) for (const w of g.waiters) w.reject(err);
  }

  /** Once no write runs: cuts the file back to its last durable end, so a restart never reads a hole. */
  #recover(): void {
    try {
      ftruncateSync(this.#fd!, this.#size);
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'audit spool cannot truncate after a failed write');
      return; // stays failed: #flush refuses every record() rather than risk a corrupt spool
    }
    this.#reserved = this.#size;
    this.#failed = false;
  }

  /**
   * Ships unshipped events in order, one batch at a time; retries after a failure. A batch
   * goes when `shipBatch` events wait or the oldest has waited `shipDelayMs`: fewer, larger
   * Append batches cost the sink far less than one per group commit.
   */
  #ship(force = false): void {
    if (this.#shipping || this.#closed || this.#unshipped.length === 0) return;
    if (this.#unshipped.length < this.#opts.shipBatch && this.#opts.shipDelayMs > 0) {
      this.#shipTimer ??= setTimeout(() => {
        this.#shipTimer = undefined;
        this.#ship(true);
      }, this.#opts.shipDelayMs);
      if (!force) return;
    }
    clearTimeout(this.#shipTimer);
    this.#shipTimer = undefined;
    this.#shipping = true;
    const batch = this.#unshipped.slice(0, this.#opts.shipBatch);
    this.client.recordAll(batch.map((b) => b.event)).then(
      async () => {
        this.#unshipped.splice(0, batch.length);
        this.#shippedTo = batch[batch.length - 1]!.end;
        try {
          await this.#saveProgress();
        } catch (e) {
          // Only the shipped position was not saved: at worst the sink sees these events again.
          this.log.warn({ err: (e as Error).message }, 'audit spool: cannot save shipping progress');
        }
        this.#shipping = false;
        this.#ship();
      },
      (e: Error) => {
        this.#shipping = false;
        this.log.warn({ err: e.message, pending: this.pending }, 'audit spool: sink not accepting events, will retry');
        this.#retryTimer = setTimeout(() => this.#ship(), 1_000);
        this.#retryTimer.unref();
      },
    );
  }

  /**
   * Saves the shipped position at most every 200 ms. Not fsync'ed on purpose: an older value
   * only re-ships events the sink already holds (it stores each id once). Written synchronously
   * (a few bytes, at most 5 times a second): no write of a position can still be on its way
   * when #compact makes positions relative to a new file.
   */
  async #saveProgress(): Promise<void> {
    if (this.#broken) return;
    const now = Date.now();
    if (now - this.#savedAt < 200 && this.#unshipped.length > 0) return;
    this.#savedAt = now;
    writeFileSync(this.#offsetFile, String(this.#shippedTo));
  }

  /**
   * Drops the shipped head of the spool file (under steady load nothing is ever all shipped at
   * once, so the file must shrink while events wait in it). Runs only inside #flush with no
   * write in flight. Order, each step durable before the next: the unshipped tail to
   * spool.log.tmp; the offset to 0 (a crash now re-ships the old file from its start:
   * duplicates, which the sink stores once); the tail renamed over spool.log. Positions in
   * memory (also those of a batch being shipped) move down by what was dropped.
   */
  #compact(): void {
    const dropped = this.#shippedTo;
    const tmp = `${this.#file}.tmp`;
    let fd: number | undefined;
    try {
      const tail = Buffer.alloc(this.#size - dropped);
      for (let got = 0; got < tail.length; ) {
        const n = readSync(this.#fd!, tail, got, tail.length - got, dropped + got);
        if (n === 0) throw new Error('file shorter than its durable size');
        got += n;
      }
      fd = openSync(tmp, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC | constants.O_DSYNC, 0o600);
      for (let put = 0; put < tail.length; ) put += writeSync(fd, tail, put, tail.length - put, put);
      fdatasyncSync(fd);
      const off = openSync(this.#offsetFile, 'w');
      try {
        writeFileSync(off, '0');
        fdatasyncSync(off);
      } finally {
        closeSync(off);
      }
      renameSync(tmp, this.#file);
    } catch (e) {
      // Nothing changed but the offset, at worst set to 0 (the next save corrects it; a crash re-ships).
      if (fd !== undefined) closeSync(fd);
      rmSync(tmp, { force: true });
      this.#compactAt = dropped + this.#opts.compactBytes; // not again at every group commit
      this.log.warn({ err: (e as Error).message }, 'audit spool: cannot compact, will try again');
      return;
    }
    try {
      const dir = openSync(this.#opts.dir, 'r');
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    } catch (e) {
      // Writes to the new file could vanish with its name after a crash: refuse every record() instead.
      this.#broken = e as Error;
      this.log.error({ err: (e as Error).message }, 'audit spool: cannot make the compacted file durable; refusing audit events');
    }
    closeSync(this.#fd!);
    this.#fd = fd; // the tail's file, now spool.log
    for (const u of this.#unshipped) u.end -= dropped;
    this.#size -= dropped;
    this.#reserved -= dropped;
    this.#shippedTo = 0;
    this.#compactAt = this.#opts.compactBytes;
  }

  /** Waits (up to `timeoutMs`) for the spool to drain to the sink, then stops shipping. */
  async close(timeoutMs = 2_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#shipTimer);
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }
}

/**
 * Routes each event: crypto operations to the durable spool (they continue while the spool
 * has room), everything else straight to the sink (ceremonies and admin fail closed at once).
 */
export class RoutedAudit implements AuditRecorder {
  constructor(
    private readonly direct: AuditRecorder,
    private readonly spool: AuditRecorder,
    private readonly spooledOperations: ReadonlySet<string>,
  ) {}

  record(event: AuditEventInput): Promise<void> {
    return this.spooledOperations.has(event.operation) ? this.spool.record(event) : this.direct.record(event);
  }
}
