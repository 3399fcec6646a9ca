/**
 * The cluster aggregate in etcd: the one module that reads and writes its records.
 *
 *   cluster          ClusterRecord. No MAC: at unseal its id must equal the MAC'd manifest's
 *                    and its KEK epoch must unwrap (cluster.ts openSeal)
 *   manifest         ShareManifest, with its own MAC under a root subkey (share-manifest.ts)
 *   keks/<epoch>     KekRecord: a KEK wrapped under the root (AES-GCM, AAD = cluster id | epoch)
 *   keks/record-mac  RecordMacKeyRecord: the record MAC key wrapped under the root (its own AAD)
 *   share-set-next   {generation, mac}: the share generation a reshare / rotate-root reserves
 *   seal-epoch       {epoch, mac}: cluster-wide seals so far (replicas.ts follows it)
 *   share-exports/<ceremony id>  ShareExportRecord, with a record MAC (share-recovery.ts)
 *
 * Writes that must not lose a race are compare-and-swaps: init's claim and commit create only
 * what is absent, a share-set switch applies only to the manifest read before it, a seal-epoch
 * rise only to the revision it read. MAC'd records are read through RecordIntegrity: one that
 * fails is refused and reported (record-integrity.ts), never used. destroy-cluster's `erase`
 * deletes every durable record of the cluster, of every aggregate, in one transaction.
 */
import { unwrapKek, unwrapRecordMacKey, wrapKek, wrapRecordMacKey, type ShareManifest } from '@keyshard/crypto';
import { KeyshardError } from '@keyshard/errors';
import { BACKUP_PREFIXES, deletionOf, deletionsExcept, etcdCall, getJson, paths, type Namespace } from '@keyshard/store';
import type { RecordIntegrity } from './record-integrity.ts';
import { boundToken, settle, type InitOutcome } from '../keys/request-tokens.ts';

export interface ClusterRecord {
  clusterId: string;
  /** `restoring`: a restore (restore.ts) holds the empty cluster while it writes the backup's state. */
  state: 'initializing' | 'initialized' | 'restoring';
  kekEpoch: number;
  createdAt: string;
  /**
   * `initializing`: the replica process (`<id>/<instance>`, replicas.ts driverOf) running the
   * init, while it runs; another init waits for it, or takes over once that process is gone.
   */
  driver?: string;
}

/** keks/<epoch>: one KEK, wrapped under the root key (key-hierarchy.ts). */
export interface KekRecord {
  epoch: number;
  /** base64 */
  wrapped: string;
}

/** keks/record-mac: the record MAC key, wrapped under the root key (key-hierarchy.ts). */
export interface RecordMacKeyRecord {
  /** base64 */
  wrapped: string;
}

/** Every wrapped key of the cluster: what the root key unlocks at unseal. */
export interface WrappedKeys {
  keks: KekRecord[];
  recordMacKey: RecordMacKeyRecord | undefined;
}

/** share-exports/<ceremony id>: a custodian's share wrapped to an offline recovery key. */
export interface ShareExportRecord {
  ceremony_id: string;
  cluster_id: string;
  custodian_id: string;
  generation: number;
  peers_json: string;
  wrapped_share: string; // base64
  recovery_key_fingerprint: string;
  oaep_hash: string;
  succession_statement: string; // base64
}

export const kekRecord = (root: Buffer, clusterId: string, epoch: number, kek: Buffer): KekRecord => ({
  epoch,
  wrapped: wrapKek(root, clusterId, epoch, kek).toString('base64'),
});

export const unwrapKekRecord = (root: Buffer, clusterId: string, r: KekRecord): Buffer => unwrapKek(root, clusterId, r.epoch, Buffer.from(r.wrapped, 'base64'));

export const recordMacKeyRecord = (root: Buffer, clusterId: string, key: Buffer): RecordMacKeyRecord => ({
  wrapped: wrapRecordMacKey(root, clusterId, key).toString('base64'),
});

