/**
 * What one coordinator replica knows of the key records and aliases in etcd (for keyring.ts).
 *
 * A watch on keys/ and aliases/ keeps it current, but lags behind writes made through other
 * replicas. Invariants:
 *  - read-your-writes across replicas: a reference the cache does not know is read from etcd (a
 *    linearizable read) before it is reported missing, so a key created or aliased through
 *    another replica is usable here at once;
 *  - newest wins: each entry keeps the etcd mod revision it was written at, and an older write
 *    (a watch event arriving after a direct read of a newer one) never replaces it; an alias's
 *    deletion keeps its revision, so a read that started before it cannot revive it;
 *  - bounded by what exists: only records and aliases found in etcd are kept (and the revision
 *    of each alias deleted since), so looking up references that do not exist costs reads but
 *    never memory;
 *  - only verified records: every key record and alias is checked against its record MAC
 *    (record-integrity.ts) as it enters the cache — at load, from the watch and on a read — so
 *    a crypto call costs no MAC. One that fails is reported and never kept: the key (or alias)
 *    leaves the cache, and every use of it reads etcd again and fails with the integrity error
 *    until a valid record replaces it. A name leads only to a key record that has that name.
 */
import { etcdCall, paths, type Namespace, type Watcher } from '@keyshard/store';
import type { KeyRecord } from './keyring.ts';
import { integrityError, type RecordIntegrity } from '../cluster/record-integrity.ts';

/** What `aliases/<name>` holds (with its record MAC). */
export interface AliasRecord {
  keyId: string;
}

/** A parsed key reference: a key id, a key name or an alias name. */
export type KeyRef = { id: string } | { name: string } | { alias: string };

export class KeyCache {
  #ns: Namespace;
  #integrity: RecordIntegrity;
  #onDestroyed: (id: string) => void;
  #keys = new Map<string, { record: KeyRecord; revision: bigint }>();
  /** Key id -> mod revision of a record that failed its check (older records may not return). */
  #refused = new Map<string, bigint>();
  #byName = new Map<string, string>(); // key name -> key id
  #aliases = new Map<string, string>(); // alias name -> key id
  /** Alias name -> mod revision of its value, or of its deletion. */
  #aliasRevisions = new Map<string, bigint>();
  /** Misses being read from etcd: concurrent lookups of one reference share one read. */
  #reading = new Map<string, Promise<KeyRecord | undefined>>();
  #loaded: Promise<void> | undefined;
  #watchers: Watcher[] = [];

  /** `onDestroyed`: a record became a tombstone (the keyring drops that key's material). */
  constructor(ns: Namespace, integrity: RecordIntegrity, onDestroyed: (id: string) => void) {
    this.#ns = ns;
    this.#integrity = integrity;
    this.#onDestroyed = onDestroyed;
  }

