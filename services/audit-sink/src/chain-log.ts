/**
 * The audit sink's storage: an append-only, hash-chained log file `<dataDir>/audit.log`.
 *
 * Format: one line per record, `{"index":n,"prev":hex,"hash":hex,"event":{...}}\n`, where
 * hash = SHA-256(prev hash bytes || canonicalJson(event)) and the first record's prev is 32
 * zero bytes. Every line is exactly the canonical serialization, so the file is determined
 * byte for byte by its events.
 *
 * Invariants:
 * - indexes are 0,1,2,… with no gaps; every record's prev is the previous record's hash;
 * - an append is acknowledged only after its bytes are fdatasync'ed (group commit: appends
 *   that arrive during an fsync share the next one); event ids are unique in the file (the
 *   set of ids is kept in memory: fine at this size, the Merkle log will index them);
 * - a final line without its newline was never acknowledged, so it is truncated on open;
 *   any complete line that does not verify stops the sink from starting.
 * Threat model: detects edits, insertions and deletions inside the chain by anyone who
 * can write the file but does not know a checkpoint held elsewhere. It does NOT stop an
 * attacker rewriting the whole chain or cutting its tail: readers must compare against
 * checkpoints they kept (GetCheckpoint). The RFC 6962 Merkle log with signed checkpoints
 * replaces this chain later; the event type and the Append contract stay.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { canonicalJson } from '@keyshard/crypto';
import { KeyshardError } from '@keyshard/errors';
import { lockDir } from './lock.ts';

export const GENESIS = Buffer.alloc(32);
export const LOG_FILE = 'audit.log';

/** What the chain stores. The id makes delivery idempotent; the rest is opaque to the chain. */
export interface ChainEvent {
  readonly id: string;
}

/** An event as read back from the file. */
export type StoredEvent = ChainEvent & Record<string, unknown>;

export interface AppendResult {
  firstIndex: number; // index of the first newly stored event (= size when all were duplicates)
  count: number; // events newly stored (duplicates are acknowledged but not counted)
  headHash: string;
}

export function chainHash(prev: Buffer, eventJson: string): Buffer {
  return createHash('sha256').update(prev).update(eventJson, 'utf8').digest();
}

function recordLine(index: number, prev: Buffer, hash: Buffer, eventJson: string): string {
  return `{"index":${index},"prev":"${prev.toString('hex')}","hash":"${hash.toString('hex')}","event":${eventJson}}\n`;
}

export interface ScanResult {
  records: number;
  headHash: Buffer;
  ids: Set<string>;
  validBytes: number; // bytes of verified, newline-terminated records
  tornBytes: number; // bytes after them without a final newline (an unacknowledged torn write)
  bad?: { index: number; reason: string };
}

/**
 * Reads and verifies a chain file synchronously, in 1 MiB chunks. Stops at the first record
 * that does not verify. Used on open and by the offline verifier.
 */
export function scanChain(file: string, onRecord?: (index: number, hash: Buffer) => void): ScanResult {
  const res: ScanResult = { records: 0, headHash: GENESIS, ids: new Set(), validBytes: 0, tornBytes: 0 };
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return res;
    throw e;
  }
  try {
    const chunk = Buffer.alloc(1 << 20);
    let carry = Buffer.alloc(0);
    for (;;) {
      const n = fs.readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      let buf = carry.length ? Buffer.concat([carry, chunk.subarray(0, n)]) : Buffer.from(chunk.subarray(0, n));
      let start = 0;
      for (let nl = buf.indexOf(0x0a, start); nl >= 0; nl = buf.indexOf(0x0a, start)) {
        const reason = checkLine(buf.subarray(start, nl + 1), res);
        if (reason) {
          res.bad = { index: res.records, reason };
          return res;
        }
        onRecord?.(res.records - 1, res.headHash);
        res.validBytes += nl + 1 - start;
        start = nl + 1;
      }
      carry = buf.subarray(start);
    }
    res.tornBytes = carry.length;
    return res;
  } finally {
    fs.closeSync(fd);
  }
}

