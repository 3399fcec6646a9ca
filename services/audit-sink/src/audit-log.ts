/**
 * AuditLog: the tamper-evident, append-only audit log of the sink — an RFC 6962 Merkle tree
 * over the records in the segment files (segments.ts), with signed checkpoints.
 *
 * Invariants:
 * - indexes are 0,1,2,… with no gaps; record i is leaf i of the tree; event ids are unique;
 * - an append is acknowledged only after its bytes are fdatasync'ed. Group commit: appends
 *   that arrive while a write+fsync runs share the next one (one write, one fsync, one
 *   signature per group), so throughput grows with load instead of fsyncs;
 * - every acknowledgement carries a checkpoint signed for a tree that contains the batch;
 * - on open, every record is re-verified and the tree rebuilt; every stored checkpoint must
 *   verify against it: a log cut shorter than a checkpoint, or changed behind one, does not
 *   start. A torn last line (never acknowledged) is cut.
 * Threat model: whoever can write the data dir can change it, but not without the change
 * showing against any checkpoint held outside (the signing key lives outside the data dir).
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { KeyshardError, invalidArgument } from '@keyshard/errors';
import {
  CHECKPOINTS_FILE,
  IdIndex,
  KEYS_DIR,
  MerkleTree,
  checkRecord,
  checkpointProblem,
  encodeEntry,
  encodeRecords,
  loadPublicKeys,
  readCheckpointFile,
  scanSegments,
  type EncodedEntry,
  type LogEvent,
  type SignedCheckpoint,
  type StoredEvent,
} from '@keyshard/audit-log';
import { CheckpointFile, publishKey, type CheckpointSigner } from './checkpoint-store.ts';
import { lockDir } from './lock.ts';
import { OffsetList, SegmentFiles, type StoredRecord } from './segments.ts';

export type { StoredRecord } from './segments.ts';

export interface AuditLogOptions {
  signer: CheckpointSigner;
  /** The active segment is closed and a new one started once it reaches this size. */
  segmentBytes?: number;
  /** How often a new checkpoint is written to checkpoints.log (if the tree grew). */
  checkpointIntervalMs?: number;
  /** Called once when a write or fsync fails; the log refuses everything after it. */
  onFailure?: (e: Error) => void;
  /**
   * Called after each group commit with the records it newly stored (duplicates skipped), in
   * index order, once they are durable. Synchronous and must not throw (what it throws is dropped).
   */
  onCommitted?: (records: readonly CommittedRecord[]) => void;
}

/** A record just made durable: its index and the event as given to append(). */
export interface CommittedRecord {
  index: number;
  event: LogEvent;
}

/** What an append returns: where the batch went and a signed checkpoint that covers it. */
export interface Receipt {
  firstIndex: number; // index of the first newly stored event (= tree size when all were duplicates)
  count: number; // events newly stored (duplicates are acknowledged but not counted)
  checkpoint: SignedCheckpoint;
}

export interface OpenInfo {
  records: number;
  truncatedBytes: number;
}

interface PendingAppend {
  events: readonly LogEvent[];
  ids: string[]; // as at append(), like the entries
  // Canonical JSON and leaf hash, computed at append(): a bad event fails only its caller, and
  // the work overlaps the write and fsync of the group before.
  entries: EncodedEntry[];
  resolve: (r: Receipt) => void;
  reject: (e: unknown) => void;
}

const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
const DEFAULT_CHECKPOINT_MS = 10_000;

export class AuditLog {
  private readonly tree: MerkleTree;
  private readonly ids: IdIndex;
  private readonly grown = new EventEmitter();
  private queue: PendingAppend[] = [];
  private flushing: Promise<void> | undefined;
  private failure: Error | undefined;
  private closed = false;
  private latest: SignedCheckpoint;
  private stored: number; // tree size of the last checkpoint in checkpoints.log
  private readonly timer: NodeJS.Timeout;

  private constructor(
    readonly dataDir: string,
    private readonly files: SegmentFiles,
    private readonly checkpoints: CheckpointFile,
    tree: MerkleTree,
    ids: IdIndex,
    lastStored: SignedCheckpoint | undefined,
    readonly openInfo: OpenInfo,
    private readonly opts: AuditLogOptions,
    private readonly unlock: () => void,
  ) {
    this.tree = tree;
    this.ids = ids;
    this.grown.setMaxListeners(0);
    this.latest = opts.signer.sign(tree.size, tree.root());
    this.stored = lastStored?.key_id === this.latest.key_id ? lastStored.tree_size : -1;
    this.timer = setInterval(() => void this.persistCheckpoint().catch(() => {}), opts.checkpointIntervalMs ?? DEFAULT_CHECKPOINT_MS);
    this.timer.unref();
  }