  /** Follows changes, then reads everything; once (again after a failure). */
  load(): Promise<void> {
    this.#loaded ??= (async () => {
      const ns = this.#ns;
      const watcher = await etcdCall('watch keys', () => ns.watch().prefix(paths.keysPrefix).create());
      this.#watchers.push(watcher);
      watcher.on('put', (kv) => {
        if (!this.#integrity.available) return; // sealed: the keyring resets the cache, and loads it again at unseal
        // This replica's own writes come back through the watch at the revision remembered when
        // they applied: nothing to parse then (a create batch brings dozens at once).
        if (this.#keys.get(keyIdOf(kv.key.toString()))?.revision === BigInt(kv.mod_revision)) return;
        this.#verified(keyIdOf(kv.key.toString()), kv.value, kv.mod_revision);
      });
      const aliasWatcher = await etcdCall('watch aliases', () => ns.watch().prefix(paths.alias('')).create());
      this.#watchers.push(aliasWatcher);
      aliasWatcher.on('put', (kv) => {
        if (this.#integrity.available) this.#verifiedAlias(aliasName(kv.key.toString()), kv.value, kv.mod_revision);
      });
      aliasWatcher.on('delete', (kv) => this.rememberAlias(aliasName(kv.key.toString()), undefined, kv.mod_revision));
      const keys = await etcdCall('load keys', () => ns.getAll().prefix(paths.keysPrefix).exec());
      for (const kv of keys.kvs) this.#verified(keyIdOf(kv.key.toString()), kv.value, kv.mod_revision);
      const aliases = await etcdCall('load aliases', () => ns.getAll().prefix(paths.alias('')).exec());
      for (const kv of aliases.kvs) this.#verifiedAlias(aliasName(kv.key.toString()), kv.value, kv.mod_revision);
    })().catch(async (e) => {
      await this.close(); // a retry makes its own watchers
      throw e;
    });
    return this.#loaded;
  }

  /** Stops following changes (etcd3 would otherwise keep re-opening the watches, even after its client is closed). */
  async close(): Promise<void> {
    this.#loaded = undefined;
    await Promise.all(this.#watchers.splice(0).map((w) => w.cancel().catch(() => {})));
  }

  /**
   * Forgets everything and stops following (on seal: records arriving while sealed cannot be
   * checked, so the next load, after unseal, reads and checks them all again).
   */
  reset(): Promise<void> {
    this.#keys.clear();
    this.#refused.clear();
    this.#byName.clear();
    this.#aliases.clear();
    this.#aliasRevisions.clear();
    return this.close();
  }

  /**
   * Keeps the stored key record `raw` of key `id` if it passes its check (and names itself `id`);
   * otherwise drops what the cache holds of that key, at that revision. Returns the record kept.
   */
  #verified(id: string, raw: Buffer, revision: string): KeyRecord | undefined {
    const path = paths.key(id);
    const k = this.#integrity.check<KeyRecord>(path, raw);
    if (k && k.id === id) {
      this.remember(k, revision);
      return k;
    }
    if (k) this.#integrity.refuse(path, `holds the record of key ${k.id}`, raw.toString());
    const rev = BigInt(revision);
    const old = this.#keys.get(id);
    if (old && rev < old.revision) return undefined; // a late event older than what is kept
    this.#refused.set(id, rev);
    if (old) {
      this.#keys.delete(id);
      if (this.#byName.get(old.record.name) === id) this.#byName.delete(old.record.name);
    }
    return undefined;
  }

  /** Keeps the alias `raw` stored at `aliases/<alias>` if it passes its check; a failing one is dropped at its revision. */
  #verifiedAlias(alias: string, raw: Buffer, revision: string): AliasRecord | undefined {
    const a = this.#integrity.check<AliasRecord>(paths.alias(alias), raw);
    this.rememberAlias(alias, a?.keyId, revision);
    return a;
  }

  /** Keeps `k` (verified), written at etcd revision `revision`, unless a newer write of it is kept already. */
  remember(k: KeyRecord, revision: string): void {
    const rev = BigInt(revision);
    const old = this.#keys.get(k.id);
    if (old && rev < old.revision) return;
    const refused = this.#refused.get(k.id);
    if (refused !== undefined) {
      if (rev <= refused) return;
      this.#refused.delete(k.id);
    }
    if (k.state === 'KEY_STATE_DESTROYED') this.#onDestroyed(k.id);
    if (old && old.record.name !== k.name) this.#byName.delete(old.record.name);
    this.#keys.set(k.id, { record: k, revision: rev });
    this.#byName.set(k.name, k.id);
  }

  /** Keeps an alias (`keyId` undefined: its deletion) written at `revision`, unless a newer write is kept. */
  rememberAlias(alias: string, keyId: string | undefined, revision: string): void {
    const rev = BigInt(revision);
    if (rev < (this.#aliasRevisions.get(alias) ?? -1n)) return;
    this.#aliasRevisions.set(alias, rev);
    if (keyId === undefined) this.#aliases.delete(alias);
    else this.#aliases.set(alias, keyId);
  }

  /** The record `ref` names, from the cache, else from etcd; undefined if there is none. */
  lookup(ref: KeyRef): Promise<KeyRecord | undefined> {
    const id = 'id' in ref ? ref.id : 'name' in ref ? this.#byName.get(ref.name) : this.#aliases.get(ref.alias);
    const cached = id === undefined ? undefined : this.#keys.get(id)?.record;
    if (cached) return Promise.resolve(cached);
    const key = 'id' in ref ? `id ${ref.id}` : 'name' in ref ? `name ${ref.name}` : `alias ${ref.alias}`;
    let reading = this.#reading.get(key);
    if (!reading) {
      reading = this.#readRef(ref).finally(() => this.#reading.delete(key));
      this.#reading.set(key, reading);
    }
    return reading;
  }

  async #readRef(ref: KeyRef): Promise<KeyRecord | undefined> {
    const ns = this.#ns;
    if ('alias' in ref) {
      const kv = (await etcdCall('read alias', () => ns.get(paths.alias(ref.alias)).exec())).kvs[0];
      if (!kv) return undefined;
      const a = this.#integrity.open<AliasRecord>(paths.alias(ref.alias), kv.value);
      const k = this.#keys.get(a.keyId)?.record ?? (await this.read(a.keyId));
      if (k) this.rememberAlias(ref.alias, a.keyId, kv.mod_revision);
      return k;
    }
    if ('id' in ref) return this.#keys.get(ref.id)?.record ?? this.read(ref.id);
    // names/ holds a bare key id: it counts only if the MAC'd key record it leads to has that name.
    const id = await etcdCall('read key name', () => ns.get(paths.name(ref.name)).string());
    if (!id) return undefined;
    const k = this.#keys.get(id)?.record ?? (await this.read(id));
    if (k && k.name !== ref.name) throw this.#integrity.refuse(paths.name(ref.name), `leads to key ${id}, named ${k.name}`, id);
    return k;
  }

  /**
   * Reads a key record from etcd into the cache; returns the newest record of it known, if any.
   * Throws the integrity error if the stored record fails its check.
   */
  async read(id: string): Promise<KeyRecord | undefined> {
    const kv = (await etcdCall('read key', () => this.#ns.get(paths.key(id)).exec())).kvs[0];
    if (kv && !this.#verified(id, kv.value, kv.mod_revision)) throw integrityError(paths.key(id));
    return this.#keys.get(id)?.record;
  }

  /**
   * The stored record of key `id` with its mod revision, its check passed (kept in the cache), for
   * a compare-and-swap; undefined if there is none. Throws the integrity error if it fails.
   */
  async readForUpdate(id: string): Promise<{ record: KeyRecord; revision: string } | undefined> {
    const kv = (await etcdCall('read key', () => this.#ns.get(paths.key(id)).exec())).kvs[0];
    if (!kv) return undefined;
    const k = this.#verified(id, kv.value, kv.mod_revision);
    if (!k) throw integrityError(paths.key(id));
    return { record: k, revision: kv.mod_revision };
  }

  /** The cached record of key `id` and the etcd revision it was written at (no etcd read). */
  entry(id: string): { record: KeyRecord; revision: string } | undefined {
    const e = this.#keys.get(id);
    return e && { record: e.record, revision: String(e.revision) };
  }

  records(): KeyRecord[] {
    return [...this.#keys.values()].map((e) => e.record);
  }

  /** Names of the cached keys, with their records. */
  byName(): Map<string, KeyRecord> {
    return new Map([...this.#byName].map(([name, id]) => [name, this.#keys.get(id)!.record]));
  }

  /** [alias name, key id] of every cached alias. */
  aliases(): [string, string][] {
    return [...this.#aliases];
  }
}

function keyIdOf(etcdKey: string): string {
  return etcdKey.slice(etcdKey.lastIndexOf(paths.keysPrefix) + paths.keysPrefix.length);
}

function aliasName(etcdKey: string): string {
  const prefix = paths.alias('');
  return etcdKey.slice(etcdKey.indexOf(prefix) + prefix.length);
}
