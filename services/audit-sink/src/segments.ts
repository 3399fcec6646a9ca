/**
 * Writing the log's records on disk, split into segment files (the layout, and reading it back
 * verified, are @keyshard/audit-log log-dir.ts):
 *   <dataDir>/segments/<first index, 20 digits>.log   records first, first+1, … (@keyshard/audit-log record-format.ts)
 *   <dataDir>/audit.log -> segments/<active>.log      a symlink to the segment being appended
 * Only the last (active) segment is ever written; once it passes `segmentBytes` after a
 * commit, a new one is started, so sealed segments can be archived or shipped as they are.
 *
 * Invariants: segments are contiguous (each file's name is the index of its first record and
 * the previous one ends right before it); bytes reach a segment only through `append`, which
 * returns after fdatasync; a final line without its newline was never acknowledged (crash in
 * the middle of a write), so it is cut on open. Anything else that does not verify is
 * reported with the index of the first bad record, and the sink refuses to start on it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ACTIVE_LINK, SEGMENT_DIR, parseRecord, segmentName, type ScanResult, type Segment, type StoredEvent } from '@keyshard/audit-log';

export interface StoredRecord {
  index: number;
  event: StoredEvent;
}

/**
 * A growable list of non-negative integers (record byte offsets) in fixed Float64Array chunks: no
 * limit but memory (a JavaScript array stops at ~1.3·10^8 elements with a fatal error, and
 * spreading a long one into push() overflows the stack), no copy when it grows.
 */
export class OffsetList {
  private static readonly PER_CHUNK = 1 << 16;
  private readonly chunks: Float64Array[] = [];
  length = 0;

  push(n: number): void {
    const c = Math.floor(this.length / OffsetList.PER_CHUNK);
    if (c === this.chunks.length) this.chunks.push(new Float64Array(OffsetList.PER_CHUNK));
    this.chunks[c]![this.length % OffsetList.PER_CHUNK] = n;
    this.length += 1;
  }

  at(i: number): number {
    if (!(i >= 0 && i < this.length)) throw new RangeError(`no offset ${i} (of ${this.length})`);
    return this.chunks[Math.floor(i / OffsetList.PER_CHUNK)]![i % OffsetList.PER_CHUNK]!;
  }
}

/** Appends to the active segment and reads committed records back. One writer per data dir. */
export class SegmentFiles {
  /** fdatasync calls made; group commit keeps this far below the number of appends. */
  syncs = 0;
  private readonly offsets: OffsetList; // per record: its byte offset in its segment
  private active: { first: number; file: string; fh: fs.promises.FileHandle; bytes: number };

  private constructor(
    private readonly dataDir: string,
    private readonly segmentBytes: number,
    private readonly segments: Segment[],
    fh: fs.promises.FileHandle,
    bytes: number,
    offsets: OffsetList,
  ) {
    this.offsets = offsets;
    const last = segments.at(-1)!;
    this.active = { ...last, fh, bytes };
  }

  /** Opens after a clean scan: cuts the torn tail, creates the first segment if needed. */
  static async open(dataDir: string, scan: ScanResult, offsets: OffsetList, segmentBytes: number): Promise<SegmentFiles> {
    const legacy = path.join(dataDir, ACTIVE_LINK);
    if (fs.existsSync(legacy) && !fs.lstatSync(legacy).isSymbolicLink()) {
      throw new Error(`${legacy} is a log of the earlier hash-chain format; move it aside to start a Merkle log here`);
    }
    const segments = [...scan.segments];
    fs.mkdirSync(path.join(dataDir, SEGMENT_DIR), { recursive: true, mode: 0o700 });
    if (segments.length === 0) segments.push({ first: 0, file: path.join(dataDir, SEGMENT_DIR, segmentName(0)) });
    const last = segments.at(-1)!;
    const created = !fs.existsSync(last.file);
    const fh = await fs.promises.open(last.file, 'a', 0o600);
    try {
      if (scan.tornBytes > 0) {
        await fh.truncate(scan.activeBytes);
        await fh.datasync();
      }
      if (created) fsyncDir(path.join(dataDir, SEGMENT_DIR));
      pointActiveLink(dataDir, last.first);
    } catch (e) {
      await fh.close();
      throw e;
    }
    return new SegmentFiles(dataDir, segmentBytes, segments, fh, scan.activeBytes, offsets);
  }

