/**
 * The witnesses' records in etcd (the one module that reads or writes them):
 *   audit/witness/<CN>     the latest CosignedCheckpoint that replica cosigned (JSON, the shape
 *                          `keyshard audit checkpoint --cosigned --json` prints), under the cluster
 *                          prefix so that it lands in backups (BACKUP_PREFIXES);
 *   audit/witness-reset    {epoch, anchor, by, time, previous, history, mac?}: the last operator
 *                          reset (an admin's `keyshard audit witness reset`): the sink checkpoint
 *                          every witness trusts again from, and a counter every replica follows.
 *                          `previous`: the witness records the reset replaced (moved here, not
 *                          lost: the old cosigned checkpoints stay evidence, and land in backups);
 *                          `history`: the RESET_HISTORY resets before it, each with its own
 *                          `previous`.
 * A witness record has no record MAC: it carries the sink's signature and the witness's
 * cosignature, and is only ever used as an anchor after its sink signature verifies.
 * The reset record is MAC'd (record-integrity.ts) when written by an unsealed replica, since
 * following it clears alarms: an unsealed replica follows only a reset whose MAC verifies
 * (otherwise the record is refused and reported like any integrity failure). GAP: a reset may
 * be written while sealed (every replica alarmed and sealed is exactly when one is needed), and
 * then carries no MAC; a sealed replica cannot check one anyway. Such a reset is followed on the
 * strength of its anchor's sink signature alone, so whoever writes etcd can clear a sealed
 * replica's alarm — but every replica that follows a reset records `witness.reset.followed`
 * (witness.ts) with the record's etcd revision, so it does not go unnoticed, and an unsealed
 * replica refuses it.
 *
 * Forward only (`decideStore`): a replica's record is replaced only by a larger tree of the same
 * log; a record this replica cannot verify under the configured sink keys (another sink's: a
 * backup restored into a new cluster) is replaced; an equal size with another root, or a larger
 * stored tree than the one being cosigned, is a problem for the caller to raise, never a write.
 * Every write is a transaction comparing the record's and the reset record's mod revisions, so
 * a write decided before a reset (or a concurrent write) never lands after it.
 */
import type { KeyObject } from 'node:crypto';
import { checkpointProblem, cosignatureTime, type CosignedCheckpoint, type SignedCheckpoint } from '@keyshard/audit-log';
import { etcdCall, paths, type Namespace } from '@keyshard/store';
import type { RecordIntegrity } from '../cluster/record-integrity.ts';

export interface ResetRecord {
  epoch: number;
  anchor: SignedCheckpoint;
  by: string;
  time: string;
  /** The witness records this reset replaced, by certificate CN. */
  previous?: Record<string, CosignedCheckpoint>;
  /** The resets before this one, newest first (at most RESET_HISTORY). */
  history?: Omit<ResetRecord, 'history'>[];
}

/** Resets kept in a reset record's history. */
export const RESET_HISTORY = 8;

/** What the store needs of record-integrity.ts (RecordIntegrity). */
export type ResetMacs = Pick<RecordIntegrity, 'available' | 'stamp' | 'check' | 'refuse'>;

export interface WitnessRecords {
  /** This replica's record, if any. */
  own: CosignedCheckpoint | undefined;
  ownRevision: string;
  /** Every other replica's record, by certificate CN. */
  others: Map<string, CosignedCheckpoint>;
  reset: ResetRecord | undefined;
  /** The reset record's mod revision ('0' when there is none): what writes are fenced on. */
  resetRevision: string;
  /** Why the reset record may not be followed (its MAC), if so. */
  resetRefused?: string;
}

export type StoreDecision = { write: boolean } | { problem: string };

/** Whether `next` may replace `existing` (see the header); pure, so the rule is tested alone. */
export function decideStore(existing: CosignedCheckpoint | undefined, next: CosignedCheckpoint, sinkKeys: ReadonlyMap<string, KeyObject>): StoreDecision {
  if (!existing || typeof existing.checkpoint !== 'object' || existing.checkpoint === null) return { write: true };
  const old = existing.checkpoint;
  if (checkpointProblem(old, sinkKeys)) return { write: true }; // another sink's (or unreadable): not an anchor of this log
  const cp = next.checkpoint;
  if (old.tree_size < cp.tree_size) return { write: true };
  if (old.tree_size === cp.tree_size) {
    if (old.root_hash !== cp.root_hash) return { problem: `the log forked: etcd holds a cosigned checkpoint of size ${old.tree_size} with another root` };
    // The same tree cosigned again later: a witness's refresh (witness.ts) replaces it.
    return { write: (cosignedTime(next) ?? 0) > (cosignedTime(existing) ?? 0) };
  }
  return { problem: `the log was rolled back: etcd holds a cosigned checkpoint of size ${old.tree_size}, the sink's tree has ${cp.tree_size}` };
}

/** The time of a record's (first) cosignature line, unverified; undefined without one. */
const cosignedTime = (c: CosignedCheckpoint): number | undefined => (Array.isArray(c.cosignatures) && c.cosignatures[0] ? cosignatureTime(c.cosignatures[0]) : undefined);

/**
 * Two checkpoints of the same tree size with different roots, among the records given (this
 * replica's and its peers'): the sink showed the witnesses different histories (a split view).
 * Only records the sink keys verify count (a sink-signed pair is proof of a fork). The keys need
 * not be the same: every configured key signs the one log — a single sink's, or each replica's of
 * a replicated log (services/audit-sink REPLICATION.md), whose committed logs are prefixes of one
 * sequence — so two replicas' checkpoints of one size with different roots are a fork too.
 */
