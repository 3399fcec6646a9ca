/**
 * The keys aggregate's one door to etcd (records: key-record.ts; usage records: usage-store.ts).
 * Paths come from @keyshard/store `paths`. Every read of a MAC'd record checks it
 * (record-integrity.ts): a key record must pass its MAC and name itself, an alias must pass its
 * MAC; one that fails is reported and comes back refused, never as a record.
 *
 * Every write is a compare-and-swap committed through @keyshard/store cas.ts (commitCas,
 * deleteCas, CreateBatcher), which resends it after a lost answer and applies it at most once:
 *  - create: the name, the key record and its first version, if the name was never created
 *    (names are never deleted; the name holding the fresh id proves a lost answer applied);
 *  - swap: a key record (with a rotation's new version), if its mod revision is still the one
 *    read and, for the leader, its election key still the one it was elected with;
 *  - destroy: the key record becomes its tombstone and its versions and usage records are
 *    deleted, if its mod revision is still the one read (the tombstone proves a lost answer applied);
 *  - aliases: created if absent, repointed or deleted if their mod revision is still the one read.
 * A call carrying a request token (request-tokens.ts, `boundToken`) has its first write also
 * record the token with the write's outcome, in the same transaction, which then also requires
 * the token to be unrecorded; a write that did not apply while the token is recorded meanwhile
 * (a concurrent attempt of the same call won) throws, and the call answers the recorded outcome.
 */
import { commitCas, CreateBatcher, deleteCas, etcdCall, getJson, paths, type CasResult, type Namespace } from '@keyshard/store';
import type { KeyshardError } from '@keyshard/errors';
import { integrityError, type RecordIntegrity } from '../cluster/record-integrity.ts';
import type { AliasRecord, KeyRecord, VersionRecord } from './key-record.ts';
import { boundToken, settle, type TokenBinding, type TokenOutcome } from './request-tokens.ts';

/** A leader's fence: writes also require its election key to be the one it was elected with. */
export interface Fence {
  key: string;
  createRevision: string;
  held(): Promise<boolean>;
}

/** A record as stored, with the etcd mod revision it was written at. */
export interface Stored<T> {
  record: T;
  revision: string;
}

/** A key record read at `revision`: the record if it passed its checks, else the integrity error (reported). */
export type CheckedKey = { revision: string } & ({ record: KeyRecord; refused?: undefined } | { record?: undefined; refused: KeyshardError });

/** What the watch and a full read deliver, in etcd's order. */
export interface KeyStoreListener {
  /** A key record; checked only when `checked()` is called (a replica's own writes come back unread). */
  key(id: string, revision: string, checked: () => CheckedKey): void;
  /** An alias; `keyId` undefined: deleted, or refused by its check (reported). */
  alias(name: string, keyId: string | undefined, revision: string): void;
}

export class KeyStore {
  readonly #ns: Namespace;
  readonly #integrity: RecordIntegrity;
  /** Concurrent creates share etcd transactions (group commit); each keeps its own compare. */
  readonly #creates: CreateBatcher;

  constructor(ns: Namespace, integrity: RecordIntegrity) {
    this.#ns = ns;
    this.#integrity = integrity;
    this.#creates = new CreateBatcher(ns, 'create key');
  }

  // ---- reads ---------------------------------------------------------------------------