  /** Opens (creating if needed), verifies everything and cuts a torn tail; FAILED_PRECONDITION if tampered. */
  static async open(dataDir: string, opts: AuditLogOptions): Promise<AuditLog> {
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const unlock = lockDir(dataDir);
    try {
      const tree = new MerkleTree();
      const ids = new IdIndex();
      const offsets = new OffsetList();
      const scan = scanSegments(dataDir, (_i, rec, offset) => {
        if (!ids.add(rec.event.id, _i)) throw refuse(dataDir, _i, `duplicate event id (first stored at index ${ids.indexOf(rec.event.id)})`);
        tree.appendLeafHash(rec.leaf);
        offsets.push(offset);
      });
      if (scan.bad) throw refuse(dataDir, scan.bad.index, scan.bad.reason);
      const cps = readCheckpointFile(path.join(dataDir, CHECKPOINTS_FILE));
      if (cps.bad) throw new KeyshardError('FAILED_PRECONDITION', `${CHECKPOINTS_FILE} line ${cps.bad.line}: ${cps.bad.reason}; refusing to start`);
      publishKey(dataDir, opts.signer);
      const keys = loadPublicKeys(path.join(dataDir, KEYS_DIR));
      for (const c of cps.checkpoints) {
        const problem = checkpointProblem(c, keys) ?? rootProblem(tree, c);
        if (problem) throw new KeyshardError('FAILED_PRECONDITION', `audit log ${dataDir} does not match its checkpoint of size ${c.tree_size}: ${problem}; refusing to start`);
      }
      const files = await SegmentFiles.open(dataDir, scan, offsets, opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES);
      const checkpoints = await CheckpointFile.open(dataDir, cps);
      const info = { records: scan.records, truncatedBytes: scan.tornBytes };
      const log = new AuditLog(dataDir, files, checkpoints, tree, ids, cps.checkpoints.at(-1), info, opts, unlock);
      await log.persistCheckpoint();
      return log;
    } catch (e) {
      unlock();
      throw e;
    }
  }

  get size(): number {
    return this.tree.size;
  }

  get syncs(): number {
    return this.files.syncs;
  }

  /** The newest signed checkpoint (signed at the last commit, covering every acknowledged event). */
  get checkpoint(): SignedCheckpoint {
    return this.latest;
  }

