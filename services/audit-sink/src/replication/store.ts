/**
 * What a sink replica keeps on disk besides its log (replica.ts), in `<dataDir>/replica/`:
 *   state.json    { currentTerm, votedFor, appliedTerm }: Raft's persistent state (§5.1, Figure 2)
 *                 plus the term of the batch the log's last record came in (for the up-to-date
 *                 check of a vote); replaced atomically (write, fsync, rename, fsync the dir)
 *                 before any answer that depends on it is sent;
 *   pending.log   the replica's uncommitted tail: entries `<header JSON>\n<record lines>`, header
 *                 { term, start, bytes, sha256 }; the last complete entry is the tail, earlier
 *                 ones are history (the file is rewritten with only the last once it is large).
 * Neither is part of the audit log: the log (segments/, checkpoints.log, keys/) holds committed
 * records only, and `keyshard audit verify` reads nothing here.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fsyncDir } from '../segments.ts';

export const REPLICA_DIR = 'replica';

export interface ReplicaState {
  currentTerm: number;
  votedFor: string | undefined;
  appliedTerm: number;
}

export interface PendingBatch {
  term: number;
  start: number;
  lines: Buffer;
}

const COMPACT_BYTES = 16 * 1024 * 1024;

export class ReplicaStore {
  private fh: fs.promises.FileHandle | undefined;
  private bytes = 0;

  private constructor(
    private readonly dir: string,
    readonly state: ReplicaState,
    readonly pending: PendingBatch | undefined,
  ) {}

  static async open(dataDir: string): Promise<ReplicaStore> {
    const dir = path.join(dataDir, REPLICA_DIR);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    let state: ReplicaState = { currentTerm: 0, votedFor: undefined, appliedTerm: 0 };
    const sf = path.join(dir, 'state.json');
    if (fs.existsSync(sf)) {
      const raw = JSON.parse(fs.readFileSync(sf, 'utf8')) as Partial<ReplicaState>;
      if (!Number.isSafeInteger(raw.currentTerm) || !Number.isSafeInteger(raw.appliedTerm)) throw new Error(`${sf} is not a replica state file`);
      state = { currentTerm: raw.currentTerm!, votedFor: typeof raw.votedFor === 'string' ? raw.votedFor : undefined, appliedTerm: raw.appliedTerm! };
    }
    const pf = path.join(dir, 'pending.log');
    const { last, validBytes } = fs.existsSync(pf) ? scanPending(fs.readFileSync(pf)) : { last: undefined, validBytes: 0 };
    const store = new ReplicaStore(dir, state, last);
    store.fh = await fs.promises.open(pf, 'a', 0o600);
    await store.fh.truncate(validBytes); // a torn entry was never acknowledged
    store.bytes = validBytes;
    return store;
  }

  /** Persists the Raft state durably before returning. */
  async saveState(s: ReplicaState): Promise<void> {
    const file = path.join(this.dir, 'state.json');
    const tmp = `${file}.tmp`;
    const fh = await fs.promises.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify({ currentTerm: s.currentTerm, votedFor: s.votedFor ?? null, appliedTerm: s.appliedTerm }));
      await fh.sync();
    } finally {
      await fh.close();
    }
    fs.renameSync(tmp, file);
    fsyncDir(this.dir);
  }

  /** Makes `p` the replica's durable uncommitted tail (appended, fdatasync'ed) before returning. */
  async savePending(p: PendingBatch): Promise<void> {
    const entry = pendingEntry(p);
    if (this.bytes + entry.length > COMPACT_BYTES) {
      const file = path.join(this.dir, 'pending.log');
      const tmp = `${file}.tmp`;
      fs.writeFileSync(tmp, entry, { mode: 0o600 });
      const fd = fs.openSync(tmp, 'r');
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      await this.fh?.close();
      fs.renameSync(tmp, file);
      fsyncDir(this.dir);
      this.fh = await fs.promises.open(file, 'a', 0o600);
      this.bytes = entry.length;
      return;
    }
    await this.fh!.write(entry);
    await this.fh!.datasync();
    this.bytes += entry.length;
  }

  async close(): Promise<void> {
    await this.fh?.close();
    this.fh = undefined;
  }
}

/** One pending.log entry: header line, then the lines (vectors: services/audit-sink/vectors/replication.json). */
export function pendingEntry(p: PendingBatch): Buffer {
  const header = JSON.stringify({ term: p.term, start: p.start, bytes: p.lines.length, sha256: createHash('sha256').update(p.lines).digest('hex') });
  return Buffer.concat([Buffer.from(`${header}\n`, 'utf8'), p.lines]);
}

/** The last complete, intact entry, and the byte length up to the end of the last intact one. */
export function scanPending(buf: Buffer): { last: PendingBatch | undefined; validBytes: number } {
  let pos = 0;
  let last: PendingBatch | undefined;
  while (pos < buf.length) {
    const nl = buf.indexOf(0x0a, pos);
    if (nl < 0) break;
    let h: { term?: unknown; start?: unknown; bytes?: unknown; sha256?: unknown };
    try {
      h = JSON.parse(buf.subarray(pos, nl).toString('utf8'));
    } catch {
      break;
    }
    const { term, start, bytes, sha256 } = h;
    if (!Number.isSafeInteger(term) || !Number.isSafeInteger(start) || !Number.isSafeInteger(bytes) || typeof sha256 !== 'string') break;
    const end = nl + 1 + (bytes as number);
    if (end > buf.length) break;
    const lines = Buffer.from(buf.subarray(nl + 1, end));
    if (createHash('sha256').update(lines).digest('hex') !== sha256) break;
    last = { term: term as number, start: start as number, lines };
    pos = end;
  }
  return { last, validBytes: pos };
}