export const unwrapRecordMacKeyRecord = (root: Buffer, clusterId: string, r: RecordMacKeyRecord): Buffer =>
  unwrapRecordMacKey(root, clusterId, Buffer.from(r.wrapped, 'base64'));

/** What makes records MAC'd by a replica that may seal meanwhile (RecordIntegrity.detachedStamper). */
export interface Stamper {
  stamp(path: string, record: object): string;
}

/**
 * Seal epochs stay far below 2^53: an epoch read unchecked (an altered record) can then raise
 * the next one at most to MAX_EPOCH + 1, which every replica still takes as a number and obeys.
 */
const MAX_EPOCH = 2 ** 40;
const isEpoch = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 && n <= MAX_EPOCH + 1;

/** The epoch a seal-epoch record states, unchecked: `{epoch, mac}` or a bare number (0 if neither, or if implausibly large). */
function uncheckedEpoch(raw: string): number {
  try {
    const v = JSON.parse(raw) as unknown;
    const n = typeof v === 'number' ? v : (v as { epoch?: unknown } | null)?.epoch;
    return isEpoch(n) && n <= MAX_EPOCH ? n : 0;
  } catch {
    return 0;
  }
}

export class ClusterStore {
  constructor(
    private readonly ns: Namespace,
    private readonly integrity: RecordIntegrity,
  ) {}

  /** The cluster record and the share manifest, as stored (either may be absent). */
  async load(): Promise<{ record: ClusterRecord | undefined; manifest: ShareManifest | undefined }> {
    const record = await getJson<ClusterRecord>(this.ns, paths.cluster);
    const manifest = await getJson<ShareManifest>(this.ns, paths.manifest);
    return { record, manifest };
  }

  /**
   * Calls `listener` whenever the cluster record is written or deleted, and when the watch
   * (re)connects (a change may have been missed meanwhile). Returns what stops it.
   */
  async watchRecord(listener: () => void): Promise<() => Promise<void>> {
    const watcher = await etcdCall('watch cluster record', () => this.ns.watch().key(paths.cluster).create());
    watcher.on('put', listener).on('delete', listener).on('connected', listener);
    return () => watcher.cancel();
  }

  /** The stored share manifest, with the revision a later `switchShareSet` compares against. */
  async manifest(): Promise<{ manifest: ShareManifest | undefined; revision: string | undefined }> {
    const kv = (await etcdCall('read manifest', () => this.ns.get(paths.manifest).exec())).kvs[0];
    return { manifest: kv && (JSON.parse(kv.value.toString()) as ShareManifest), revision: kv?.mod_revision };
  }

  /**
   * Writes `record` as the cluster record only if there is none (init's claim), or, given
   * `replacing`, only if the stored one is still exactly that (an init taking over or leaving
   * its claim); whether it did.
   */
  async claim(record: ClusterRecord, replacing?: ClusterRecord): Promise<boolean> {
    const res = await etcdCall('init claim', () =>
      (replacing ? this.ns.if(paths.cluster, 'Value', '==', JSON.stringify(replacing)) : this.ns.if(paths.cluster, 'Create', '==', 0))
        .then(this.ns.put(paths.cluster).value(JSON.stringify(record)))
        .commit(),
    );
    return res.succeeded;
  }

  /**
   * Init's commit: manifest, first KEK, record MAC key and cluster record at once, only if no
   * manifest exists; the running call's request token, if any, is recorded with `outcome` in the
   * same transaction (keys/request-tokens.ts; unMAC'd: the cluster is sealed).
   */
  async commitInit(init: { manifest: ShareManifest; kek: KekRecord; recordMacKey: RecordMacKeyRecord; record: ClusterRecord }, outcome?: InitOutcome): Promise<boolean> {
    const t = outcome ? boundToken() : undefined;
    const token = outcome && t?.put({ init: outcome }, this.integrity);
    const res = await etcdCall('init commit', () => {
      const cmp = this.ns.if(paths.manifest, 'Create', '==', 0);
      if (t) cmp.and(t.path, 'Create', '==', 0);
      return cmp
        .then(
          this.ns.put(paths.manifest).value(JSON.stringify(init.manifest)),
          this.ns.put(paths.kek(init.kek.epoch)).value(JSON.stringify(init.kek)),
          this.ns.put(paths.recordMacKey).value(JSON.stringify(init.recordMacKey)),
          this.ns.put(paths.cluster).value(JSON.stringify(init.record)),
          ...(token ? [this.ns.put(token[0]).value(token[1])] : []),
        )
        .commit();
    });
    await settle(this.ns, t, res.succeeded);
    return res.succeeded;
  }