/** Verifies one newline-terminated line as record number `res.records`; advances `res`. */
function checkLine(line: Buffer, res: ScanResult): string | undefined {
  let rec: unknown;
  try {
    rec = JSON.parse(line.toString('utf8'));
  } catch {
    return 'record is not valid JSON';
  }
  if (typeof rec !== 'object' || rec === null) return 'record is not a JSON object';
  const { index, prev, hash, event } = rec as Record<string, unknown>;
  if (index !== res.records) return `expected index ${res.records}, found ${JSON.stringify(index)}`;
  if (prev !== res.headHash.toString('hex')) return 'prev does not match the previous record hash';
  if (typeof event !== 'object' || event === null || Array.isArray(event)) return 'event is not an object';
  const id = (event as Record<string, unknown>).id;
  if (typeof id !== 'string' || id === '') return 'event has no id';
  let eventJson: string;
  try {
    eventJson = canonicalJson(event);
  } catch {
    return 'event is not representable';
  }
  const h = chainHash(res.headHash, eventJson);
  if (hash !== h.toString('hex')) return 'hash does not match prev and event';
  // Byte-exact: catches anything the parse forgave (extra keys, whitespace, invalid UTF-8).
  if (!line.equals(Buffer.from(recordLine(res.records, res.headHash, h, eventJson), 'utf8'))) {
    return 'record is not in canonical form';
  }
  if (res.ids.has(id)) return 'duplicate event id';
  res.ids.add(id);
  res.headHash = h;
  res.records += 1;
  return undefined;
}

interface PendingAppend {
  events: readonly ChainEvent[];
  jsons: string[]; // canonical JSON, computed at append() so a bad event fails only its caller
  resolve: (r: AppendResult) => void;
  reject: (e: unknown) => void;
}

export interface OpenInfo {
  records: number;
  truncatedBytes: number;
}

export interface StoredRecord {
  index: number;
  event: StoredEvent;
  offset: number; // byte offset of the record's line
  nextOffset: number;
}

export class ChainLog {
  /** fdatasync calls made; group commit keeps this far below the number of appends. */
  syncs = 0;
  readonly file: string;
  private head: Buffer;
  private count: number;
  private bytes: number; // committed (fsynced) bytes; readers never look past this
  private readonly ids: Set<string>;
  private queue: PendingAppend[] = [];
  private flushing: Promise<void> | undefined;
  private failure: Error | undefined;
  private closed = false;

  private constructor(
    readonly dataDir: string,
    private readonly fh: fs.promises.FileHandle,
    scan: ScanResult,
    readonly openInfo: OpenInfo,
    private readonly unlock: () => void,
    private readonly onFailure?: (e: Error) => void,
  ) {
    this.file = path.join(dataDir, LOG_FILE);
    this.head = scan.headHash;
    this.count = scan.records;
    this.bytes = scan.validBytes;
    this.ids = scan.ids;
  }

  /** Opens (creating if needed), verifies and repairs a torn tail; throws FAILED_PRECONDITION if tampered. */
  static async open(dataDir: string, opts: { onFailure?: (e: Error) => void } = {}): Promise<ChainLog> {
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const file = path.join(dataDir, LOG_FILE);
    const unlock = lockDir(dataDir);
    let fh: fs.promises.FileHandle | undefined;
    try {
      const scan = scanChain(file);
      if (scan.bad) {
        throw new KeyshardError(
          'FAILED_PRECONDITION',
          `audit log ${file} failed verification at record ${scan.bad.index}: ${scan.bad.reason}; refusing to start`,
        );
      }
      const created = !fs.existsSync(file);
      fh = await fs.promises.open(file, 'a', 0o600);
      if (scan.tornBytes > 0) {
        await fh.truncate(scan.validBytes);
        await fh.datasync();
      }
      // Make the file's directory entry durable, or a crash could lose an acknowledged log.
      if (created) fsyncDir(dataDir);
      const info = { records: scan.records, truncatedBytes: scan.tornBytes };
      return new ChainLog(dataDir, fh, scan, info, unlock, opts.onFailure);
    } catch (e) {
      await fh?.close();
      unlock();
      throw e;
    }
  }

  get size(): number {
    return this.count;
  }

  get headHash(): string {
    return this.head.toString('hex');
  }

  get committedBytes(): number {
    return this.bytes;
  }

