/**
 * Coordinator replicas in etcd (brief, "Ceremonies": one unseal ceremony unseals every replica).
 *
 * Each replica registers `coordinators/<id>` under its own lease: address, its long-term
 * transport public key, its current ephemeral X25519 key (the next ceremony naming it uses it;
 * replaced when that ceremony ends), a random per-process instance id, and whether it is sealed. The entry vanishes with the lease when the
 * process dies. An unseal ceremony names every registered sealed replica as a recipient.
 *
 * The cluster seal: `seal-epoch` counts cluster-wide seals. `Seal` on any replica raises it and
 * every replica, watching it, seals itself. A replica records the epoch it unsealed in; a
 * sealed replica asks to join (a join ceremony) only while some replica is unsealed in the
 * current epoch, so a replica that has just sealed never rejoins through a peer that has
 * not yet seen the seal.
 *
 * Integrity (record-integrity.ts). The seal-epoch record is `{epoch, mac}`, MAC'd by the unsealed
 * replica that raises it: it takes a copy of the record MAC key, seals itself at once, then
 * raises the epoch. An unsealed replica that sees the epoch rise seals only if the record
 * verifies; one that fails is ignored for sealing (this replica stays unsealed, its epoch
 * unchanged), and reported (log, metric, audit, alert): one etcd put cannot seal the cluster.
 * A sealed replica cannot MAC: asked to seal the cluster, it refuses (naming the replicas that
 * say they are unsealed) unless none does, when the cluster is sealed already and nothing is
 * written. A sealed replica cannot verify either: it follows the epoch unchecked, which only
 * decides when it asks to join (and a join needs a vouch from an unsealed peer).
 * Registrations: a replica writes its registration while sealed at start (no MAC possible) and
 * again, with a MAC, once unsealed; an unsealed replica reading the list counts a registration
 * that says "unsealed" without a valid MAC as sealed (and reports it). Nothing that releases a
 * share trusts a registration alone: unseal recipients are bound by the custodian-signed
 * ceremony hash and shares go only to custodian-enrolled transport keys.
 *
 * A lost registration lease (etcd unreachable for twice its TTL, or expired by etcd) is granted
 * again with backoff (@keyshard/store/backoff): while etcd fails fast, a retry without a wait
 * would spin. Until then the replica is simply not registered: no ceremony names it.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Etcd3, Lease } from 'etcd3';
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import { failedPrecondition } from '@keyshard/errors';
import { clusterPrefix, etcdCall, paths, type Namespace } from '@keyshard/store';
import type { RecordIntegrity } from './record-integrity.ts';
import { Backoff, retryWithBackoff } from '@keyshard/store/backoff';

export interface Registration {
  id: string;
  address: string;
  host: string;
  /** The coordinator's transport public key (SPKI PEM; transport-key.ts). */
  publicKeyPem: string;
  /** The replica's current per-ceremony X25519 key (SPKI PEM). */
  ephemeralPublicKeyPem: string;
  /** Random per process: tells a restarted replica (same transport key) from the one before. */
  instance: string;
  startedAt: string;
  sealed: boolean;
  /** The seal epoch this replica unsealed in (meaningful while !sealed). */
  sealEpoch: number;
}

export class Replicas {
  #etcd: Etcd3;
  #ns: Namespace;
  #cluster: string;
  #ttl: number;
  #log: Logger;
  #lease: Lease | undefined;
  #me: Registration;
  #epoch = 0;
  #onClusterSeal: ((epoch: number) => void)[] = [];
  #stopped = false;
  #stop = new AbortController();
  #backoff = new Backoff();
  #integrity: RecordIntegrity;
  #audit: AuditRecorder;

  constructor(
    etcd: Etcd3, ns: Namespace, cluster: string, me: Omit<Registration, 'host' | 'startedAt' | 'sealed' | 'sealEpoch' | 'instance'>, ttlSeconds: number, log: Logger,
    integrity: RecordIntegrity, audit: AuditRecorder,
  ) {
    this.#etcd = etcd;
    this.#ns = ns;
    this.#cluster = cluster;
    this.#ttl = ttlSeconds;
    this.#log = log;
    this.#integrity = integrity;
    this.#audit = audit;
    this.#me = { ...me, host: hostname(), instance: randomUUID(), startedAt: new Date().toISOString(), sealed: true, sealEpoch: 0 };
  }

  get id(): string {
    return this.#me.id;
  }

