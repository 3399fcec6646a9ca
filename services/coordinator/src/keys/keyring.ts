/**
 * Keys, their versions and aliases in etcd (brief, "Key hierarchy"; "Coordination on etcd").
 *
 * Metadata lives in etcd in clear (it is not secret); each version's material is its own etcd
 * key, wrapped by the current KEK with AAD = cluster id | key id | version. Unwrapped material
 * is cached in memory only while unsealed and zeroized on seal. Names and aliases are unique
 * (created in the same transaction as what they point to). Every metadata change is a
 * compare-and-swap on the key's etcd revision, so concurrent replicas never lose an update,
 * committed through commitCas, so an answer lost in transit never applies a change twice.
 * Each replica's cache (key-cache.ts) follows a watch and reads etcd on a miss, so a key made
 * through one replica is usable through any other at once.
 * Key records and aliases carry a record MAC (record-integrity.ts), made at each write (one
 * HMAC) and checked as they enter the cache or are read for a compare-and-swap, never per
 * crypto call. A record that fails is never used: the operation fails with the integrity error.
 */
import {
  USAGE, generateMaterial, parseKeyType, pooledRandomBytes, unwrapVersion, wrapVersion, zeroize, type KeyType, type KeyUsage,
} from '@keyshard/crypto';
import { alreadyExists, failedPrecondition, invalidArgument, notFound, unavailable } from '@keyshard/errors';
import { commitCas, CreateBatcher, etcdCall, getJson, paths, type Namespace } from '@keyshard/store';
import type { Cluster } from '../cluster/cluster.ts';
import { KeyCache, type AliasRecord, type KeyRef } from './key-cache.ts';
import type { RecordIntegrity } from '../cluster/record-integrity.ts';
import { validatePolicy } from './key-policy.ts';
import type { Seal } from '../cluster/seal.ts';

export type KeyState = 'KEY_STATE_ENABLED' | 'KEY_STATE_DISABLED' | 'KEY_STATE_PENDING_DESTRUCTION' | 'KEY_STATE_DESTROYED';

export interface KeyRecord {
  id: string;
  name: string;
  type: KeyType;
  usage: KeyUsage;
  state: KeyState;
  primaryVersion: number;
  minDecryptionVersion: number;
  description: string;
  labels: Record<string, string>;
  createdAt: string;
  rotatedAt: string;
  createdBy: string;
  versions: { version: number; createdAt: string }[];
  /** operation -> principals; empty means the default: the creator (and admins, always). */
  policy: Record<string, string[]>;
  rotation: { periodSeconds: number; nextRotationAt: string };
  destructionAt: string;
}

interface VersionRecord {
  version: number;
  kekEpoch: number;
  wrapped: string; // base64
  createdAt: string;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;
export const MAX_NAME_LENGTH = 128;
const KEY_ID_RE = /^k_[A-Za-z0-9_-]{22}$/;
const ALIAS_PREFIX = 'alias/';

/** Whether `s` could name a key or an alias (validateName without the explanation). */
const isName = (s: string) => s.length <= MAX_NAME_LENGTH && NAME_RE.test(s) && !KEY_ID_RE.test(s);

/** What `ref` (an id, a name or `alias/<name>`) refers to; undefined if no key can have it. */
function parseRef(ref: string): KeyRef | undefined {
  if (KEY_ID_RE.test(ref)) return { id: ref };
  if (ref.startsWith(ALIAS_PREFIX)) return isName(ref.slice(ALIAS_PREFIX.length)) ? { alias: ref.slice(ALIAS_PREFIX.length) } : undefined;
  return isName(ref) ? { name: ref } : undefined;
}

export function validateName(name: string, what = 'key name'): void {
  if (typeof name !== 'string' || name.length === 0) throw invalidArgument(`${what} must not be empty`);
  if (name.length > MAX_NAME_LENGTH) throw invalidArgument(`${what} is longer than ${MAX_NAME_LENGTH} characters`);
  if (!NAME_RE.test(name)) throw invalidArgument(`${what} may contain letters, digits and _ . : - and must start with a letter or digit`);
  if (KEY_ID_RE.test(name)) throw invalidArgument(`${what} must not look like a key id (k_…)`);
}

const MAX_LABELS = 64;

/** Labels are kept in every key record and returned by GetKey and ListKeys: bounded like the description. */
export function validateLabels(labels: Record<string, string>): void {
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw invalidArgument(`a key has at most ${MAX_LABELS} labels, got ${entries.length}`);
  if (entries.some(([k, v]) => k.length > MAX_NAME_LENGTH || v.length > 1024))
    throw invalidArgument(`label names are limited to ${MAX_NAME_LENGTH} characters and label values to 1024`);
}

/** A leader's fence: writes also require its election key to be the one it was elected with. */
export interface Fence {
  key: string;
  createRevision: string;
  held(): Promise<boolean>;
}

const NOT_DUE = Symbol('not due');

export interface CreateKeyInput {
  name: string;
  type?: string;
  description?: string;
  labels?: Record<string, string>;
  rotationPeriodSeconds?: number;
  policy?: Record<string, string[]>;
}

export interface KeyringOptions {
  minRotationPeriodSeconds: number;
}

export class Keyring {
  #ns: Namespace;
  /** Concurrent creates share etcd transactions (group commit); each keeps its own compare. */
  #creates: CreateBatcher;
  #cluster: Cluster;
  #seal: Seal;
  #opts: KeyringOptions;
  #cache: KeyCache;
  #integrity: RecordIntegrity;
  #material = new Map<string, Buffer>(); // `${id}/${version}` -> unwrapped material

