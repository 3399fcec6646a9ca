/**
 * Keys, their versions and aliases (brief, "Key hierarchy"; "Coordination on etcd"); what they
 * hold: key-record.ts.
 *
 * Each version's material is wrapped by the KEK and unwrapped only while unsealed
 * (version-material.ts). Names and
 * aliases are unique (created in the same transaction as what they point to). Every change is a
 * compare-and-swap on the record's etcd revision, written through key-store.ts (the aggregate's
 * one door to etcd), so concurrent replicas never lose an update and an answer lost in transit
 * never applies a change twice. Each replica's cache (key-cache.ts) follows a watch and reads
 * etcd on a miss, so a key made through one replica is usable through any other at once.
 * Key records and aliases carry a record MAC, made at each write (one HMAC) and checked as they
 * enter the cache or are read for a compare-and-swap, never per crypto call. A record that fails
 * is never used: the operation fails with the integrity error.
 * The seal is checked before any record is used (#ready), whoever calls: the KeyService
 * interceptor (server/methods.ts) refuses sealed calls sooner, but the leader's rotation sweep,
 * the usage bound and the destroy-key ceremony call the keyring directly, and a seal can land
 * while a call waits for etcd.
 */
import { parseKeyType, pooledRandomBytes } from '@keyshard/crypto';
import { alreadyExists, failedPrecondition, invalidArgument, keyNotFound, unavailable } from '@keyshard/errors';
import type { Namespace } from '@keyshard/store';
import type { Cluster } from '../cluster/cluster.ts';
import type { RecordIntegrity } from '../cluster/record-integrity.ts';
import type { Seal } from '../cluster/seal.ts';
import { KeyAliases, type Alias } from './key-aliases.ts';
import { KeyCache } from './key-cache.ts';
import { validatePolicy } from './key-policy.ts';
import {
  ALIAS_PREFIX, MAX_NAME_LENGTH, keyStateRefusal, newKeyRecord, parseRef, rotatedRecord, rotationDue, tombstoneOf, validateDescription, validateLabels, validateName,
  type KeyRecord, type VersionRecord,
} from './key-record.ts';
import { KeyStore, type Fence } from './key-store.ts';
import { VersionMaterial } from './version-material.ts';

