/**
 * An audit log directory as it lies on disk, and reading it back verified. The sink writes it
 * (services/audit-sink segments.ts, checkpoint-store.ts); the offline verifier (verify.ts), the
 * sink on start and anyone holding a copy read it with this module:
 *   <dataDir>/segments/<first index, 20 digits>.log   records first, first+1, … (record-format.ts)
 *   <dataDir>/audit.log -> segments/<active>.log      a symlink to the segment being appended
 *   <dataDir>/keys/<key id>.pem                       every public key that ever signed a checkpoint
 *   <dataDir>/checkpoints.log                         one signed checkpoint (checkpoint.ts) a line
 *   <dataDir>/cosigned.log                            one CosignedCheckpoint (cosignature.ts) a line: a
 *                                                     witness's cosignature the sink received
 *
 * A verifier trusts none of it by being there (keys/ least of all): every checkpoint must verify
 * under sink keys it was given from outside (trust.ts), every cosignature under witness keys.
 *
 * Invariants a reader checks: segments are contiguous (each file's name is the index of its
 * first record and the previous one ends right before it); every line is a record that
 * verifies (record-format.ts checkRecord). A final line without its newline was never
 * acknowledged (a crash in the middle of a write): it is reported as torn, not as bad.
 */
import type { KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { publicKeyFromPem, type SignedCheckpoint } from './checkpoint.ts';
import type { CosignedCheckpoint } from './cosignature.ts';
import { checkRecord, type CheckedRecord } from './record-format.ts';
import { parseCosignedFile } from './trust.ts';

export const SEGMENT_DIR = 'segments';
export const ACTIVE_LINK = 'audit.log';
export const KEYS_DIR = 'keys';
export const CHECKPOINTS_FILE = 'checkpoints.log';
export const COSIGNED_FILE = 'cosigned.log';
const SEGMENT_NAME = /^(\d{20})\.log$/;

export const segmentName = (first: number) => `${String(first).padStart(20, '0')}.log`;

export interface Segment {
  first: number;
  file: string;
}

export interface ScanResult {
  segments: Segment[];
  records: number;
  /** Valid bytes of the last segment; a torn tail after them is `tornBytes` long. */
  activeBytes: number;
  tornBytes: number;
  bad?: { index: number; reason: string };
}

/** Lists segment files in index order (throws nothing for a missing directory). */
export function listSegments(dataDir: string): Segment[] {
  const dir = path.join(dataDir, SEGMENT_DIR);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return names
    .map((n) => SEGMENT_NAME.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ first: Number(m[1]), file: path.join(dir, m[0]) }))
    .sort((a, b) => a.first - b.first);
}

/**
 * Reads and verifies every segment synchronously, in 1 MiB chunks, calling `onRecord` for each
 * good record (with its byte offset in its segment). Stops at the first bad record.
 */