  constructor(ns: Namespace, cluster: Cluster, seal: Seal, integrity: RecordIntegrity, opts: KeyringOptions) {
    this.#ns = ns;
    this.#creates = new CreateBatcher(ns, 'create key');
    this.#cluster = cluster;
    this.#seal = seal;
    this.#integrity = integrity;
    this.#opts = opts;
    this.#cache = new KeyCache(ns, integrity, (id) => this.#forgetMaterial(id));
    seal.onSeal(() => {
      zeroize(...this.#material.values());
      this.#material.clear();
      void this.#cache.reset();
    });
  }

  /** Stops following changes in etcd (for tests and shutdown; the next call loads again). */
  close(): Promise<void> {
    return this.#cache.close();
  }

  /** Loads the key records and follows changes now (any call does it lazily; the leader's sweep needs it first). */
  warm(): Promise<void> {
    return this.#cache.load();
  }

  async #ready(): Promise<void> {
    this.#seal.requireOpen();
    await this.#cache.load();
  }

  /** Resolves an id, a name or `alias/<name>`. */
  async resolve(ref: string): Promise<KeyRecord> {
    await this.#ready();
    if (typeof ref !== 'string' || ref.length === 0) throw invalidArgument('key reference must not be empty');
    if (ref.length > MAX_NAME_LENGTH + ALIAS_PREFIX.length) throw invalidArgument(`key reference is longer than ${MAX_NAME_LENGTH} characters`);
    const parsed = parseRef(ref);
    const k = parsed && (await this.#cache.lookup(parsed));
    if (!k) throw notFound(`key ${ref} not found`);
    return k;
  }

  /**
   * The record of `k` as etcd holds it now, for a caller that needs what another replica may
   * just have changed (a version made there); `k` itself if it is gone.
   */
  async fresh(k: KeyRecord): Promise<KeyRecord> {
    return (await this.#cache.read(k.id)) ?? k;
  }

  rotationPeriod(seconds: number | undefined): number {
    const p = seconds ?? 0;
    if (!Number.isInteger(p) || p < 0) throw invalidArgument('rotation period must be a whole number of seconds');
    if (p > 0 && p < this.#opts.minRotationPeriodSeconds)
      throw invalidArgument(`rotation period must be at least ${this.#opts.minRotationPeriodSeconds} seconds`);
    return p;
  }

  async create(req: CreateKeyInput, principal: string): Promise<KeyRecord> {
    await this.#ready();
    validateName(req.name);
    const type = parseKeyType(req.type);
    if ((req.description ?? '').length > 1024) throw invalidArgument('description is longer than 1024 characters');
    validateLabels(req.labels ?? {});
    const policy = req.policy ? validatePolicy(req.policy) : {};
    const period = this.rotationPeriod(req.rotationPeriodSeconds);
    const now = new Date();
    const key: KeyRecord = {
      id: `k_${pooledRandomBytes(16).toString('base64url')}`,
      name: req.name,
      type,
      usage: USAGE[type],
      state: 'KEY_STATE_ENABLED',
      primaryVersion: 1,
      minDecryptionVersion: 1,
      description: req.description ?? '',
      labels: req.labels ?? {},
      createdAt: now.toISOString(),
      rotatedAt: now.toISOString(),
      createdBy: principal,
      versions: [{ version: 1, createdAt: now.toISOString() }],
      policy,
      rotation: { periodSeconds: period, nextRotationAt: period ? new Date(now.getTime() + period * 1000).toISOString() : '' },
      destructionAt: '',
    };
    const { material, version } = this.#newVersion(key, 1);
    // The name is created if absent, and names are never deleted, so a resent create cannot
    // apply twice; the name holding our fresh id proves an earlier send applied (1 witness).
    const puts: [string, string][] = [
      [paths.name(key.name), key.id],
      [paths.key(key.id), this.#integrity.stamp(paths.key(key.id), key)],
      [paths.version(key.id, 1), JSON.stringify(version)],
    ];
    const res = await this.#creates.create({ guard: paths.name(key.name), puts, witnesses: 1 }).catch((e) => {
      zeroize(material);
      throw e;
    });
    if (res.outcome !== 'applied') {
      zeroize(material);
      throw alreadyExists(`a key named ${key.name} already exists`);
    }
    this.#cache.remember(key, res.revision);
    this.#cacheMaterial(key.id, 1, material);
    return key;
  }

  #newVersion(key: KeyRecord, n: number): { material: Buffer; version: VersionRecord } {
    const { record } = this.#cluster.requireInitialized();
    const material = generateMaterial(key.type);
    const wrapped = wrapVersion(this.#seal.kek(record.kekEpoch), record.clusterId, key.id, n, material).toString('base64');
    return { material, version: { version: n, kekEpoch: record.kekEpoch, wrapped, createdAt: new Date().toISOString() } };
  }

  #forgetMaterial(id: string): void {
    for (const [cacheKey, material] of this.#material)
      if (cacheKey.startsWith(`${id}/`)) {
        zeroize(material);
        this.#material.delete(cacheKey);
      }
  }

  #cacheMaterial(id: string, version: number, material: Buffer): void {
    if (this.#seal.sealed) zeroize(material); // sealed meanwhile: keep nothing in memory
    else this.#material.set(`${id}/${version}`, material);
  }

  /**
   * Applies `change` to the current record with a compare-and-swap on its etcd revision,
   * retrying on a concurrent update. `extra` adds puts to the same transaction. The mod
   * revision never matches again once the change applied, so commitCas's resends after a lost
   * answer apply it at most once, and find it applied when they do; when they cannot tell,
   * this fails rather than applying `change` to a record that may already have it.
   */
  async update(
    id: string,
    change: (k: KeyRecord) => KeyRecord,
    extra: (k: KeyRecord) => [string, string][] = () => [],
    fence?: Fence,
  ): Promise<KeyRecord> {
    await this.#ready();
    const ns = this.#ns;
    // The first attempt starts from the cached record: its compare-and-swap on the cached mod
    // revision fails if etcd holds anything newer, and the attempts after read etcd. `change`
    // refusing the cached record (e.g. not due, wrong state) is judged again on the stored one.
    for (let attempt = 0; attempt < 5; attempt++) {
      const fromCache = attempt === 0 ? this.#cache.entry(id) : undefined;
      let cur: KeyRecord;
      let revision: string;
      if (fromCache) ({ record: cur, revision } = fromCache);
      else {
        // Checked and kept in the cache: callers that give up on it (not due) act on what they saw.
        const stored = await this.#cache.readForUpdate(id);
        if (!stored) throw notFound(`key ${id} not found`);
        ({ record: cur, revision } = stored);
      }
      let next: KeyRecord;
      try {
        next = change(cur);
      } catch (e) {
        if (fromCache) continue;
        throw e;
      }
      const puts = [[paths.key(id), this.#integrity.stamp(paths.key(id), next)] as [string, string], ...extra(next)];
      const tx = await commitCas(ns, 'update key', () => {
        const cmp = ns.if(paths.key(id), 'Mod', '==', revision);
        if (fence) cmp.and(fence.key, 'Create', '==', fence.createRevision);
        return cmp;
      }, puts);
      if (tx.outcome === 'applied') {
        this.#cache.remember(next, tx.revision);
        return next;
      }
      if (tx.outcome === 'unknown') throw unavailable(`the change to key ${cur.name} may or may not have been applied; read the key before trying again`);
      if (fence && !(await fence.held())) throw failedPrecondition('no longer the leader: write fenced off');
    }
    throw unavailable(`key ${id} is being changed concurrently; try again`);
  }

  /** Keys whose scheduled rotation is due at `now` (from the cache the watch keeps current). */
  due(now: number): KeyRecord[] {
    return this.#cache.records().filter(
      (k) => k.state === 'KEY_STATE_ENABLED' && k.rotation.periodSeconds > 0 && Date.parse(k.rotation.nextRotationAt) <= now,
    );
  }

  /**
   * Adds a version and makes it primary (RotateKey, the rotation schedule, the usage bound).
   * With `ifDueAt`, rotates only if the stored record is still due then; with `ifPrimary`, only
   * if that version is still the primary one. Both are a compare-and-swap on the record, so a
   * due rotation happens once even if two sweeps or replicas race; undefined when not done.
   * The version is added in update's transaction, so it is added once too: a resend after a lost
   * answer finds the record and the version it wrote (the version's fresh wrapped material
   * tells it from any other) and returns that rotation.
   */
  async rotate(k: KeyRecord, opts: { ifDueAt?: number; ifPrimary?: number; fence?: Fence } = {}): Promise<KeyRecord | undefined> {
    let made: { n: number; material: Buffer } | undefined;
    try {
      const updated = await this.update(
        k.id,
        (cur) => {
          if (opts.ifDueAt !== undefined && !(cur.rotation.periodSeconds > 0 && Date.parse(cur.rotation.nextRotationAt) <= opts.ifDueAt))
            throw NOT_DUE;
          if (opts.ifPrimary !== undefined && cur.primaryVersion !== opts.ifPrimary) throw NOT_DUE; // update cached the newer record
          if (cur.state !== 'KEY_STATE_ENABLED') throw failedPrecondition(`key ${cur.name} is not enabled`);
          const n = cur.primaryVersion + 1;
          const now = new Date();
          const period = cur.rotation.periodSeconds;
          return {
            ...cur,
            primaryVersion: n,
            rotatedAt: now.toISOString(),
            versions: [...cur.versions, { version: n, createdAt: now.toISOString() }],
            rotation: { periodSeconds: period, nextRotationAt: period ? new Date(now.getTime() + period * 1000).toISOString() : '' },
          };
        },
        (next) => {
          if (made) zeroize(made.material);
          const { material, version } = this.#newVersion(next, next.primaryVersion);
          made = { n: next.primaryVersion, material };
          return [[paths.version(next.id, next.primaryVersion), JSON.stringify(version)]];
        },
        opts.fence,
      );
      this.#cacheMaterial(updated.id, made!.n, made!.material);
      return updated;
    } catch (e) {
      if (made) zeroize(made.material);
      if (e === NOT_DUE) return undefined;
      throw e;
    }
  }

  /**
   * Crypto-shreds a key (a quorum-approved destroy-key ceremony): its versions' wrapped material
   * and usage records are deleted and its record becomes a tombstone, in one transaction that
   * requires the record to be unchanged and still past its destruction date. Returns the etcd
   * revision of the deletion, for compaction.
   */
  async destroy(id: string, now = Date.now()): Promise<string> {
    await this.#ready();
    const ns = this.#ns;
    const stored = await this.#cache.readForUpdate(id);
    if (!stored) throw notFound(`key ${id} not found`);
    const { record: cur, revision } = stored;
    if (cur.state !== 'KEY_STATE_PENDING_DESTRUCTION') throw failedPrecondition(`key ${cur.name} is not pending destruction`);
    if (Date.parse(cur.destructionAt) > now) throw failedPrecondition(`key ${cur.name} may not be destroyed before ${cur.destructionAt}`);
    const tombstone: KeyRecord = { ...cur, state: 'KEY_STATE_DESTROYED', policy: {}, rotation: { periodSeconds: 0, nextRotationAt: '' } };
    const body = this.#integrity.stamp(paths.key(id), tombstone);
    let tx;
    try {
      tx = await etcdCall('destroy key', () =>
        ns
          .if(paths.key(id), 'Mod', '==', revision)
          .then(ns.put(paths.key(id)).value(body), ns.delete().prefix(paths.versionsPrefix(id)), ns.delete().prefix(paths.keyUsagePrefix(id)))
          .commit(),
      );
    } catch (e) {
      // The answer may have been lost after etcd applied it (never resent: resend-policy.ts).
      // The tombstone, exactly as we wrote it, says it was: report it so the caller compacts.
      const now = (await etcdCall('read key', () => ns.get(paths.key(id)).exec()).catch(() => undefined))?.kvs[0];
      if (now?.value.toString() !== body) throw e;
      this.#cache.remember(tombstone, now.mod_revision);
      return now.mod_revision;
    }
    if (!tx.succeeded) throw unavailable(`key ${cur.name} changed during its destruction; the ceremony may be retried`);
    this.#cache.remember(tombstone, tx.header.revision);
    return tx.header.revision;
  }

  /** Keys in name order; the page token is the last name of the previous page. */
  async list(pageSize: number, pageToken: string): Promise<{ keys: KeyRecord[]; next: string }> {
    await this.#ready();
    const size = pageSize === 0 ? 100 : pageSize;
    if (!Number.isInteger(size) || size < 1 || size > 1000) throw invalidArgument('page_size must be between 1 and 1000');
    let after = '';
    if (pageToken) {
      after = Buffer.from(pageToken, 'base64url').toString('utf8');
      if (!after) throw invalidArgument('page_token is not valid');
    }
    const byName = this.#cache.byName();
    const names = [...byName.keys()].filter((n) => n > after).sort();
    const page = names.slice(0, size).map((n) => byName.get(n)!);
    const next = names.length > size ? Buffer.from(page[page.length - 1]!.name).toString('base64url') : '';
    return { keys: page, next };
  }

  /** The unwrapped material of one version; throws "sealed" if sealed meanwhile. */
  async material(k: KeyRecord, version: number): Promise<Buffer> {
    const cacheKey = `${k.id}/${version}`;
    const cached = this.#material.get(cacheKey);
    if (cached) return cached;
    const v = await getJson<VersionRecord>(this.#ns, paths.version(k.id, version));
    if (!v) throw notFound(`key ${k.name} has no version ${version}`);
    const { record } = this.#cluster.requireInitialized();
    // seal.kek() throws if the coordinator was sealed while etcd answered: nothing is cached then.
    const material = unwrapVersion(this.#seal.kek(v.kekEpoch), record.clusterId, k.id, version, Buffer.from(v.wrapped, 'base64'));
    this.#material.set(cacheKey, material);
    return material;
  }

  // ---- aliases -------------------------------------------------------------------------

  /**
   * Creates an alias (`from` undefined: it must not exist) or repoints one (`from`: the key id
   * it must still name — the caller authorised against that key).
   */
  async putAlias(alias: string, k: KeyRecord, from?: string): Promise<{ name: string; keyId: string }> {
    await this.#ready();
    validateName(alias, 'alias');
    const ns = this.#ns;
    const path = paths.alias(alias);
    const revision = from ? await this.#aliasRevision(alias, from) : undefined;
    const body = this.#integrity.stamp(path, { keyId: k.id } satisfies AliasRecord);
    // An alias can be deleted and made again, so a resend after a lost answer could recreate or
    // repoint one changed in the moments since: it then names the key this caller asked for.
    const res = await commitCas(ns, from ? 'update alias' : 'create alias', () =>
      revision ? ns.if(path, 'Mod', '==', revision) : ns.if(path, 'Create', '==', 0),
      [[path, body]],
    );
    if (res.outcome !== 'applied') throw from ? unavailable(`alias ${alias} changed meanwhile; try again`) : alreadyExists(`alias ${alias} already exists`);
    this.#cache.rememberAlias(alias, k.id, res.revision);
    return { name: alias, keyId: k.id };
  }

  /** Deletes an alias if it still names `from` (the key the caller was authorised against). */
  async deleteAlias(alias: string, from: string): Promise<void> {
    await this.#ready();
    validateName(alias, 'alias');
    const ns = this.#ns;
    const revision = await this.#aliasRevision(alias, from);
    const res = await etcdCall('delete alias', () => ns.if(paths.alias(alias), 'Mod', '==', revision).then(ns.delete().key(paths.alias(alias))).commit());
    if (!res.succeeded) throw unavailable(`alias ${alias} changed meanwhile; try again`);
    this.#cache.rememberAlias(alias, undefined, res.header.revision);
  }

  /** The mod revision of alias `alias`, which must pass its check and still name `keyId`. */
  async #aliasRevision(alias: string, keyId: string): Promise<string> {
    const kv = (await etcdCall('read alias', () => this.#ns.get(paths.alias(alias)).exec())).kvs[0];
    if (!kv || this.#integrity.open<AliasRecord>(paths.alias(alias), kv.value).keyId !== keyId) throw unavailable(`alias ${alias} changed meanwhile; try again`);
    return kv.mod_revision;
  }

  async listAliases(ref?: string): Promise<{ name: string; keyId: string }[]> {
    await this.#ready();
    const keyId = ref ? (await this.resolve(ref)).id : undefined;
    return this.#cache.aliases()
      .filter(([, id]) => !keyId || id === keyId)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, id]) => ({ name, keyId: id }));
  }
}
