/**
 * What one coordinator replica knows of the key records and aliases in etcd (for keyring.ts),
 * read and followed through key-store.ts.
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
 *    (by key-store.ts) as it enters the cache — at load, from the watch and on a read — so
 *    a crypto call costs no MAC. One that fails is reported and never kept: the key (or alias)
 *    leaves the cache, and every use of it reads etcd again and fails with the integrity error
 *    until a valid record replaces it. A name leads only to a key record that has that name.
 */
import type { KeyRecord, KeyRef } from './key-record.ts';
import type { CheckedKey, KeyStore, KeyStoreListener } from './key-store.ts';

export class KeyCache {
  #store: KeyStore;
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
  #stopWatching: (() => Promise<void>)[] = [];
  readonly #listener: KeyStoreListener = {
    key: (id, revision, checked) => {
      // This replica's own writes come back through the watch at the revision remembered when
      // they applied: nothing to parse then (a create batch brings dozens at once).
      if (this.#keys.get(id)?.revision !== BigInt(revision)) this.#keep(id, checked());
    },
    alias: (name, keyId, revision) => this.rememberAlias(name, keyId, revision),
  };

  /** `onDestroyed`: a record became a tombstone (the keyring drops that key's material). */
  constructor(store: KeyStore, onDestroyed: (id: string) => void) {
    this.#store = store;
    this.#onDestroyed = onDestroyed;
  }

  /** Follows changes, then reads everything; once (again after a failure). */
  load(): Promise<void> {
    this.#loaded ??= (async () => {
      this.#stopWatching.push(await this.#store.watch(this.#listener));
      await this.#store.readAll(this.#listener);
    })().catch(async (e) => {
      await this.close(); // a retry makes its own watches
      throw e;
    });
    return this.#loaded;
  }

  /** Stops following changes (etcd3 would otherwise keep re-opening the watches, even after its client is closed). */
  async close(): Promise<void> {
    this.#loaded = undefined;
    await Promise.all(this.#stopWatching.splice(0).map((stop) => stop()));
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
   * Keeps a key record read from etcd if it passed its checks; otherwise drops what the cache
   * holds of that key, at that revision. Returns the record kept.
   */
  #keep(id: string, c: CheckedKey): KeyRecord | undefined {
    if (c.record) {
      this.remember(c.record, c.revision);
      return c.record;
    }
    const rev = BigInt(c.revision);
    const old = this.#keys.get(id);
    if (old && rev < old.revision) return undefined; // a late event older than what is kept
    this.#refused.set(id, rev);
    if (old) {
      this.#keys.delete(id);
      if (this.#byName.get(old.record.name) === id) this.#byName.delete(old.record.name);
    }
    return undefined;
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
    if ('alias' in ref) {
      const a = await this.#store.alias(ref.alias);
      if (!a) return undefined;
      const k = this.#keys.get(a.record.keyId)?.record ?? (await this.read(a.record.keyId));
      if (k) this.rememberAlias(ref.alias, a.record.keyId, a.revision);
      return k;
    }
    if ('id' in ref) return this.#keys.get(ref.id)?.record ?? this.read(ref.id);
    const id = await this.#store.keyIdOfName(ref.name);
    if (!id) return undefined;
    const k = this.#keys.get(id)?.record ?? (await this.read(id));
    if (k && k.name !== ref.name) throw this.#store.refuseName(ref.name, id, k.name);
    return k;
  }

  /**
   * Reads a key record from etcd into the cache; returns the newest record of it known, if any.
   * Throws the integrity error if the stored record fails its check.
   */
  async read(id: string): Promise<KeyRecord | undefined> {
    const c = await this.#store.key(id);
    if (c && !this.#keep(id, c)) throw c.refused;
    return this.#keys.get(id)?.record;
  }

  /**
   * The stored record of key `id` with its mod revision, its check passed (kept in the cache), for
   * a compare-and-swap; undefined if there is none. Throws the integrity error if it fails.
   */
  async readForUpdate(id: string): Promise<{ record: KeyRecord; revision: string } | undefined> {
    const c = await this.#store.key(id);
    if (!c) return undefined;
    const record = this.#keep(id, c);
    if (!record) throw c.refused;
    return { record, revision: c.revision };
  }

  /** The cached record of key `id` and the etcd revision it was written at (no etcd read). */
  entry(id: string): { record: KeyRecord; revision: string } | undefined {
    const e = this.#keys.get(id);
    return e && { record: e.record, revision: String(e.revision) };
  }

  records(): KeyRecord[] {
    return [...this.#keys.values()].map((e) => e.record);
  }

  /** Up to `size` cached keys named after `after`, in name order; `more`: whether others follow. */
  page(after: string, size: number): { keys: KeyRecord[]; more: boolean } {
    const names = [...this.#byName.keys()].filter((n) => n > after).sort();
    return { keys: names.slice(0, size).map((n) => this.#keys.get(this.#byName.get(n)!)!.record), more: names.length > size };
  }

  /** [alias name, key id] of every cached alias. */
  aliases(): [string, string][] {
    return [...this.#aliases];
  }
}