export function scanSegments(dataDir: string, onRecord: (index: number, rec: CheckedRecord, offset: number) => void): ScanResult {
  const segments = listSegments(dataDir);
  const res: ScanResult = { segments, records: 0, activeBytes: 0, tornBytes: 0 };
  const chunk = Buffer.alloc(1 << 20);
  for (const [i, seg] of segments.entries()) {
    const last = i === segments.length - 1;
    if (seg.first !== res.records) {
      const what = seg.first > res.records ? `records ${res.records}..${seg.first - 1} are missing` : `it overlaps records before ${res.records}`;
      res.bad = { index: res.records, reason: `segment ${path.basename(seg.file)} starts at index ${seg.first}: ${what}` };
      return res;
    }
    const fd = fs.openSync(seg.file, 'r');
    try {
      let carry = Buffer.alloc(0);
      let pos = 0; // offset of carry[0] in the segment
      for (let n = fs.readSync(fd, chunk, 0, chunk.length, null); n > 0; n = fs.readSync(fd, chunk, 0, chunk.length, null)) {
        const buf = carry.length ? Buffer.concat([carry, chunk.subarray(0, n)]) : chunk.subarray(0, n);
        let start = 0;
        for (let nl = buf.indexOf(0x0a); nl >= 0; nl = buf.indexOf(0x0a, start)) {
          const rec = checkRecord(buf.subarray(start, nl + 1), res.records);
          if ('reason' in rec) {
            res.bad = { index: res.records, reason: rec.reason };
            return res;
          }
          onRecord(res.records, rec, pos + start);
          res.records += 1;
          start = nl + 1;
        }
        pos += start;
        carry = Buffer.from(buf.subarray(start));
      }
      if (carry.length > 0 && !last) {
        res.bad = { index: res.records, reason: `segment ${path.basename(seg.file)} ends inside a record` };
        return res;
      }
      if (last) {
        res.activeBytes = pos;
        res.tornBytes = carry.length;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return res;
}

/** Public keys by id, from PEM files (a directory of them or single files). */
export function loadPublicKeys(...sources: string[]): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  for (const src of sources) {
    if (!fs.existsSync(src)) continue;
    const files = fs.statSync(src).isDirectory() ? fs.readdirSync(src).filter((f) => f.endsWith('.pem')).map((f) => path.join(src, f)) : [src];
    for (const f of files) {
      const { id, key } = publicKeyFromPem(fs.readFileSync(f));
      keys.set(id, key);
    }
  }
  return keys;
}

export interface CheckpointFileScan {
  checkpoints: SignedCheckpoint[];
  validBytes: number;
  tornBytes: number;
  bad?: { line: number; reason: string };
}

export function readCheckpointFile(file: string): CheckpointFileScan {
  const res: CheckpointFileScan = { checkpoints: [], validBytes: 0, tornBytes: 0 };
  if (!fs.existsSync(file)) return res;
  const text = fs.readFileSync(file);
  let start = 0;
  for (let nl = text.indexOf(0x0a); nl >= 0; nl = text.indexOf(0x0a, start)) {
    try {
      const c = JSON.parse(text.subarray(start, nl).toString('utf8')) as SignedCheckpoint;
      if (typeof c !== 'object' || c === null) throw new Error();
      res.checkpoints.push(c);
    } catch {
      res.bad = { line: res.checkpoints.length + 1, reason: 'checkpoint line is not JSON' };
      return res;
    }
    start = nl + 1;
  }
  res.validBytes = start;
  res.tornBytes = text.length - start;
  return res;
}

/** One line of checkpoints.log: the stored JSON form of a checkpoint, fields in this order. */
export function checkpointLine(c: SignedCheckpoint): string {
  return `${JSON.stringify({ tree_size: c.tree_size, root_hash: c.root_hash, time: c.time, key_id: c.key_id, signature: c.signature })}\n`;
}

/**
 * The key ids of the PEM files in <dataDir>/keys, for a verifier to report (never to trust):
 * a file that is not an Ed25519 public key is listed with its problem instead of an id.
 */
export function listDirKeys(dataDir: string): { file: string; id?: string; problem?: string }[] {
  const dir = path.join(dataDir, KEYS_DIR);
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((f) => f.endsWith('.pem')).sort();
  } catch {
    return [];
  }
  return names.map((f) => {
    try {
      return { file: f, id: publicKeyFromPem(fs.readFileSync(path.join(dir, f))).id };
    } catch (e) {
      return { file: f, problem: (e as Error).message.slice(0, 80) };
    }
  });
}

export interface CosignedFileScan {
  exists: boolean;
  items: CosignedCheckpoint[];
  tornBytes: number;
  bad?: { line: number; reason: string };
}

/** Reads <dataDir>/cosigned.log: JSON lines; a final line without its LF was never completed (torn). */
export function readCosignedLog(file: string): CosignedFileScan {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { exists: false, items: [], tornBytes: 0 };
    throw e;
  }
  const end = text.lastIndexOf('\n') + 1;
  const res: CosignedFileScan = { exists: true, items: [], tornBytes: Buffer.byteLength(text.slice(end)) };
  for (const [i, line] of text.slice(0, end).split('\n').entries()) {
    if (line === '') continue;
    try {
      if (!line.trimStart().startsWith('{')) throw new Error('not a JSON object');
      res.items.push(...parseCosignedFile(line));
    } catch (e) {
      res.bad = { line: i + 1, reason: (e as Error).message.replace(/^(item|line) 1: /, '') };
      return res;
    }
  }
  return res;
}

/** One line of cosigned.log. */
export function cosignedLine(c: CosignedCheckpoint): string {
  return `${JSON.stringify({ checkpoint: JSON.parse(checkpointLine(c.checkpoint)) as SignedCheckpoint, note: c.note, cosignatures: c.cosignatures })}\n`;
}