export function findSplitView(records: readonly { who: string; c: CosignedCheckpoint | undefined }[], sinkKeys: ReadonlyMap<string, KeyObject>): string | undefined {
  const seen = new Map<number, { who: string; root: string; key: string }>();
  for (const { who, c } of records) {
    const cp = c?.checkpoint;
    if (!cp || typeof cp !== 'object' || checkpointProblem(cp, sinkKeys)) continue;
    const had = seen.get(cp.tree_size);
    if (!had) seen.set(cp.tree_size, { who, root: cp.root_hash, key: cp.key_id });
    else if (had.root !== cp.root_hash) {
      const keys = had.key === cp.key_id ? `key ${cp.key_id}` : `keys ${had.key} and ${cp.key_id}`;
      return `the log forked (split view): the sink signed two trees of size ${cp.tree_size} with different roots (${keys}), one cosigned by ${had.who}, the other by ${who}`;
    }
  }
  return undefined;
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
    /** The record MACs (main.ts, or `useMacs` once they exist); without them resets are unMAC'd. */
    private macs?: ResetMacs,
  ) {}

  /** Sets the record MACs (main.ts creates them after the witness has anchored the producer). */
  useMacs(macs: ResetMacs): void {
    this.macs = macs;
  }

  /**
   * A stored reset record as this replica may follow it (see the header): `refused` says why not
   * (a MAC that fails, or none while this replica could check one; reported by `macs`).
   */
  #openReset(raw: Buffer): { reset: ResetRecord | undefined; refused?: string } {
    const parsed = parse<ResetRecord & { mac?: unknown }>(raw);
    if (!this.macs?.available) {
      if (!parsed) return { reset: undefined };
      const { mac: _mac, ...reset } = parsed;
      return { reset };
    }
    const reset = this.macs.check<ResetRecord>(paths.witnessReset, raw);
    return reset ? { reset } : { reset: undefined, refused: `the witness reset record failed its integrity check (written outside keyshard, or while sealed: ${parsed && 'mac' in parsed ? 'MAC mismatch' : 'no MAC'})` };
  }

  /** Every witness record and the reset record, in one read. */
  async load(): Promise<WitnessRecords> {
    const res = await etcdCall('witness records', () => this.ns.getAll().prefix(paths.auditPrefix).exec());
    const out: WitnessRecords = { own: undefined, ownRevision: '0', others: new Map(), reset: undefined, resetRevision: '0' };
    const own = paths.witness(this.certificateCn);
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      if (key === paths.witnessReset) {
        const opened = this.#openReset(kv.value);
        out.reset = opened.reset;
        if (opened.refused) out.resetRefused = opened.refused;
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

  /** The reset record and its mod revision ('0': none); `refused`: why it may not be followed. */
  async reset(): Promise<{ reset: ResetRecord | undefined; revision: string; refused?: string }> {
    const res = await etcdCall('witness reset record', () => this.ns.get(paths.witnessReset).exec());
    const kv = res.kvs[0];
    return kv ? { ...this.#openReset(kv.value), revision: kv.mod_revision } : { reset: undefined, revision: '0' };
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
   * An operator's reset: every witness record moved into the reset record (`previous`, the last
   * reset into `history`), the reset record raised to the next epoch with `anchor` and MAC'd if
   * this replica is unsealed, in one transaction fenced on the reset record's revision `after`
   * and on every witness record read. Returns the new record and its revision, or undefined when
   * another reset (or a witness write) came first.
   */
  async writeReset(anchor: SignedCheckpoint, by: string, after: { epoch: number; revision: string }): Promise<{ record: ResetRecord; revision: string } | undefined> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const res = await etcdCall('witness records', () => this.ns.getAll().prefix(paths.auditPrefix).exec());
      const previous: Record<string, CosignedCheckpoint> = {};
      const seen: { key: string; rev: string }[] = [];
      let last: (ResetRecord & { mac?: unknown }) | undefined;
      let lastRevision = '0';
      for (const kv of res.kvs) {
        const key = kv.key.toString();
        if (key === paths.witnessReset) {
          last = parse<ResetRecord & { mac?: unknown }>(kv.value);
          lastRevision = kv.mod_revision;
        } else if (key.startsWith(paths.witnessesPrefix)) {
          seen.push({ key, rev: kv.mod_revision });
          const c = parse<CosignedCheckpoint>(kv.value);
          if (c) previous[key.slice(paths.witnessesPrefix.length)] = c;
        }
      }
      if (lastRevision !== after.revision) return undefined; // another reset came first
      const history = last ? [(({ history: _h, mac: _m, ...r }) => r)(last), ...(last.history ?? [])].slice(0, RESET_HISTORY) : [];
      const record: ResetRecord = { epoch: after.epoch + 1, anchor, by, time: new Date().toISOString(), previous, history };
      const value = this.macs?.available ? this.macs.stamp(paths.witnessReset, record) : JSON.stringify(record);
      const txn = await etcdCall('witness reset', () => {
        let t = this.ns.if(paths.witnessReset, 'Mod', '==', after.revision);
        for (const w of seen) t = t.and(w.key, 'Mod', '==', w.rev);
        return t.then(this.ns.delete().prefix(paths.witnessesPrefix), this.ns.put(paths.witnessReset).value(value)).commit();
      });
      if (txn.succeeded) return { record, revision: txn.header.revision };
      // A witness wrote its record meanwhile (or a new one appeared): read again and move that one too.
    }
    return undefined;
  }
}
