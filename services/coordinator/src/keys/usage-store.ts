/**
 * Per-version usage records in etcd (`usage/<key id>/<version>`, UsageRecord in key-record.ts),
 * for version-usage.ts: read with their record-MAC check (a count lowered in etcd would let a
 * version past the GCM bound, so one that fails is never used) and changed by compare-and-swap
 * on their mod revision. A destroyed key's usage records are deleted with it (key-store.ts).
 *
 * Unlike the key store's writes these are sent once, never resent: a usage record is not unique
 * to one write (two replicas reserving from the same count write the same bytes), so after a
 * lost answer nothing could tell whether this replica's write applied, and counting it as
 * applied could hand one block to two replicas. A lost answer fails the reservation instead:
 * the block may be wasted, and the stored count stays an upper bound of what was encrypted.
 */
import { etcdCall, paths, type Namespace } from '@keyshard/store';
import type { RecordIntegrity } from '../cluster/record-integrity.ts';
import type { UsageRecord } from './key-record.ts';

const EMPTY: UsageRecord = { encryptions: 0, lastUsedAt: '' };

export class UsageStore {
  readonly #ns: Namespace;
  readonly #integrity: RecordIntegrity;

  constructor(ns: Namespace, integrity: RecordIntegrity) {
    this.#ns = ns;
    this.#integrity = integrity;
  }

  /** Whether records can be written now (they carry a record MAC: only while unsealed). */
  get writable(): boolean {
    return this.#integrity.available;
  }

  /**
   * Read-modify-write of a version's usage record: a compare-and-swap on its etcd revision,
   * retried (up to `attempts`) when another replica wrote meanwhile. `change` returns the new
   * record, or undefined to write nothing. Resolves with what was written, else undefined.
   */
  async change(keyId: string, version: number, attempts: number, change: (cur: UsageRecord) => UsageRecord | undefined): Promise<UsageRecord | undefined> {
    const key = paths.usage(keyId, version);
    for (let attempt = 0; attempt < attempts; attempt++) {
      const kv = (await etcdCall('read usage', () => this.#ns.get(key).exec())).kvs[0];
      const next = change(kv ? this.#integrity.open<UsageRecord>(key, kv.value) : EMPTY);
      if (!next) return undefined;
      const body = this.#integrity.stamp(key, next);
      const tx = await etcdCall('update usage', () =>
        (kv ? this.#ns.if(key, 'Mod', '==', kv.mod_revision) : this.#ns.if(key, 'Create', '==', 0)).then(this.#ns.put(key).value(body)).commit(),
      );
      if (tx.succeeded) return next;
    }
    return undefined;
  }

  /** The stored records of a key's versions (one range read), by version; a version never used has none. */
  async ofKey(keyId: string): Promise<Map<number, UsageRecord>> {
    const stored = await etcdCall('read usage', () => this.#ns.getAll().prefix(paths.keyUsagePrefix(keyId)).strings());
    return new Map(Object.entries(stored).map(([k, v]) => [Number(k.slice(k.lastIndexOf('/') + 1)), this.#integrity.open<UsageRecord>(k, v)]));
  }
}
