/**
 * Where witnesses publish their cosignatures of this log's checkpoints, and auditors fetch them
 * (C2SP tlog-witness: the log collects its witnesses' cosignatures and serves them beside its
 * checkpoints; here the witnesses are the coordinator replicas, services/coordinator/src/audit-witness/).
 *
 *   AddCosignature         a coordinator's witness hands in a CosignedCheckpoint; accepted only if
 *                          its checkpoint is this log's own tree at that size (root == the tree's
 *                          root at that size, signed by one of this log's keys), its note is that
 *                          checkpoint's C2SP note body, and its ONE line names the caller's witness
 *                          (keyshard.dev/witness/<caller CN>): an appender cannot publish, nor
 *                          displace, another witness's cosignature. Only appenders of scope
 *                          `coordinator` may call it (server.ts: others PERMISSION_DENIED /
 *                          AUDIT_SCOPE, counted and recorded as a refusal): custodians are no
 *                          witnesses. Bounded writes, so no appender can fill the disk with it:
 *                           - exactly one line of at most MAX_COSIGNATURE_LINE characters a call;
 *                           - written only if newer than the caller's latest: a larger tree, or
 *                             the same tree with a later cosignature time (a witness's refresh,
 *                             witness.ts); else accepted without writing (idempotent). The time is
 *                             read from the line unverified (the sink holds no witness key); a
 *                             time over FUTURE_SKEW_S ahead of the sink's clock is refused, so a
 *                             witness cannot lock out its own later lines;
 *                           - at most one write per caller per MIN_WRITE_INTERVAL_MS, else
 *                             RESOURCE_EXHAUSTED / AUDIT_QUOTA (counted and recorded as a refusal).
 *                          The witness publishes at most that often (COSIGNATURE_PUBLISH_INTERVAL_MS).
 *   DIR/cosigned.log       one JSON CosignedCheckpoint a line (one witness's line each), appended
 *                          and fdatasync'ed before the call succeeds; read back at start as a
 *                          stream, line by line (a line over MAX_LINE_BYTES, torn or unreadable is
 *                          skipped: the file is a publication, not evidence — an auditor trusts a
 *                          line only through the witness signature in it), keeping the last line
 *                          of each witness (at most MAX_WITNESSES names). Not compacted: at one
 *                          write per witness per minute when idle (a few per minute under load),
 *                          a replica adds about 1-3 MB a day; compaction is left to a later change.
 *   GetCosignedCheckpoints the latest cosigned checkpoint (the last accepted) of each witness.
 *
 * The sink cannot check a cosignature (it holds no witness key, by design): auditors do, with the
 * witness keys in their trust file (`keyshard audit verify --cosigned`, verifyCosignedCheckpoint).
 */
