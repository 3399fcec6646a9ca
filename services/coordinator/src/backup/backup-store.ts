/**
 * What backups and restores read and write in etcd: the one module of backup/ that calls it.
 *
 * A backup's unit is the etcd entry, not a typed record: a backup copies every entry under
 * BACKUP_PREFIXES (the durable state of every aggregate: cluster, keys, usage) as opaque bytes,
 * all at one revision, a page at a time; a restore writes them back as they were. So this store
 * is separate from the aggregates' own stores, whose types it never needs, and it is used from
 * the worker threads that read and write (block-worker.ts), each with its own etcd client.
 *
 * The restore's protocol on the cluster record: `claim` creates it (state `restoring`) only in an
 * empty cluster; every batch of entries is written only while the claim is there; `commit`
 * replaces the claim by the backup's cluster record; `undo` first swaps the claim for another
 * value (so a batch still on its way fails instead of landing after the deletes), then removes
 * every backed-up prefix.
 */
import type { BackupEntry } from '@keyshard/crypto';
import { BACKUP_PREFIXES, deletionOf, etcdCall, paths, type Namespace } from '@keyshard/store';
import type { ClusterRecord } from '../cluster/cluster-store.ts';

const PAGE = 1000;

/** The key range of a BACKUP_PREFIXES entry: a prefix (trailing slash) or one exact key. */
function rangeOf(prefix: string): { start: string; end: string } {
  if (!prefix.endsWith('/')) return { start: prefix, end: `${prefix}\0` };
  return { start: prefix, end: prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1) };
}

export class BackupStore {
  readonly #ns: Namespace;

  constructor(ns: Namespace) {
    this.#ns = ns;
  }

  /** The current revision: what a backup reads at. */
  async revision(): Promise<string> {
    return (await etcdCall('backup revision', () => this.#ns.get(paths.cluster).exec())).header.revision;
  }

  /** How many entries a backup at `revision` holds. */
  async count(revision: string): Promise<number> {
    let total = 0;
    for (const p of BACKUP_PREFIXES) total += Number(await etcdCall('backup count', () => this.#ns.getAll().inRange(rangeOf(p)).revision(revision).count()));
    return total;
  }

  /** Every entry a backup holds, at `revision`, in backup order, a page at a time. */
  async *entries(revision: string): AsyncGenerator<BackupEntry> {
    for (const p of BACKUP_PREFIXES) {
      const { end } = rangeOf(p);
      let { start } = rangeOf(p);
      for (;;) {
        const res = await etcdCall(`backup read ${p}`, () => this.#ns.getAll().inRange({ start, end }).revision(revision).limit(PAGE).exec());
        for (const kv of res.kvs) yield { key: kv.key.toString(), value: kv.value };
        if (!res.more || res.kvs.length === 0) break;
        start = `${res.kvs[res.kvs.length - 1]!.key.toString()}\0`;
      }
    }
  }

  /** Claims the empty cluster for a restore: the claim becomes the cluster record only if there is none. Whether it did. */
  async claim(claim: ClusterRecord): Promise<boolean> {
    const res = await etcdCall('restore claim', () =>
      this.#ns.if(paths.cluster, 'Create', '==', 0).then(this.#ns.put(paths.cluster).value(JSON.stringify(claim))).commit(),
    );
    return res.succeeded;
  }

  /** Puts `entries` in one transaction, only while the claim (its exact JSON) holds the cluster record. Whether they were. */
  async write(claim: string, entries: BackupEntry[]): Promise<boolean> {
    const res = await etcdCall('restore write', () => this.#ifClaimed(claim).then(...entries.map((e) => this.#ns.put(e.key).value(e.value))).commit());
    return res.succeeded;
  }

  /** Replaces the claim by the backup's cluster record (its stored bytes). Whether the claim still held. */
  async commit(claim: ClusterRecord, record: Buffer): Promise<boolean> {
    const res = await etcdCall('restore commit', () => this.#ifClaimed(JSON.stringify(claim)).then(this.#ns.put(paths.cluster).value(record)).commit());
    return res.succeeded;
  }

  /** Removes what a failed restore wrote (the target was empty: every backed-up prefix goes), unless the claim is not ours any more. */
  async undo(claim: ClusterRecord): Promise<void> {
    const undoing = JSON.stringify({ ...claim, undoing: true });
    const swapped = await etcdCall('restore undo', () => this.#ifClaimed(JSON.stringify(claim)).then(this.#ns.put(paths.cluster).value(undoing)).commit());
    if (!swapped.succeeded && (await etcdCall('restore undo', () => this.#ns.get(paths.cluster).string())) !== undoing) return; // not ours any more
    for (const p of BACKUP_PREFIXES) if (p !== paths.cluster) await etcdCall('restore undo', () => deletionOf(this.#ns, p).exec());
    await etcdCall('restore undo', () => this.#ns.delete().key(paths.cluster).exec());
  }

  #ifClaimed(claim: string) {
    return this.#ns.if(paths.cluster, 'Value', '==', claim);
  }
}
