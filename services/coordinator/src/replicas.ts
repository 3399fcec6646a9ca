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
 * A lost registration lease (etcd unreachable for twice its TTL, or expired by etcd) is granted
 * again with backoff (@keyshard/store/backoff): while etcd fails fast, a retry without a wait
 * would spin. Until then the replica is simply not registered: no ceremony names it.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Etcd3, Lease } from 'etcd3';
import type { Logger } from '@keyshard/config';
import { clusterPrefix, etcdCall, paths, type Namespace } from '@keyshard/store';
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
  #onClusterSeal: (() => void)[] = [];
  #stopped = false;
  #stop = new AbortController();
  #backoff = new Backoff();

  constructor(etcd: Etcd3, ns: Namespace, cluster: string, me: Omit<Registration, 'host' | 'startedAt' | 'sealed' | 'sealEpoch' | 'instance'>, ttlSeconds: number, log: Logger) {
    this.#etcd = etcd;
    this.#ns = ns;
    this.#cluster = cluster;
    this.#ttl = ttlSeconds;
    this.#log = log;
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
    watcher.on('put', (kv) => this.#sawEpoch(Number(kv.value.toString()), true));
    this.#sawEpoch(Number((await etcdCall('read seal epoch', () => this.#ns.get(paths.sealEpoch).string())) ?? 0), false);
    await etcdCall('register replica', () => this.#registerOnce());
  }

  /** Grants a lease and puts this replica's registration under it; a failed attempt leaves no lease behind. */
  async #registerOnce(): Promise<void> {
    const lease = this.#etcd.lease(this.#ttl);
    const registration = JSON.stringify(this.#me);
    try {
      await lease.put(this.#key).value(registration).exec();
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
    if (lease) await lease.put(this.#key).value(JSON.stringify(this.#me)).exec();
  }

  #sawEpoch(epoch: number, notify: boolean): void {
    if (!(epoch > this.#epoch)) return;
    this.#epoch = epoch;
    if (notify) for (const l of this.#onClusterSeal) l();
  }

  /** Called when another replica (or this one) sealed the whole cluster. */
  onClusterSeal(listener: () => void): void {
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

  /** Seals the whole cluster: raises the epoch every replica watches. */
  async sealCluster(): Promise<number> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const res = await etcdCall('read seal epoch', () => this.#ns.get(paths.sealEpoch).exec());
      const kv = res.kvs[0];
      const next = Number(kv?.value.toString() ?? 0) + 1;
      const tx = await etcdCall('raise seal epoch', () =>
        (kv ? this.#ns.if(paths.sealEpoch, 'Mod', '==', kv.mod_revision) : this.#ns.if(paths.sealEpoch, 'Create', '==', 0))
          .then(this.#ns.put(paths.sealEpoch).value(String(next)))
          .commit(),
      );
      if (tx.succeeded) {
        this.#sawEpoch(next, true);
        return next;
      }
    }
    throw new Error('seal epoch contended');
  }

  /** Every registered replica. */
  async list(): Promise<Registration[]> {
    const all = await etcdCall('list replicas', () => this.#ns.getAll().prefix(paths.coordinatorsPrefix).strings());
    return Object.values(all)
      .map((v) => JSON.parse(v) as Registration)
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