  /** The current cluster seal epoch (as last seen). */
  get epoch(): number {
    return this.#epoch;
  }

  /**
   * Registers under a lease and follows the cluster seal epoch. Rejects if etcd refuses the
   * first registration (the process then exits); a lease lost later is registered again.
   */
  async start(): Promise<void> {
    const watcher = await etcdCall('watch seal epoch', () => this.#ns.watch().key(paths.sealEpoch).create());
    watcher.on('put', (kv) => this.#epochChanged(kv.value.toString()));
    const raw = await etcdCall('read seal epoch', () => this.#ns.get(paths.sealEpoch).string());
    this.#sawEpoch(raw === null ? 0 : uncheckedEpoch(raw), false); // sealed at start: nothing to verify with
    await etcdCall('register replica', () => this.#registerOnce());
  }

  /** Grants a lease and puts this replica's registration under it; a failed attempt leaves no lease behind. */
  async #registerOnce(): Promise<void> {
    const lease = this.#etcd.lease(this.#ttl);
    const registration = JSON.stringify(this.#me);
    try {
      await lease.put(this.#key).value(this.#body()).exec();
    } catch (e) {
      void lease.revoke().catch(() => {});
      throw e;
    }
    if (this.#stopped) {
      void lease.revoke().catch(() => {});
      return;
    }
    this.#lease = lease;
    lease.on('lost', () => this.#lost(lease));
    if (lease.revoked()) return this.#lost(lease); // lost before the listener was on
    // The seal state changed while the lease was missing (setSealed could not publish it).
    if (JSON.stringify(this.#me) !== registration) await this.#put().catch(() => {});
  }

  /**
   * The lease is gone (its keepalive failed for 2 × TTL, or etcd expired it): registers again,
   * with backoff. One loop at a time: only the current lease's loss starts one, and there is
   * no current lease until that loop succeeds.
   */
  #lost(lease: Lease): void {
    if (this.#stopped || this.#lease !== lease) return; // a lease reports its loss more than once
    this.#lease = undefined;
    this.#log.warn('etcd registration lease lost; registering again');
    void retryWithBackoff(() => this.#registerOnce(), {
      backoff: this.#backoff,
      signal: this.#stop.signal,
      onFailure: (e, f) =>
        this.#log.warn({ err: (e as Error).message, failures: f.failures, retryInMs: Math.round(f.delayMs) }, 'registration failed; retrying with backoff'),
      onRecovered: (failures) => this.#log.info({ failures }, 'registered again'),
    });
  }

  get #key(): string {
    return `${clusterPrefix(this.#cluster)}${paths.coordinator(this.#me.id)}`;
  }

  async #put(): Promise<void> {
    const lease = this.#lease;
    if (lease) await lease.put(this.#key).value(this.#body()).exec();
  }

  /** This replica's registration as stored: with a record MAC while unsealed. */
  #body(): string {
    const path = paths.coordinator(this.#me.id);
    return !this.#me.sealed && this.#integrity.available ? this.#integrity.stamp(path, this.#me) : JSON.stringify(this.#me);
  }

  /**
   * The seal-epoch record changed. Unsealed, this replica acts on it (seals) only if it
   * verifies; sealed, it has nothing to seal and no key to verify with, and follows it unchecked.
   */
  #epochChanged(raw: string): void {
    if (!this.#integrity.available) return this.#sawEpoch(uncheckedEpoch(raw), false);
    const r = this.#integrity.check<{ epoch: number }>(paths.sealEpoch, raw);
    if (!r) return; // reported; never seals
    if (!isEpoch(r.epoch)) return void this.#integrity.refuse(paths.sealEpoch, 'not an epoch', raw);
    this.#sawEpoch(r.epoch, true);
  }

  #sawEpoch(epoch: number, notify: boolean): void {
    if (!(epoch > this.#epoch)) return;
    this.#epoch = epoch;
    if (notify) for (const l of this.#onClusterSeal) l(epoch);
  }

  /** Called when another replica (or this one) sealed the whole cluster (a verified epoch rise). */
  onClusterSeal(listener: (epoch: number) => void): void {
    this.#onClusterSeal.push(listener);
  }

  /** Publishes this replica's seal state. */
  async setSealed(sealed: boolean): Promise<void> {
    this.#me = { ...this.#me, sealed, sealEpoch: sealed ? this.#me.sealEpoch : this.#epoch };
    await etcdCall('update registration', () => this.#put());
  }

  /** Publishes this replica's new current ephemeral key (the last one's ceremony ended). */
  async setEphemeral(ephemeralPublicKeyPem: string): Promise<void> {
    this.#me = { ...this.#me, ephemeralPublicKeyPem };
    await etcdCall('update registration', () => this.#put());
  }

  /**
   * Seals the whole cluster: `sealSelf` seals this replica at once, then the epoch every replica
   * watches is raised, MAC'd with a copy of the key taken before (zeroized after), and audited.
   * A sealed replica refuses if any replica says it is unsealed (see the header).
   */
  async sealCluster(sealSelf: () => void, principal: string): Promise<number> {
    if (!this.#integrity.available) {
      sealSelf();
      const unsealed = (await this.list()).filter((r) => !r.sealed && r.id !== this.#me.id).map((r) => r.id);
      if (unsealed.length)
        throw failedPrecondition(`this replica is sealed and cannot sign a cluster seal (the seal-epoch record carries a MAC only an unsealed replica can make): run the seal against an unsealed replica (${unsealed.join(', ')})`);
      return this.#epoch; // every replica is sealed already
    }
    const stamper = this.#integrity.detachedStamper();
    try {
      sealSelf();
      for (let attempt = 0; attempt < 10; attempt++) {
        const res = await etcdCall('read seal epoch', () => this.#ns.get(paths.sealEpoch).exec());
        const kv = res.kvs[0];
        // The stored value is not trusted, only raised: an altered one at worst makes the epoch jump.
        const next = Math.max(kv ? uncheckedEpoch(kv.value.toString()) : 0, this.#epoch) + 1;
        const body = stamper.stamp(paths.sealEpoch, { epoch: next });
        const tx = await etcdCall('raise seal epoch', () =>
          (kv ? this.#ns.if(paths.sealEpoch, 'Mod', '==', kv.mod_revision) : this.#ns.if(paths.sealEpoch, 'Create', '==', 0))
            .then(this.#ns.put(paths.sealEpoch).value(body))
            .commit(),
        );
        if (tx.succeeded) {
          this.#sawEpoch(next, true);
          // Sealing is never held back by the audit: the seal has happened; a lost record is logged.
          await this.#audit
            .record({ operation: 'cluster.seal_epoch.raised', principal, result: 'ok', details: { seal_epoch: String(next), replica: this.#me.id } })
            .catch((e: Error) => this.#log.error({ err: e.message, sealEpoch: next }, 'the seal-epoch rise could not be audited'));
          return next;
        }
      }
      throw new Error('seal epoch contended');
    } finally {
      stamper.close();
    }
  }

  /**
   * Every registered replica. While this replica is unsealed, a registration that says it is
   * unsealed counts only with a valid record MAC; otherwise it is listed as sealed (and reported).
   */
  async list(): Promise<Registration[]> {
    const all = await etcdCall('list replicas', () => this.#ns.getAll().prefix(paths.coordinatorsPrefix).strings());
    const checking = this.#integrity.available;
    return Object.entries(all)
      .flatMap(([path, raw]) => {
        let parsed: Registration & { mac?: string };
        try {
          parsed = JSON.parse(raw) as Registration & { mac?: string };
        } catch {
          this.#log.warn({ record: path.slice(0, 128) }, 'a replica registration is not JSON; ignored');
          return [];
        }
        const { mac: _mac, ...r } = parsed;
        if (r.sealed || !checking || this.#integrity.check<Registration>(path, raw)) return [r];
        return [{ ...r, sealed: true }];
      })
      .sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** `<id>/<instance>` of a registered replica process (the instance id changes per process). */
  static driverOf(r: { id: string; instance?: string }): string {
    return `${r.id}/${r.instance ?? ''}`;
  }

  get self(): string {
    return Replicas.driverOf(this.#me);
  }

  /** Whether the replica process `driver` (driverOf) is still registered. */
  async alive(driver: string): Promise<boolean> {
    return (await this.list()).some((r) => Replicas.driverOf(r) === driver);
  }

  /** Whether some replica is unsealed in the current epoch (so this one may ask to join). */
  async peerUnsealed(): Promise<boolean> {
    return (await this.list()).some((r) => r.id !== this.#me.id && !r.sealed && r.sealEpoch === this.#epoch);
  }

  /** Ends any registration retry (an attempt in flight revokes its lease) and revokes the lease held. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stop.abort();
    await this.#lease?.revoke().catch(() => {});
  }
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
