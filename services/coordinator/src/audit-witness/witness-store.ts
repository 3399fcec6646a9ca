/**
 * The witnesses' records in etcd (the one module that reads or writes them):
 *   audit/witness/<CN>     the latest CosignedCheckpoint that replica cosigned (JSON, the shape
 *                          `keyshard audit checkpoint --cosigned --json` prints), under the cluster
 *                          prefix so that it lands in backups (BACKUP_PREFIXES);
 *   audit/witness-reset    {epoch, anchor, by, time}: the last operator reset (an admin's
 *                          `keyshard audit witness reset`): the sink checkpoint every witness
 *                          trusts again from, and a counter every replica follows.
 * No record MAC: a witness record carries the sink's signature and the witness's cosignature,
 * and is only ever used as an anchor after its sink signature verifies.
 *
 * Forward only (`decideStore`): a replica's record is replaced only by a larger tree of the same
 * log; a record this replica cannot verify under the configured sink keys (another sink's: a
 * backup restored into a new cluster) is replaced; an equal size with another root, or a larger
 * stored tree than the one being cosigned, is a problem for the caller to raise, never a write.
 * Every write is a transaction comparing the record's and the reset record's mod revisions, so
 * a write decided before a reset (or a concurrent write) never lands after it.
 */
import type { KeyObject } from 'node:crypto';
import { checkpointProblem, type CosignedCheckpoint, type SignedCheckpoint } from '@keyshard/audit-log';
import { etcdCall, paths, type Namespace } from '@keyshard/store';

export interface ResetRecord {
  epoch: number;
  anchor: SignedCheckpoint;
  by: string;
  time: string;
}

export interface WitnessRecords {
  /** This replica's record, if any. */
  own: CosignedCheckpoint | undefined;
  ownRevision: string;
  /** Every other replica's record, by certificate CN. */
  others: Map<string, CosignedCheckpoint>;
  reset: ResetRecord | undefined;
  /** The reset record's mod revision ('0' when there is none): what writes are fenced on. */
  resetRevision: string;
}

export type StoreDecision = { write: boolean } | { problem: string };

/** Whether `next` may replace `existing` (see the header); pure, so the rule is tested alone. */
export function decideStore(existing: CosignedCheckpoint | undefined, next: CosignedCheckpoint, sinkKeys: ReadonlyMap<string, KeyObject>): StoreDecision {
  if (!existing || typeof existing.checkpoint !== 'object' || existing.checkpoint === null) return { write: true };
  const old = existing.checkpoint;
  if (checkpointProblem(old, sinkKeys)) return { write: true }; // another sink's (or unreadable): not an anchor of this log
  const cp = next.checkpoint;
  if (old.tree_size < cp.tree_size) return { write: true };
  if (old.tree_size === cp.tree_size)
    return old.root_hash === cp.root_hash ? { write: false } : { problem: `the log forked: etcd holds a cosigned checkpoint of size ${old.tree_size} with another root` };
  return { problem: `the log was rolled back: etcd holds a cosigned checkpoint of size ${old.tree_size}, the sink's tree has ${cp.tree_size}` };
}

/** The anchor a replica starts from: its own record if the sink keys verify it, else the largest verified one of its peers or the last reset. */
export function chooseAnchor(records: WitnessRecords, sinkKeys: ReadonlyMap<string, KeyObject>): { anchor: SignedCheckpoint; from: string } | undefined {
  const ok = (c: SignedCheckpoint | undefined) => c !== undefined && typeof c === 'object' && checkpointProblem(c, sinkKeys) === undefined;
  if (ok(records.own?.checkpoint)) return { anchor: records.own!.checkpoint, from: 'own' };
  const candidates: { anchor: SignedCheckpoint; from: string }[] = [];
  for (const [cn, c] of records.others) if (ok(c.checkpoint)) candidates.push({ anchor: c.checkpoint, from: `witness ${cn}` });
  if (ok(records.reset?.anchor)) candidates.push({ anchor: records.reset!.anchor, from: `reset ${records.reset!.epoch}` });
  return candidates.sort((a, b) => b.anchor.tree_size - a.anchor.tree_size)[0];
}