/** The types of the keyring's API, for its callers (leader-jobs.ts takes a Fence, everyone gets KeyRecords). */
export type { Fence, KeyRecord };

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
  #store: KeyStore;
  #cluster: Cluster;
  #seal: Seal;
  #opts: KeyringOptions;
  #cache: KeyCache;
  #material: VersionMaterial;
  #aliases: KeyAliases;

  constructor(ns: Namespace, cluster: Cluster, seal: Seal, integrity: RecordIntegrity, opts: KeyringOptions) {
    this.#store = new KeyStore(ns, integrity);
    this.#cluster = cluster;
    this.#seal = seal;
    this.#opts = opts;
    this.#material = new VersionMaterial(cluster, seal, this.#store);
    this.#cache = new KeyCache(this.#store, (id) => this.#material.forget(id));
    this.#aliases = new KeyAliases(this.#store, this.#cache);
    seal.onSeal(() => void this.#cache.reset());
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
    if (!k) throw keyNotFound(ref);
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

  /** `creatorAdmin`: the creator is a cluster admin now (recorded: key-record.ts creatorAdmin). */
  async create(req: CreateKeyInput, principal: string, creatorAdmin = false): Promise<KeyRecord> {
    await this.#ready();
    validateName(req.name);
    const type = parseKeyType(req.type);
    validateDescription(req.description ?? '');
    validateLabels(req.labels ?? {});
    const policy = req.policy ? validatePolicy(req.policy) : {};
    const period = this.rotationPeriod(req.rotationPeriodSeconds);
    const id = `k_${pooledRandomBytes(16).toString('base64url')}`;
    const key = newKeyRecord({ id, name: req.name, type, description: req.description ?? '', labels: req.labels ?? {}, policy, periodSeconds: period }, principal, new Date(), creatorAdmin);
    const pending = this.#material.pending();
    try {
      // Created only if the name never was (names are never deleted), so a resent create cannot apply twice.
      const res = await this.#store.create(key, pending.make(key, 1));
      if (res.outcome !== 'applied') throw alreadyExists(`a key named ${key.name} already exists`);
      this.#cache.remember(key, res.revision);
      pending.keep();
      return key;
    } finally {
      pending.discard(); // unless kept
    }
  }

  /**
   * Applies `change` to the current record with a compare-and-swap on its etcd revision,
   * retrying on a concurrent update. The mod revision never matches again once the change
   * applied, so the store's resends after a lost answer apply it at most once, and find it
   * applied when they do; when they cannot tell, this fails rather than applying `change` to a
   * record that may already have it.
   */
  update(id: string, change: (k: KeyRecord) => KeyRecord): Promise<KeyRecord> {
    return this.#update(id, change, {});
  }

  /** update, writing the version `opts.version` makes of the changed record with it, fenced by `opts.fence`. */
  async #update(id: string, change: (k: KeyRecord) => KeyRecord, opts: { version?: (next: KeyRecord) => VersionRecord; fence?: Fence }): Promise<KeyRecord> {
    await this.#ready();
    // The first attempt starts from the cached record: its compare-and-swap on the cached mod
    // revision fails if etcd holds anything newer, and the attempts after read etcd. `change`
    // refusing the cached record (e.g. not due, wrong state) is judged again on the stored one.
    for (let attempt = 0; attempt < 5; attempt++) {
      const fromCache = attempt === 0 ? this.#cache.entry(id) : undefined;
      // Checked and kept in the cache: callers that give up on it (not due) act on what they saw.
      const stored = fromCache ?? (await this.#cache.readForUpdate(id));
      if (!stored) throw keyNotFound(id);
      const { record: cur, revision } = stored;
      let next: KeyRecord;
      try {
        next = change(cur);
      } catch (e) {
        if (fromCache) continue;
        throw e;
      }
      const tx = await this.#store.swap(id, revision, next, { version: opts.version?.(next), fence: opts.fence });
      if (tx.outcome === 'applied') {
        this.#cache.remember(next, tx.revision);
        return next;
      }
      if (tx.outcome === 'unknown') throw unavailable(`the change to key ${cur.name} may or may not have been applied; read the key before trying again`, { reason: 'OUTCOME_UNKNOWN', metadata: { key_id: id } });
      if (opts.fence && !(await opts.fence.held())) throw failedPrecondition('no longer the leader: write fenced off', { reason: 'NOT_LEADER' });
    }
    throw unavailable(`key ${id} is being changed concurrently; try again`, { reason: 'CONTENDED', metadata: { key_id: id } });
  }

  /** Keys whose scheduled rotation is due at `now` (from the cache the watch keeps current). */
  due(now: number): KeyRecord[] {
    return this.#cache.records().filter((k) => k.state === 'KEY_STATE_ENABLED' && rotationDue(k, now));
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
    const pending = this.#material.pending();
    const change = (cur: KeyRecord) => {
      if (opts.ifDueAt !== undefined && !rotationDue(cur, opts.ifDueAt)) throw NOT_DUE;
      if (opts.ifPrimary !== undefined && cur.primaryVersion !== opts.ifPrimary) throw NOT_DUE; // update cached the newer record
      if (cur.state !== 'KEY_STATE_ENABLED') throw keyStateRefusal(cur, `key ${cur.name} is not enabled`);
      return rotatedRecord(cur, new Date());
    };
    try {
      const updated = await this.#update(k.id, change, { version: (next) => pending.make(next, next.primaryVersion), fence: opts.fence });
      pending.keep();
      return updated;
    } catch (e) {
      if (e === NOT_DUE) return undefined;
      throw e;
    } finally {
      pending.discard(); // unless kept
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
    const stored = await this.#cache.readForUpdate(id);
    if (!stored) throw keyNotFound(id);
    const { record: cur, revision } = stored;
    if (cur.state !== 'KEY_STATE_PENDING_DESTRUCTION') throw keyStateRefusal(cur, `key ${cur.name} is not pending destruction`, 'WRONG_KEY_STATE');
    if (Date.parse(cur.destructionAt) > now) throw keyStateRefusal(cur, `key ${cur.name} may not be destroyed before ${cur.destructionAt}`, 'WAITING_PERIOD');
    const tombstone = tombstoneOf(cur);
    // A resend after a lost answer finds the tombstone exactly as written: applied, at its revision.
    const tx = await this.#store.destroy(id, revision, tombstone);
    if (tx.outcome !== 'applied')
      throw unavailable(`${tx.outcome === 'conflict' ? `key ${cur.name} changed during its destruction` : `the destruction of key ${cur.name} may or may not have been applied`}; the ceremony may be retried`, {
        reason: tx.outcome === 'conflict' ? 'CONTENDED' : 'OUTCOME_UNKNOWN',
      });
    this.#cache.remember(tombstone, tx.revision);
    return tx.revision;
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
    const { keys, more } = this.#cache.page(after, size);
    return { keys, next: more ? Buffer.from(keys[keys.length - 1]!.name).toString('base64url') : '' };
  }

  /** The unwrapped material of one version; throws "sealed" if sealed meanwhile. */
  material(k: KeyRecord, version: number): Promise<Buffer> {
    return this.#material.of(k, version);
  }

  // ---- aliases (key-aliases.ts) -------------------------------------------------------

  /**
   * Creates an alias (`from` undefined: it must not exist) or repoints one (`from`: the key id
   * it must still name — the caller authorised against that key).
   */
  async putAlias(alias: string, k: KeyRecord, from?: string): Promise<Alias> {
    await this.#ready();
    return this.#aliases.put(alias, k.id, from);
  }

  /** Deletes an alias if it still names `from` (the key the caller was authorised against). */
  async deleteAlias(alias: string, from: string): Promise<void> {
    await this.#ready();
    await this.#aliases.delete(alias, from);
  }

  async listAliases(ref?: string): Promise<Alias[]> {
    await this.#ready();
    return this.#aliases.list(ref ? (await this.resolve(ref)).id : undefined);
  }
}