  /** Appends events; resolves once they are durable. Events already in the file are skipped. */
  append(events: readonly ChainEvent[]): Promise<AppendResult> {
    if (this.failure) return Promise.reject(unavailable(this.failure));
    if (this.closed) return Promise.reject(new KeyshardError('UNAVAILABLE', 'audit log is closed'));
    let jsons: string[];
    try {
      jsons = events.map((e) => {
        if (typeof e?.id !== 'string' || e.id === '') throw new KeyshardError('INVALID_ARGUMENT', 'every audit event needs an id');
        return canonicalJson(e);
      });
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ events, jsons, resolve, reject });
      // Deferred by a microtask so appends made in the same tick join the same group.
      this.flushing ??= Promise.resolve().then(() => this.flushLoop());
    });
  }

  /** One write + one fdatasync per group: everything queued while the previous sync ran. */
  private async flushLoop(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.failure) {
        const group = this.queue;
        this.queue = [];
        let head = this.head;
        let count = this.count;
        const seen = new Set<string>();
        const lines: string[] = [];
        const results: AppendResult[] = [];
        for (const p of group) {
          const first = count;
          p.events.forEach((ev, i) => {
            if (this.ids.has(ev.id) || seen.has(ev.id)) return;
            const h = chainHash(head, p.jsons[i]!);
            lines.push(recordLine(count, head, h, p.jsons[i]!));
            seen.add(ev.id);
            head = h;
            count += 1;
          });
          results.push({ firstIndex: first, count: count - first, headHash: head.toString('hex') });
        }
        const buf = Buffer.from(lines.join(''), 'utf8');
        try {
          if (buf.length > 0) {
            for (let off = 0; off < buf.length; ) off += (await this.fh.write(buf, off, buf.length - off)).bytesWritten;
            await this.fh.datasync();
            this.syncs += 1;
          }
        } catch (e) {
          // After a failed write or fsync the page cache cannot be trusted (fsyncgate):
          // refuse everything until a restart re-verifies the file and drops the torn tail.
          this.failure = e as Error;
          for (const p of group) p.reject(unavailable(this.failure));
          this.onFailure?.(this.failure);
          break;
        }
        this.head = head;
        this.count = count;
        this.bytes += buf.length;
        for (const id of seen) this.ids.add(id);
        group.forEach((p, i) => p.resolve(results[i]!));
      }
      if (this.failure) for (const p of this.queue.splice(0)) p.reject(unavailable(this.failure));
    } finally {
      this.flushing = undefined;
    }
  }

  /** Reads committed records from a position (byte offset + index), without verifying again. */
  async *records(fromOffset = 0, fromIndex = 0): AsyncGenerator<StoredRecord> {
    const end = this.bytes;
    if (fromOffset < 0 || fromOffset > end) throw new KeyshardError('INVALID_ARGUMENT', 'position is outside the log');
    const fh = await fs.promises.open(this.file, 'r');
    try {
      const chunk = Buffer.alloc(1 << 20);
      let carry = Buffer.alloc(0);
      let pos = fromOffset; // file offset of carry[0]
      let index = fromIndex;
      while (pos + carry.length < end) {
        const want = Math.min(chunk.length, end - pos - carry.length);
        const { bytesRead } = await fh.read(chunk, 0, want, pos + carry.length);
        if (bytesRead === 0) break;
        const buf = Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
        let start = 0;
        for (let nl = buf.indexOf(0x0a); nl >= 0; nl = buf.indexOf(0x0a, start)) {
          const rec = parseRecord(buf.subarray(start, nl));
          if (!rec || rec.index !== index) throw new KeyshardError('INVALID_ARGUMENT', 'position is not a record boundary');
          yield { index, event: rec.event, offset: pos + start, nextOffset: pos + nl + 1 };
          index += 1;
          start = nl + 1;
        }
        carry = Buffer.from(buf.subarray(start));
        pos += start;
      }
    } finally {
      await fh.close();
    }
  }

  /** Waits for queued appends to be durable, then closes the file. Later appends fail. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.flushing) await this.flushing;
    await this.fh.close();
    this.unlock();
  }
}

function parseRecord(line: Buffer): { index: number; event: StoredEvent } | undefined {
  try {
    const r = JSON.parse(line.toString('utf8')) as { index?: unknown; event?: unknown };
    return typeof r.index === 'number' && typeof r.event === 'object' && r.event !== null
      ? { index: r.index, event: r.event as StoredEvent }
      : undefined;
  } catch {
    return undefined;
  }
}

function unavailable(cause: Error): KeyshardError {
  // The OS error stays in the sink's own log (via onFailure); callers get a stable message.
  return new KeyshardError('UNAVAILABLE', 'audit log write failed; the sink must be restarted', { cause });
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