import type { KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { KeyshardError, invalidArgument, failedPrecondition } from '@keyshard/errors';
import {
  COSIGNATURE_PUBLISH_INTERVAL_MS, COSIGNED_FILE, MAX_COSIGNATURE_LINE, checkpointNote, checkpointProblem, cosignatureName, cosignatureTime, cosignedLine, fromCosignedMsg, toCosignedMsg, witnessName,
  type CosignedCheckpoint,
} from '@keyshard/audit-log';
import type { pb } from '@keyshard/rpc';

/** What the checks need of the log (AuditLog). */
export interface LogTree {
  readonly size: number;
  rootAt(size: number): Buffer;
}

/** One write per caller at most this often (ms). */
export const MIN_WRITE_INTERVAL_MS = COSIGNATURE_PUBLISH_INTERVAL_MS;
const FUTURE_SKEW_S = 300;
/** A cosigned.log line is far smaller (a checkpoint, a note of <= 512 and one line of <= 512 characters). */
const MAX_LINE_BYTES = 8192;
const MAX_WITNESSES = 1024;

export interface CosignedStoreOptions {
  /** Monotonic milliseconds (the write interval) and wall-clock seconds (the future bound); tests set them. */
  nowMs?: () => number;
  nowSeconds?: () => number;
}

export class CosignedStore {
  /** By witness name: the last accepted line, and its claimed time. */
  readonly #latest = new Map<string, { c: CosignedCheckpoint; time: number }>();
  readonly #lastWrite = new Map<string, number>();
  #writes: Promise<unknown> = Promise.resolve();
  readonly #nowMs: () => number;
  readonly #nowSeconds: () => number;

  private constructor(
    private readonly fh: fs.promises.FileHandle,
    private readonly keys: ReadonlyMap<string, KeyObject>,
    o: CosignedStoreOptions,
  ) {
    this.#nowMs = o.nowMs ?? (() => performance.now());
    this.#nowSeconds = o.nowSeconds ?? (() => Math.floor(Date.now() / 1000));
  }

  /** Opens DIR/cosigned.log (created 0600), keeping the last line of each witness. `keys`: this log's checkpoint keys by id. */
  static async open(dataDir: string, keys: ReadonlyMap<string, KeyObject>, o: CosignedStoreOptions = {}): Promise<CosignedStore> {
    const file = path.join(dataDir, COSIGNED_FILE);
    const store = new CosignedStore(await fs.promises.open(file, 'a', 0o600), keys, o);
    await forEachLine(file, (line) => {
      try {
        store.#keep(JSON.parse(line) as CosignedCheckpoint);
      } catch {
        // a torn or unreadable line: see the header
      }
    });
    return store;
  }

  #keep(c: CosignedCheckpoint): void {
    if (!Array.isArray(c.cosignatures) || c.cosignatures.length !== 1 || typeof c.checkpoint?.tree_size !== 'number') return;
    const line = c.cosignatures[0]!;
    const name = cosignatureName(line);
    const time = cosignatureTime(line);
    if (!name || time === undefined || (!this.#latest.has(name) && this.#latest.size >= MAX_WITNESSES)) return;
    this.#latest.set(name, { c: { checkpoint: c.checkpoint, note: c.note, cosignatures: [line] }, time });
  }

  /** Checks and stores a witness's cosigned checkpoint (see the header); INVALID_ARGUMENT / FAILED_PRECONDITION / RESOURCE_EXHAUSTED saying why not. */
  async add(msg: pb.CosignedCheckpoint__Output, caller: string, log: LogTree): Promise<{ written: boolean }> {
    let c: CosignedCheckpoint;
    try {
      c = fromCosignedMsg(msg);
    } catch {
      throw invalidArgument('a cosigned checkpoint needs its checkpoint');
    }
    if (c.cosignatures.length !== 1) throw invalidArgument('give exactly one cosignature line (your own witness\'s)');
    if (c.note.length > MAX_COSIGNATURE_LINE) throw invalidArgument(`the note is longer than ${MAX_COSIGNATURE_LINE} characters`);
    const own = witnessName(caller);
    const line = c.cosignatures[0]!;
    if (line.length > MAX_COSIGNATURE_LINE) throw invalidArgument(`a cosignature line is longer than ${MAX_COSIGNATURE_LINE} characters`);
    const name = cosignatureName(line);
    const time = cosignatureTime(line);
    if (!name || time === undefined) throw invalidArgument('the cosignature line is not a cosignature/v1 signed-note line (— <name> <base64 of 76 bytes>)');
    if (name !== own) throw invalidArgument(`${caller} may publish only the cosignatures of its own witness ${own}`);
    if (time > this.#nowSeconds() + FUTURE_SKEW_S) throw invalidArgument(`the cosignature's time ${time} is more than ${FUTURE_SKEW_S} s ahead of the sink's clock`);
    const cp = c.checkpoint;
    const bad = checkpointProblem(cp, this.keys);
    if (bad) throw invalidArgument(`the checkpoint is not one of this log's: ${bad}`);
    if (cp.tree_size > log.size) throw failedPrecondition(`the checkpoint's tree size ${cp.tree_size} is beyond this log's ${log.size}`);
    if (log.rootAt(cp.tree_size).toString('hex') !== cp.root_hash) throw failedPrecondition(`the checkpoint's root is not this log's root at size ${cp.tree_size}`);
    if (c.note !== checkpointNote(cp)) throw invalidArgument("the note is not the checkpoint's note body");
    const had = this.#latest.get(name);
    if (had && !(cp.tree_size > had.c.checkpoint.tree_size || time > had.time)) return { written: false }; // nothing newer: nothing to write
    const now = this.#nowMs();
    const last = this.#lastWrite.get(caller);
    if (last !== undefined && now - last < MIN_WRITE_INTERVAL_MS)
      throw new KeyshardError('RESOURCE_EXHAUSTED', `${caller}: one cosignature per ${MIN_WRITE_INTERVAL_MS / 1000} s; publish again later`, { reason: 'AUDIT_QUOTA' });
    this.#lastWrite.set(caller, now);
    const stored: CosignedCheckpoint = { checkpoint: cp, note: c.note, cosignatures: [line] };
    const write = this.#writes.then(async () => {
      await this.fh.write(cosignedLine(stored));
      await this.fh.datasync();
    });
    this.#writes = write.catch(() => {});
    await write;
    this.#keep(stored);
    return { written: true };
  }

  /** The latest cosigned checkpoint of each witness, by witness name. */
  latest(): pb.CosignedCheckpoint[] {
    return [...this.#latest.keys()].sort().map((n) => toCosignedMsg(this.#latest.get(n)!.c));
  }

  async close(): Promise<void> {
    await this.#writes;
    await this.fh.close();
  }
}

/** Calls `fn` with each complete line of `file`, read in chunks; a line over MAX_LINE_BYTES is skipped whole (memory stays bounded). */
async function forEachLine(file: string, fn: (line: string) => void): Promise<void> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.alloc(64 * 1024);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let skipping = false;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      let from = 0;
      for (let nl = buf.indexOf(0x0a, from); nl >= 0 && nl < bytesRead; nl = buf.indexOf(0x0a, from)) {
        if (!skipping) fn(Buffer.concat([...pending, buf.subarray(from, nl)]).toString('utf8'));
        pending = [];
        pendingBytes = 0;
        skipping = false;
        from = nl + 1;
      }
      if (from < bytesRead && !skipping) {
        pendingBytes += bytesRead - from;
        if (pendingBytes > MAX_LINE_BYTES) {
          skipping = true;
          pending = [];
          pendingBytes = 0;
        } else pending.push(Buffer.from(buf.subarray(from, bytesRead)));
      }
    }
    // A last line without its newline is torn (never acknowledged): skipped.
  } finally {
    await fh.close();
  }
}
