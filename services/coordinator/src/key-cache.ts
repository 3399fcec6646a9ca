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
 *    never memory.
 */
import { etcdCall, paths, type Namespace, type Watcher } from '@keyshard/store';
import type { KeyRecord } from './keyring.ts';

/** A parsed key reference: a key id, a key name or an alias name. */
export type KeyRef = { id: string } | { name: string } | { alias: string };

export class KeyCache {
  #ns: Namespace;
  #onDestroyed: (id: string) => void;
  #keys = new Map<string, { record: KeyRecord; revision: bigint }>();
  #byName = new Map<string, string>(); // key name -> key id
  #aliases = new Map<string, string>(); // alias name -> key id
  /** Alias name -> mod revision of its value, or of its deletion. */
  #aliasRevisions = new Map<string, bigint>();
  /** Misses being read from etcd: concurrent lookups of one reference share one read. */
  #reading = new Map<string, Promise<KeyRecord | undefined>>();
  #loaded: Promise<void> | undefined;
  #watchers: Watcher[] = [];

  /** `onDestroyed`: a record became a tombstone (the keyring drops that key's material). */
  constructor(ns: Namespace, onDestroyed: (id: string) => void) {
    this.#ns = ns;
    this.#onDestroyed = onDestroyed;
  }

  /** Follows changes, then reads everything; once (again after a failure). */
  load(): Promise<void> {
    this.#loaded ??= (async () => {
      const ns = this.#ns;
      const watcher = await etcdCall('watch keys', () => ns.watch().prefix(paths.keysPrefix).create());
      this.#watchers.push(watcher);
      watcher.on('put', (kv) => {
        // This replica's own writes come back through the watch at the revision remembered when
        // they applied: nothing to parse then (a create batch brings dozens at once).
        if (this.#keys.get(keyIdOf(kv.key.toString()))?.revision === BigInt(kv.mod_revision)) return;
        this.remember(JSON.parse(kv.value.toString()) as KeyRecord, kv.mod_revision);
      });
      const aliasWatcher = await etcdCall('watch aliases', () => ns.watch().prefix(paths.alias('')).create());
      this.#watchers.push(aliasWatcher);
      aliasWatcher.on('put', (kv) => this.rememberAlias(aliasName(kv.key.toString()), kv.value.toString(), kv.mod_revision));
      aliasWatcher.on('delete', (kv) => this.rememberAlias(aliasName(kv.key.toString()), undefined, kv.mod_revision));
      const keys = await etcdCall('load keys', () => ns.getAll().prefix(paths.keysPrefix).exec());
      for (const kv of keys.kvs) this.remember(JSON.parse(kv.value.toString()) as KeyRecord, kv.mod_revision);
      const aliases = await etcdCall('load aliases', () => ns.getAll().prefix(paths.alias('')).exec());
      for (const kv of aliases.kvs) this.rememberAlias(aliasName(kv.key.toString()), kv.value.toString(), kv.mod_revision);
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

  /** Keeps `k`, written at etcd revision `revision`, unless a newer write of it is kept already. */
  remember(k: KeyRecord, revision: string): void {
    const rev = BigInt(revision);
    const old = this.#keys.get(k.id);
    if (old && rev < old.revision) return;
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
      const id = kv.value.toString();
      const k = this.#keys.get(id)?.record ?? (await this.read(id));
      if (k) this.rememberAlias(ref.alias, id, kv.mod_revision);
      return k;
    }
    const id = 'id' in ref ? ref.id : await etcdCall('read key name', () => ns.get(paths.name(ref.name)).string());
    return id ? (this.#keys.get(id)?.record ?? this.read(id)) : undefined;
  }

  /** Reads a key record from etcd into the cache; returns the newest record of it known, if any. */
  async read(id: string): Promise<KeyRecord | undefined> {
    const kv = (await etcdCall('read key', () => this.#ns.get(paths.key(id)).exec())).kvs[0];
    if (kv) this.remember(JSON.parse(kv.value.toString()) as KeyRecord, kv.mod_revision);
    return this.#keys.get(id)?.record;
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
