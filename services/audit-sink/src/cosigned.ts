/**
 * Where witnesses publish their cosignatures of this log's checkpoints, and auditors fetch them
 * (C2SP tlog-witness: the log collects its witnesses' cosignatures and serves them beside its
 * checkpoints; here the witnesses are the coordinator replicas, services/coordinator/src/audit-witness/).
 *
 *   AddCosignature         an appender's witness hands in a CosignedCheckpoint; accepted only if
 *                          its checkpoint is this log's own tree at that size (root == the tree's
 *                          root at that size, signed by one of this log's keys), its note is that
 *                          checkpoint's C2SP note body, and every line names the caller's witness
 *                          (keyshard.dev/witness/<caller CN>): an appender cannot publish, nor
 *                          displace, another witness's cosignature. At most MAX_COSIGNATURES lines
 *                          of MAX_COSIGNATURE_LINE characters.
 *   DIR/cosigned.log       one JSON CosignedCheckpoint a line (one witness's line each), appended
 *                          and fdatasync'ed before the call succeeds; read back at start (a torn
 *                          or unreadable line is skipped: the file is a publication, not evidence —
 *                          an auditor trusts a line only through the witness signature in it).
 *   GetCosignedCheckpoints the latest (largest tree) cosigned checkpoint of each witness.
 *
 * The sink cannot check a cosignature (it holds no witness key, by design): auditors do, with the
 * witness keys in their trust file (`keyshard audit verify --cosigned`, verifyCosignedCheckpoint).
 */
import type { KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { invalidArgument, failedPrecondition } from '@keyshard/errors';
import {
  COSIGNED_FILE, MAX_COSIGNATURES, MAX_COSIGNATURE_LINE, checkpointNote, checkpointProblem, cosignatureName, cosignedLine, fromCosignedMsg, toCosignedMsg, witnessName, type CosignedCheckpoint,
} from '@keyshard/audit-log';
import type { pb } from '@keyshard/rpc';

/** What the checks need of the log (AuditLog). */
export interface LogTree {
  readonly size: number;
  rootAt(size: number): Buffer;
}

export class CosignedStore {
  readonly #latest = new Map<string, CosignedCheckpoint>();
  #writes: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly fh: fs.promises.FileHandle,
    private readonly keys: ReadonlyMap<string, KeyObject>,
  ) {}

  /** Opens DIR/cosigned.log (created 0600), keeping the latest line of each witness. `keys`: this log's checkpoint keys by id. */
  static async open(dataDir: string, keys: ReadonlyMap<string, KeyObject>): Promise<CosignedStore> {
    const file = path.join(dataDir, COSIGNED_FILE);
    const store = new CosignedStore(await fs.promises.open(file, 'a', 0o600), keys);
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      if (!line) continue;
      try {
        store.#keep(JSON.parse(line) as CosignedCheckpoint);
      } catch {
        // a torn last line: see the header
      }
    }
    return store;
  }

  #keep(c: CosignedCheckpoint): void {
    if (!Array.isArray(c.cosignatures) || typeof c.checkpoint?.tree_size !== 'number') return;
    for (const line of c.cosignatures) {
      const name = cosignatureName(line);
      if (!name) continue;
      const had = this.#latest.get(name);
      if (!had || had.checkpoint.tree_size <= c.checkpoint.tree_size) this.#latest.set(name, { checkpoint: c.checkpoint, note: c.note, cosignatures: [line] });
    }
  }

  /** Checks and stores a witness's cosigned checkpoint (see the header); INVALID_ARGUMENT / FAILED_PRECONDITION saying why not. */
  async add(msg: pb.CosignedCheckpoint__Output, caller: string, log: LogTree): Promise<void> {
    let c: CosignedCheckpoint;
    try {
      c = fromCosignedMsg(msg);
    } catch {
      throw invalidArgument('a cosigned checkpoint needs its checkpoint');
    }
    if (c.cosignatures.length === 0 || c.cosignatures.length > MAX_COSIGNATURES) throw invalidArgument(`give 1..${MAX_COSIGNATURES} cosignature lines`);
    if (c.note.length > MAX_COSIGNATURE_LINE) throw invalidArgument(`the note is longer than ${MAX_COSIGNATURE_LINE} characters`);
    const own = witnessName(caller);
    for (const line of c.cosignatures) {
      if (line.length > MAX_COSIGNATURE_LINE) throw invalidArgument(`a cosignature line is longer than ${MAX_COSIGNATURE_LINE} characters`);
      const name = cosignatureName(line);
      if (!name) throw invalidArgument('a cosignature line is not a signed-note signature line (— <name> <base64>)');
      if (name !== own) throw invalidArgument(`${caller} may publish only the cosignatures of its own witness ${own}`);
    }
    const cp = c.checkpoint;
    const bad = checkpointProblem(cp, this.keys);
    if (bad) throw invalidArgument(`the checkpoint is not one of this log's: ${bad}`);
    if (cp.tree_size > log.size) throw failedPrecondition(`the checkpoint's tree size ${cp.tree_size} is beyond this log's ${log.size}`);
    if (log.rootAt(cp.tree_size).toString('hex') !== cp.root_hash) throw failedPrecondition(`the checkpoint's root is not this log's root at size ${cp.tree_size}`);
    if (c.note !== checkpointNote(cp)) throw invalidArgument("the note is not the checkpoint's note body");
    const lines = c.cosignatures.map((line) => cosignedLine({ checkpoint: cp, note: c.note, cosignatures: [line] })).join('');
    const write = this.#writes.then(async () => {
      await this.fh.write(lines);
      await this.fh.datasync();
    });
    this.#writes = write.catch(() => {});
    await write;
    this.#keep(c);
  }

  /** The latest cosigned checkpoint of each witness, by witness name. */
  latest(): pb.CosignedCheckpoint[] {
    return [...this.#latest.keys()].sort().map((n) => toCosignedMsg(this.#latest.get(n)!));
  }

  async close(): Promise<void> {
    await this.#writes;
    await this.fh.close();
  }
}