  /** Every KEK record (each must sit at its own epoch's path) and the record MAC key record. */
  async wrappedKeys(): Promise<WrappedKeys> {
    const all = await etcdCall('load KEKs', () => this.ns.getAll().prefix(paths.keksPrefix).strings());
    const keys: WrappedKeys = { keks: [], recordMacKey: undefined };
    for (const [key, raw] of Object.entries(all)) {
      if (key === paths.recordMacKey) {
        keys.recordMacKey = JSON.parse(raw) as RecordMacKeyRecord;
        continue;
      }
      const kek = JSON.parse(raw) as KekRecord;
      if (key !== paths.kek(kek.epoch)) throw new KeyshardError('INTERNAL', `${key} holds the KEK of epoch ${kek.epoch}`);
      keys.keks.push(kek);
    }
    return keys;
  }

  /**
   * The new share manifest (and, after a root rotation, every KEK and the record MAC key
   * re-wrapped under the new root) in one transaction, only if the manifest is still the one
   * read at `revision` (none: still absent). Whether it applied.
   */
  async switchShareSet(manifest: ShareManifest, revision: string | undefined, rewrapped?: { keks: KekRecord[]; recordMacKey: RecordMacKeyRecord }): Promise<boolean> {
    const puts = rewrapped
      ? [...rewrapped.keks.map((k) => [paths.kek(k.epoch), JSON.stringify(k)] as const), [paths.recordMacKey, JSON.stringify(rewrapped.recordMacKey)] as const]
      : [];
    const res = await etcdCall('switch share set', () =>
      this.#unchanged(paths.manifest, revision)
        .then(this.ns.put(paths.manifest).value(JSON.stringify(manifest)), ...puts.map(([k, v]) => this.ns.put(k).value(v)))
        .commit(),
    );
    return res.succeeded;
  }

  /** Records, MAC'd, that share generation `generation` is being made (never to be reused). */
  async reserveShareSet(generation: number): Promise<void> {
    const body = this.integrity.stamp(paths.shareSetNext, { generation });
    await etcdCall('reserve share set', () => this.ns.put(paths.shareSetNext).value(body).exec());
  }

  /** The generation `share-set-next` reserves (0 if none), its MAC checked. */
  async reservedGeneration(): Promise<number> {
    const raw = await etcdCall('read share-set reservation', () => this.ns.get(paths.shareSetNext).string());
    if (raw === null) return 0;
    const { generation } = this.integrity.open<{ generation: number }>(paths.shareSetNext, raw);
    if (!Number.isInteger(generation) || generation < 0) throw this.integrity.refuse(paths.shareSetNext, 'not a generation', raw);
    return generation;
  }

  /** The seal epoch as stored, unchecked (what a sealed replica, which has no key, follows). */
  async sealEpoch(): Promise<number> {
    const raw = await etcdCall('read seal epoch', () => this.ns.get(paths.sealEpoch).string());
    return raw === null ? 0 : uncheckedEpoch(raw);
  }

  /**
   * Calls `listener` with every seal epoch written from now on: `verified` (its MAC checked)
   * while this replica is unsealed; unchecked while it is sealed (no key). An unsealed replica
   * never hears of a record that fails its check (refused and reported). Returns what stops it.
   */
  async watchSealEpoch(listener: (epoch: number, verified: boolean) => void): Promise<() => Promise<void>> {
    const watcher = await etcdCall('watch seal epoch', () => this.ns.watch().key(paths.sealEpoch).create());
    watcher.on('put', (kv) => {
      const raw = kv.value.toString();
      if (!this.integrity.available) return listener(uncheckedEpoch(raw), false);
      const r = this.integrity.check<{ epoch: number }>(paths.sealEpoch, raw);
      if (!r) return; // reported; never seals
      if (!isEpoch(r.epoch)) return void this.integrity.refuse(paths.sealEpoch, 'not an epoch', raw);
      listener(r.epoch, true);
    });
    return () => watcher.cancel();
  }