const parse = <T>(v: Buffer): T | undefined => {
  try {
    return JSON.parse(v.toString()) as T;
  } catch {
    return undefined;
  }
};

export class WitnessStore {
  constructor(
    private readonly ns: Namespace,
    private readonly certificateCn: string,
  ) {}

  /** Every witness record and the reset record, in one read. */
  async load(): Promise<WitnessRecords> {
    const res = await etcdCall('witness records', () => this.ns.getAll().prefix(paths.auditPrefix).exec());
    const out: WitnessRecords = { own: undefined, ownRevision: '0', others: new Map(), reset: undefined, resetRevision: '0' };
    const own = paths.witness(this.certificateCn);
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      if (key === paths.witnessReset) {
        out.reset = parse<ResetRecord>(kv.value);
        out.resetRevision = kv.mod_revision;
      } else if (key === own) {
        out.own = parse<CosignedCheckpoint>(kv.value);
        out.ownRevision = kv.mod_revision;
      } else if (key.startsWith(paths.witnessesPrefix)) {
        const c = parse<CosignedCheckpoint>(kv.value);
        if (c) out.others.set(key.slice(paths.witnessesPrefix.length), c);
      }
    }
    return out;
  }

  /** The reset record and its mod revision ('0': none). */
  async reset(): Promise<{ reset: ResetRecord | undefined; revision: string }> {
    const res = await etcdCall('witness reset record', () => this.ns.get(paths.witnessReset).exec());
    const kv = res.kvs[0];
    return kv ? { reset: parse<ResetRecord>(kv.value), revision: kv.mod_revision } : { reset: undefined, revision: '0' };
  }

  /**
   * Stores this replica's cosigned checkpoint, forward only (decideStore), fenced on the reset
   * record's revision `resetRevision`. `stored`: written or already there; `fenced`: a reset came
   * first (the caller re-reads it); a problem: what etcd holds contradicts the sink.
   */
  async store(next: CosignedCheckpoint, sinkKeys: ReadonlyMap<string, KeyObject>, resetRevision: string): Promise<'stored' | 'fenced' | { problem: string }> {
    const key = paths.witness(this.certificateCn);
    for (let attempt = 0; attempt < 3; attempt++) {
      const res = await etcdCall('witness record', () => this.ns.get(key).exec());
      const kv = res.kvs[0];
      const decision = decideStore(kv ? parse<CosignedCheckpoint>(kv.value) : undefined, next, sinkKeys);
      if ('problem' in decision) return decision;
      if (!decision.write) return 'stored';
      const txn = await etcdCall('witness record write', () =>
        this.ns
          .if(key, 'Mod', '==', kv?.mod_revision ?? '0')
          .and(paths.witnessReset, 'Mod', '==', resetRevision)
          .then(this.ns.put(key).value(JSON.stringify(next)))
          .else(this.ns.get(paths.witnessReset))
          .commit(),
      );
      if (txn.succeeded) return 'stored';
      const held = txn.responses[0]?.response_range?.kvs[0]?.mod_revision ?? '0';
      if (held !== resetRevision) return 'fenced';
    }
    return 'fenced';
  }

  /**
   * An operator's reset: every witness record deleted and the reset record raised to the next
   * epoch with `anchor`, in one transaction fenced on the reset record's revision `after`.
   * Returns the new record and its revision, or undefined when another reset came first.
   */
  async writeReset(anchor: SignedCheckpoint, by: string, after: { epoch: number; revision: string }): Promise<{ record: ResetRecord; revision: string } | undefined> {
    const record: ResetRecord = { epoch: after.epoch + 1, anchor, by, time: new Date().toISOString() };
    const txn = await etcdCall('witness reset', () =>
      this.ns
        .if(paths.witnessReset, 'Mod', '==', after.revision)
        .then(this.ns.delete().prefix(paths.witnessesPrefix), this.ns.put(paths.witnessReset).value(JSON.stringify(record)))
        .commit(),
    );
    return txn.succeeded ? { record, revision: txn.header.revision } : undefined;
  }
}