  get records(): number {
    return this.offsets.length;
  }

  /** Writes `count` records (their lines, concatenated) and fdatasyncs; then rolls if full. */
  async append(buf: Buffer, count: number): Promise<void> {
    const a = this.active;
    for (let off = 0; off < buf.length; ) off += (await a.fh.write(buf, off, buf.length - off)).bytesWritten;
    await a.fh.datasync();
    this.syncs += 1;
    for (let i = 0, start = 0; i < count; i++) {
      this.offsets.push(a.bytes + start);
      start = buf.indexOf(0x0a, start) + 1;
    }
    a.bytes += buf.length;
    if (a.bytes >= this.segmentBytes) await this.roll();
  }

  private async roll(): Promise<void> {
    const first = this.offsets.length;
    const file = path.join(this.dataDir, SEGMENT_DIR, segmentName(first));
    const fh = await fs.promises.open(file, 'a', 0o600);
    fsyncDir(path.join(this.dataDir, SEGMENT_DIR));
    await this.active.fh.close();
    this.segments.push({ first, file });
    this.active = { first, file, fh, bytes: 0 };
    pointActiveLink(this.dataDir, first);
  }

  /** Committed records [from, to), read from the segment files without verifying them again. */
  async *read(from: number, to = this.offsets.length): AsyncGenerator<StoredRecord> {
    to = Math.min(to, this.offsets.length);
    let index = from;
    while (index < to) {
      const s = this.segmentOf(index);
      const next = this.segments[s + 1];
      const segEnd = next ? next.first : this.offsets.length; // index just past the segment's last record
      const end = Math.min(to, segEnd);
      const startByte = this.offsets.at(index);
      const endByte = end < segEnd ? this.offsets.at(end) : next ? (await fs.promises.stat(this.segments[s]!.file)).size : this.active.bytes;
      const fh = await fs.promises.open(this.segments[s]!.file, 'r');
      try {
        const chunk = Buffer.alloc(Math.min(1 << 20, Math.max(1, endByte - startByte)));
        let carry = Buffer.alloc(0);
        for (let pos = startByte; pos < endByte; ) {
          const { bytesRead } = await fh.read(chunk, 0, Math.min(chunk.length, endByte - pos), pos);
          if (bytesRead === 0) break;
          pos += bytesRead;
          const buf = Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
          let start = 0;
          for (let nl = buf.indexOf(0x0a); nl >= 0 && index < end; nl = buf.indexOf(0x0a, start)) {
            const rec = parseRecord(buf.subarray(start, nl));
            if (!rec || rec.index !== index) throw new Error(`segment ${path.basename(this.segments[s]!.file)} changed under the sink at record ${index}`);
            yield { index, event: rec.event };
            index += 1;
            start = nl + 1;
          }
          carry = Buffer.from(buf.subarray(start));
        }
      } finally {
        await fh.close();
      }
      if (index < end) throw new Error(`segment ${path.basename(this.segments[s]!.file)} is shorter than committed`);
    }
  }

  private segmentOf(index: number): number {
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.segments[mid]!.first <= index) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  async close(): Promise<void> {
    await this.active.fh.close();
  }
}

/** Atomically repoints audit.log at the active segment (new link, then rename over the old). */
function pointActiveLink(dataDir: string, first: number): void {
  const link = path.join(dataDir, ACTIVE_LINK);
  const target = path.join(SEGMENT_DIR, segmentName(first));
  if (fs.existsSync(link) && fs.readlinkSync(link) === target) return;
  const tmp = `${link}.tmp`;
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(target, tmp);
  fs.renameSync(tmp, link);
  fsyncDir(dataDir);
}

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