  /** Key record `id` as etcd holds it now; undefined if there is none. */
  async key(id: string): Promise<CheckedKey | undefined> {
    const kv = (await etcdCall('read key', () => this.#ns.get(paths.key(id)).exec())).kvs[0];
    return kv && this.#checkKey(id, kv.value, kv.mod_revision);
  }

  #checkKey(id: string, raw: Buffer, revision: string): CheckedKey {
    const path = paths.key(id);
    const k = this.#integrity.check<KeyRecord>(path, raw);
    if (k && k.id === id) return { record: k, revision };
    return { revision, refused: k ? this.#integrity.refuse(path, `holds the record of key ${k.id}`, raw.toString()) : integrityError(path) };
  }

  /** The key id `names/<name>` holds: a bare id, which counts only if that key has the name (refuseName). */
  async keyIdOfName(name: string): Promise<string | undefined> {
    return (await etcdCall('read key name', () => this.#ns.get(paths.name(name)).string())) ?? undefined;
  }

  /** Reports a name that leads to key `id`, named otherwise (`keyName`); returns the integrity error. */
  refuseName(name: string, id: string, keyName: string): KeyshardError {
    return this.#integrity.refuse(paths.name(name), `leads to key ${id}, named ${keyName}`, id);
  }

  /** Alias `name` as etcd holds it now; undefined if there is none. Throws the integrity error if it fails its check. */
  async alias(name: string): Promise<Stored<AliasRecord> | undefined> {
    const kv = (await etcdCall('read alias', () => this.#ns.get(paths.alias(name)).exec())).kvs[0];
    return kv && { record: this.#integrity.open<AliasRecord>(paths.alias(name), kv.value), revision: kv.mod_revision };
  }

  /** Version `n` of key `id` (its material wrapped: the version's AAD binds it to its place). */
  version(id: string, n: number): Promise<VersionRecord | undefined> {
    return getJson<VersionRecord>(this.#ns, paths.version(id, n));
  }

  /**
   * Follows key records and aliases as they change; returns the function that stops. While sealed
   * nothing can be checked: changed records and aliases are dropped (the cache is reset on seal
   * and read again after unseal), deletions still delivered.
   */
  async watch(to: KeyStoreListener): Promise<() => Promise<void>> {
    const ns = this.#ns;
    const keys = await etcdCall('watch keys', () => ns.watch().prefix(paths.keysPrefix).create());
    keys.on('put', (kv) => {
      const id = keyIdOf(kv.key.toString());
      if (this.#integrity.available) to.key(id, kv.mod_revision, () => this.#checkKey(id, kv.value, kv.mod_revision));
    });
    const aliases = await etcdCall('watch aliases', () => ns.watch().prefix(paths.alias('')).create()).catch(async (e) => {
      await keys.cancel().catch(() => {});
      throw e;
    });
    aliases.on('put', (kv) => {
      if (this.#integrity.available) this.#deliverAlias(to, kv.key.toString(), kv.value, kv.mod_revision);
    });
    aliases.on('delete', (kv) => to.alias(aliasName(kv.key.toString()), undefined, kv.mod_revision));
    return async () => void (await Promise.all([keys.cancel().catch(() => {}), aliases.cancel().catch(() => {})]));
  }

  /** Delivers every key record, then every alias, as stored now. */
  async readAll(to: KeyStoreListener): Promise<void> {
    const keys = await etcdCall('load keys', () => this.#ns.getAll().prefix(paths.keysPrefix).exec());
    for (const kv of keys.kvs) {
      const id = keyIdOf(kv.key.toString());
      to.key(id, kv.mod_revision, () => this.#checkKey(id, kv.value, kv.mod_revision));
    }
    const aliases = await etcdCall('load aliases', () => this.#ns.getAll().prefix(paths.alias('')).exec());
    for (const kv of aliases.kvs) this.#deliverAlias(to, kv.key.toString(), kv.value, kv.mod_revision);
  }

  #deliverAlias(to: KeyStoreListener, etcdKey: string, raw: Buffer, revision: string): void {
    const name = aliasName(etcdKey);
    to.alias(name, this.#integrity.check<AliasRecord>(paths.alias(name), raw)?.keyId, revision);
  }

  // ---- compare-and-swap writes ---------------------------------------------------------

  /** Creates key `k` with its name and its first version, if the name was never created. */
  create(k: KeyRecord, first: VersionRecord): Promise<CasResult> {
    const puts: [string, string][] = [
      [paths.name(k.name), k.id],
      [paths.key(k.id), this.#integrity.stamp(paths.key(k.id), k)],
      [paths.version(k.id, first.version), JSON.stringify(first)],
    ];
    const t = boundToken();
    if (t) puts.push(this.#tokenPut(t, { key: k }));
    return this.#recording(t, this.#creates.create({ guard: paths.name(k.name), puts, witnesses: 1, absent: t && [t.path] }));
  }

  /** Replaces key record `id` by `next` (and writes `version` with it) if it is still at `revision` and `fence` holds. */
  swap(id: string, revision: string, next: KeyRecord, opts: { version?: VersionRecord; fence?: Fence } = {}): Promise<CasResult> {
    const ns = this.#ns;
    const puts: [string, string][] = [[paths.key(id), this.#integrity.stamp(paths.key(id), next)]];
    if (opts.version) puts.push([paths.version(id, opts.version.version), JSON.stringify(opts.version)]);
    const t = opts.fence ? undefined : boundToken(); // the leader's jobs carry no caller's token
    if (t) puts.push(this.#tokenPut(t, { key: next }));
    return this.#recording(t, commitCas(ns, 'update key', () => {
      const cmp = ns.if(paths.key(id), 'Mod', '==', revision);
      if (opts.fence) cmp.and(opts.fence.key, 'Create', '==', opts.fence.createRevision);
      if (t) cmp.and(t.path, 'Create', '==', 0);
      return cmp;
    }, puts));
  }

  /** The put recording token `t` with `outcome` (request-tokens.ts). */
  #tokenPut(t: TokenBinding, outcome: TokenOutcome): [string, string] {
    return t.put(outcome, this.#integrity);
  }

  /** A write's result, once token `t` is settled (request-tokens.ts `settle`). */
  async #recording(t: TokenBinding | undefined, write: Promise<CasResult>): Promise<CasResult> {
    const res = await write;
    await settle(this.#ns, t, res.outcome === 'applied');
    return res;
  }

  /** Replaces key record `id` by `tombstone` and deletes its versions and usage records, if it is still at `revision`. */
  destroy(id: string, revision: string, tombstone: KeyRecord): Promise<CasResult> {
    const ns = this.#ns;
    return commitCas(ns, 'destroy key', () => ns.if(paths.key(id), 'Mod', '==', revision), [[paths.key(id), this.#integrity.stamp(paths.key(id), tombstone)]], 1, [
      { prefix: paths.versionsPrefix(id) },
      { prefix: paths.keyUsagePrefix(id) },
    ]);
  }

  /** Points alias `name` at `keyId`: creates it if `revision` is undefined (it must not exist), else repoints it if still at `revision`. */
  putAlias(name: string, keyId: string, revision?: string): Promise<CasResult> {
    const ns = this.#ns;
    const path = paths.alias(name);
    const body = this.#integrity.stamp(path, { keyId } satisfies AliasRecord);
    const puts: [string, string][] = [[path, body]];
    const t = boundToken();
    if (t) puts.push(this.#tokenPut(t, { alias: { name, keyId } }));
    return this.#recording(t, commitCas(ns, revision ? 'update alias' : 'create alias', () => {
      const cmp = revision ? ns.if(path, 'Mod', '==', revision) : ns.if(path, 'Create', '==', 0);
      if (t) cmp.and(t.path, 'Create', '==', 0);
      return cmp;
    }, puts));
  }

  /** Deletes alias `name` if it is still at `revision`. */
  deleteAlias(name: string, revision: string): Promise<CasResult> {
    const ns = this.#ns;
    const t = boundToken();
    return this.#recording(t, deleteCas(ns, 'delete alias', () => {
      const cmp = ns.if(paths.alias(name), 'Mod', '==', revision);
      if (t) cmp.and(t.path, 'Create', '==', 0);
      return cmp;
    }, paths.alias(name), t ? [this.#tokenPut(t, { deleted: true })] : []));
  }
}

function keyIdOf(etcdKey: string): string {
  return etcdKey.slice(etcdKey.lastIndexOf(paths.keysPrefix) + paths.keysPrefix.length);
}

function aliasName(etcdKey: string): string {
  const prefix = paths.alias('');
  return etcdKey.slice(etcdKey.indexOf(prefix) + prefix.length);
}