  /**
   * Raises the seal epoch above the stored one and `seen` (compare-and-swap on the revision
   * read), MAC'd by `stamper`: the caller has sealed itself and holds a detached copy of the key.
   */
  async raiseSealEpoch(seen: number, stamper: Stamper): Promise<number> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const kv = (await etcdCall('read seal epoch', () => this.ns.get(paths.sealEpoch).exec())).kvs[0];
      // The stored value is not trusted, only raised: an altered one at worst makes the epoch jump.
      const next = Math.max(kv ? uncheckedEpoch(kv.value.toString()) : 0, seen) + 1;
      const body = stamper.stamp(paths.sealEpoch, { epoch: next });
      const tx = await etcdCall('raise seal epoch', () => this.#unchanged(paths.sealEpoch, kv?.mod_revision).then(this.ns.put(paths.sealEpoch).value(body)).commit());
      if (tx.succeeded) return next;
    }
    throw new Error('seal epoch contended');
  }

  /** Stores an export-share ceremony's result under a record MAC. */
  async putShareExport(record: ShareExportRecord): Promise<void> {
    const path = paths.shareExport(record.ceremony_id);
    const body = this.integrity.stamp(path, record);
    await etcdCall('put share export', () => this.ns.put(path).value(body).exec());
  }

  /** The share export of ceremony `ceremonyId`, its MAC checked; a sealed replica cannot check, so refuses. */
  async shareExport(ceremonyId: string): Promise<ShareExportRecord | undefined> {
    this.integrity.requireAvailable();
    const path = paths.shareExport(ceremonyId);
    const raw = await etcdCall(`get ${path}`, () => this.ns.get(path).string());
    return raw === null ? undefined : this.integrity.open<ShareExportRecord>(path, raw);
  }

  /**
   * destroy-cluster's erasure, in one transaction while a cluster record exists: every durable
   * record (BACKUP_PREFIXES), the request tokens (they hold key records), the ceremony locks, `share-set-next` and every ceremony record but
   * `keep`'s (the destroy-cluster ceremony's epitaph, still followed by whoever waits for it).
   * Left: the replicas' lease-bound registrations and election, and the seal epoch they compare
   * against. Returns the revision to compact at.
   */
  async erase(keep: string): Promise<string> {
    // The ceremonies but the kept one as two ranges: one delete per ceremony exceeded etcd's 128
    // operations per transaction once a cluster had held ~120 ceremonies.
    const erased = [...BACKUP_PREFIXES, paths.requestTokensPrefix, paths.ceremonyLocksPrefix, paths.shareSetNext];
    const res = await etcdCall('erase cluster state', () =>
      this.ns
        .if(paths.cluster, 'Create', '>', 0)
        .then(
          ...erased.map((p) => deletionOf(this.ns, p)),
          ...deletionsExcept(this.ns, paths.ceremoniesPrefix, paths.ceremony(keep)),
        )
        .commit(),
    );
    return res.header.revision;
  }

  /** A linearizable read of the cluster record within `timeoutMs`: it needs etcd's leader and a quorum (EtcdReachability's probe). */
  async probe(timeoutMs: number): Promise<void> {
    await this.ns.get(paths.cluster).options({ deadline: Date.now() + timeoutMs }).exec();
  }

  /** A compare that holds while `key` is unchanged since `modRevision` (absent: while it does not exist). */
  #unchanged(key: string, modRevision: string | undefined) {
    return modRevision ? this.ns.if(key, 'Mod', '==', modRevision) : this.ns.if(key, 'Create', '==', 0);
  }
}