  /** Appends events; resolves once they are durable. Events whose id is already stored are skipped. */
  append(events: readonly LogEvent[]): Promise<Receipt> {
    if (this.failure) return Promise.reject(writeFailed(this.failure));
    if (this.closed) return Promise.reject(new KeyshardError('UNAVAILABLE', 'audit log is closed', { reason: 'AUDIT_UNAVAILABLE' }));
    let entries: EncodedEntry[];
    try {
      entries = encodeEvents(events);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ events, ids: events.map((e) => e.id), entries, resolve, reject });
      // Deferred by a microtask so appends made in the same tick join the same group.
      this.flushing ??= Promise.resolve().then(() => this.flushLoop());
    });
  }

  /** One write + one fdatasync + one signature per group: everything queued while the previous ran. */
  private async flushLoop(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.failure) {
        const group = this.queue;
        this.queue = [];
        const entries: EncodedEntry[] = [];
        const committed: CommittedRecord[] = [];
        const spans: { firstIndex: number; count: number }[] = [];
        const first = this.tree.size;
        for (const p of group) {
          const firstOfCaller = first + entries.length;
          for (let i = 0; i < p.ids.length; i++) {
            // Taken before the write (one probe: add says whether it was new): a later
            // duplicate in this group is skipped, and one in a later group is acknowledged
            // only after this group's fsync. If the write fails, the log refuses everything.
            if (!this.ids.add(p.ids[i]!, first + entries.length)) continue;
            committed.push({ index: first + entries.length, event: p.events[i]! });
            entries.push(p.entries[i]!);
          }
          spans.push({ firstIndex: firstOfCaller, count: first + entries.length - firstOfCaller });
        }
        if (entries.length > 0) {
          try {
            await this.files.append(encodeRecords(first, entries), entries.length);
          } catch (e) {
            // After a failed write or fsync the page cache cannot be trusted (fsyncgate):
            // refuse everything until a restart re-verifies the files and cuts the torn tail.
            this.failure = e as Error;
            for (const p of group) p.reject(writeFailed(this.failure));
            this.opts.onFailure?.(this.failure);
            break;
          }
          for (const entry of entries) this.tree.appendLeafHash(entry.leaf);
          this.latest = this.opts.signer.sign(this.tree.size, this.tree.root());
        }
        const checkpoint = this.latest;
        group.forEach((p, i) => p.resolve({ ...spans[i]!, checkpoint }));
        if (entries.length > 0) {
          this.grown.emit('grown');
          try {
            this.opts.onCommitted?.(committed);
          } catch {
            // An observer's failure is its own; the records are stored and acknowledged.
          }
        }
      }
      if (this.failure) for (const p of this.queue.splice(0)) p.reject(writeFailed(this.failure));
    } finally {
      this.flushing = undefined;
    }
  }

  /** Whether an event with this id is stored (the replication leader skips duplicates when it sequences). */
  hasId(id: string): boolean {
    return this.ids.has(id);
  }

  /**
   * Appends record lines sequenced elsewhere (replication/replica.ts: a batch the majority holds
   * durably, or committed records sent to a replica catching up), byte for byte, so every
   * replica's files are identical. Each line must verify as the record with the next index
   * (@keyshard/audit-log checkRecord: form, index, leaf hash, canonical bytes) and carry an id not
   * stored yet; otherwise nothing is written (INVALID_ARGUMENT). Not to be mixed with append()
   * on the same log: a replicated sink writes only through this.
   */
  async appendRecords(first: number, lines: Buffer, verified?: readonly VerifiedRecord[]): Promise<Receipt> {
    while (this.flushing) await this.flushing;
    if (this.failure) throw writeFailed(this.failure);
    if (this.closed) throw new KeyshardError('UNAVAILABLE', 'audit log is closed', { reason: 'AUDIT_UNAVAILABLE' });
    if (first !== this.tree.size) throw invalidArgument(`records start at ${first}, the log holds ${this.tree.size}`);
    // `verified`: what the caller already checked of exactly these lines (splitRecords, or the
    // leader's own encoding of them); otherwise every line is verified here.
    const checked = verified ?? splitRecords(lines, first);
    // Ids are taken before the write, as append() takes them (one probe each); a batch with a
    // stored or repeated id gives its ids back and is refused whole. If the write fails, the
    // log refuses everything anyway.
    for (let i = 0; i < checked.length; i++) {
      if (this.ids.add(checked[i]!.event.id, first + i)) continue;
      const err = invalidArgument(`record ${first + i}: event id is already stored (at index ${this.ids.indexOf(checked[i]!.event.id)})`);
      for (let j = 0; j < i; j++) this.ids.delete(checked[j]!.event.id);
      throw err;
    }
    if (checked.length > 0) {
      const run = (async () => {
        try {
          await this.files.append(lines, checked.length);
        } catch (e) {
          this.failure = e as Error;
          this.opts.onFailure?.(this.failure);
          throw writeFailed(this.failure);
        }
        for (const c of checked) this.tree.appendLeafHash(c.leaf);
        this.latest = this.opts.signer.sign(this.tree.size, this.tree.root());
      })();
      this.flushing = run.then(
        () => undefined,
        () => undefined,
      );
      try {
        await run;
      } finally {
        this.flushing = undefined;
      }
      this.grown.emit('grown');
      try {
        this.opts.onCommitted?.(checked.map((c, i) => ({ index: first + i, event: c.event })));
      } catch {
        // An observer's failure is its own.
      }
    }
    return { firstIndex: first, count: checked.length, checkpoint: this.latest };
  }

  /** Writes the latest checkpoint to checkpoints.log if the tree grew since the last one written. */
  async persistCheckpoint(): Promise<SignedCheckpoint> {
    const c = this.latest;
    if (c.tree_size > this.stored && !this.failure) {
      this.stored = c.tree_size;
      await this.checkpoints.append(c);
    }
    return c;
  }

  /** A checkpoint signed now for the current tree, written to checkpoints.log (GetCheckpoint). */
  async freshCheckpoint(): Promise<SignedCheckpoint> {
    if (this.latest.tree_size !== this.tree.size) this.latest = this.opts.signer.sign(this.tree.size, this.tree.root());
    return this.persistCheckpoint();
  }

  /** Root hash of the tree of `size` records (default: all). */
  rootAt(size = this.tree.size): Buffer {
    this.checkTreeSize(size);
    return this.tree.root(size);
  }

  leafAt(index: number): Buffer {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.tree.size) throw invalidArgument(`index ${index} is not in the log (size ${this.tree.size})`);
    return this.tree.leaf(index);
  }

  inclusionProof(index: number, size: number): Buffer[] {
    this.checkTreeSize(size);
    if (!Number.isSafeInteger(index) || index < 0 || index >= size) throw invalidArgument(`index ${index} is not in a tree of size ${size}`);
    return this.tree.inclusionProof(index, size);
  }

  consistencyProof(first: number, second: number): Buffer[] {
    this.checkTreeSize(second);
    if (!Number.isSafeInteger(first) || first < 0 || first > second) throw invalidArgument(`first_size ${first} must be within 0..${second}`);
    return this.tree.consistencyProof(first, second);
  }

  private checkTreeSize(size: number): void {
    if (!Number.isSafeInteger(size) || size < 0 || size > this.tree.size) throw invalidArgument(`tree size ${size} is beyond the log's ${this.tree.size}`);
  }

  /** Committed records [from, to). */
  records(from = 0, to = this.tree.size): AsyncGenerator<StoredRecord> {
    if (!Number.isSafeInteger(from) || from < 0) throw invalidArgument('from index is invalid');
    return this.files.read(Math.min(from, this.tree.size), to);
  }

  /** Resolves once the log holds more than `size` records, or when it closes or `signal` aborts. */
  waitForGrowth(size: number, signal?: AbortSignal): Promise<void> {
    if (this.tree.size > size || this.closed || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.grown.off('grown', check);
        this.grown.off('closed', done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const check = () => {
        if (this.tree.size > size) done();
      };
      this.grown.on('grown', check);
      this.grown.once('closed', done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /** Waits for queued appends to be durable, writes a last checkpoint, closes. Later appends fail. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    while (this.flushing) await this.flushing;
    this.grown.emit('closed');
    try {
      await this.persistCheckpoint();
    } finally {
      await this.checkpoints.close();
      await this.files.close();
      this.unlock();
    }
  }
}

/** Each event's canonical JSON and leaf hash (at append, so a bad event fails only its caller); INVALID_ARGUMENT for an event without an id. */
export function encodeEvents(events: readonly LogEvent[]): EncodedEntry[] {
  return events.map((e) => {
    if (typeof e?.id !== 'string' || e.id === '') throw invalidArgument('every audit event needs an id');
    return encodeEntry(e);
  });
}

/** Splits newline-terminated record lines and verifies each as the next index; INVALID_ARGUMENT naming the first bad one. */
/** A record line already checked: its event and leaf hash. */
export interface VerifiedRecord {
  event: StoredEvent;
  leaf: Buffer;
}

export interface SplitRecord {
  index: number;
  event: StoredEvent;
  leaf: Buffer;
  /** Byte range of its line in the buffer. */
  from: number;
  to: number;
}

export function splitRecords(lines: Buffer, first: number): SplitRecord[] {
  const out: SplitRecord[] = [];
  let start = 0;
  while (start < lines.length) {
    const nl = lines.indexOf(0x0a, start);
    if (nl < 0) throw invalidArgument(`record ${first + out.length}: no final newline`);
    const rec = checkRecord(lines.subarray(start, nl + 1), first + out.length);
    if ('reason' in rec) throw invalidArgument(`record ${first + out.length}: ${rec.reason}`);
    out.push({ index: first + out.length, event: rec.event, leaf: rec.leaf, from: start, to: nl + 1 });
    start = nl + 1;
  }
  return out;
}

function rootProblem(tree: MerkleTree, c: SignedCheckpoint): string | undefined {
  if (c.tree_size > tree.size) return `the log holds only ${tree.size} records: records ${tree.size}..${c.tree_size - 1} are missing`;
  return tree.root(c.tree_size).toString('hex') === c.root_hash ? undefined : 'root hash differs: a record before it was changed';
}

function refuse(dataDir: string, index: number, reason: string): KeyshardError {
  return new KeyshardError('FAILED_PRECONDITION', `audit log ${dataDir} failed verification at record ${index}: ${reason}; refusing to start`);
}

function writeFailed(cause: Error): KeyshardError {
  // The OS error stays in the sink's own log (via onFailure); callers get a stable message.
  return new KeyshardError('UNAVAILABLE', 'audit log write failed; the sink must be restarted', { cause, reason: 'AUDIT_UNAVAILABLE' });
}
