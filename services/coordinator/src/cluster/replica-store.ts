/**
 * Replica registrations in etcd: the one module that reads and writes `coordinators/<id>`.
 *
 * Each replica registers under its own lease: address, its long-term transport public key,
 * its current ephemeral X25519 key (the next ceremony naming it uses it; replaced when that
 * ceremony ends), a random per-process instance id, and whether it is sealed (with the seal
 * epoch it unsealed in). The entry vanishes with the lease when the process dies.
 *
 * Integrity (record-integrity.ts): a replica writes its registration while sealed at start (no
 * MAC possible) and again, with a MAC, once unsealed; an unsealed replica reading the list
 * counts a registration that says "unsealed" without a valid MAC as sealed (and reports it).
 *
 * A lost lease (etcd unreachable for twice its TTL, or expired by etcd) is granted again with
 * backoff (@keyshard/store/backoff): while etcd fails fast, a retry without a wait would spin.
 * Until then the replica is simply not registered: no ceremony names it.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from '@keyshard/config';
import { clusterNamespace, clusterPrefix, etcdCall, paths, type Etcd3, type Lease, type Namespace } from '@keyshard/store';
import { Backoff, retryWithBackoff } from '@keyshard/store/backoff';
import type { RecordIntegrity } from './record-integrity.ts';

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

/** What a replica says of itself; the store adds host, instance, start time and "sealed". */
export type OwnRegistration = Omit<Registration, 'host' | 'startedAt' | 'sealed' | 'sealEpoch' | 'instance'>;

export interface ReplicaStoreOptions {
  clusterName: string;
  ttlSeconds: number;
  integrity: RecordIntegrity;
  log: Logger;
}

export class ReplicaStore {
  readonly #etcd: Etcd3;
  readonly #ns: Namespace;
  readonly #opts: ReplicaStoreOptions;
  #me: Registration;
  #lease: Lease | undefined;
  #stopped = false;
  #stop = new AbortController();
  #backoff = new Backoff();

  constructor(etcd: Etcd3, me: OwnRegistration, opts: ReplicaStoreOptions) {
    this.#etcd = etcd;
    this.#ns = clusterNamespace(etcd, opts.clusterName);
    this.#opts = opts;
    this.#me = { ...me, host: hostname(), instance: randomUUID(), startedAt: new Date().toISOString(), sealed: true, sealEpoch: 0 };
  }

  /** This replica's registration as last published. */
  get mine(): Registration {
    return this.#me;
  }

  /** Registers this replica under a lease. Rejects if etcd refuses (the process then exits); a lease lost later is granted again. */
  async register(): Promise<void> {
    await etcdCall('register replica', () => this.#registerOnce());
  }

  /** Publishes a change of this replica's registration (held until the lease is granted again if it is lost). */
  async publish(change: Partial<Pick<Registration, 'sealed' | 'sealEpoch' | 'ephemeralPublicKeyPem'>>): Promise<void> {
    this.#me = { ...this.#me, ...change };
    await etcdCall('update registration', () => this.#put());
  }

  /**
   * Every registered replica. While this replica is unsealed, a registration that says it is
   * unsealed counts only with a valid record MAC; otherwise it is listed as sealed (and reported).
   */
  async list(): Promise<Registration[]> {
    const all = await etcdCall('list replicas', () => this.#ns.getAll().prefix(paths.coordinatorsPrefix).strings());
    const { integrity, log } = this.#opts;
    const checking = integrity.available;
    return Object.entries(all)
      .flatMap(([path, raw]) => {
        let parsed: Registration & { mac?: string };
        try {
          parsed = JSON.parse(raw) as Registration & { mac?: string };
        } catch {
          log.warn({ record: path.slice(0, 128) }, 'a replica registration is not JSON; ignored');
          return [];
        }
        const { mac: _mac, ...r } = parsed;
        if (r.sealed || !checking || integrity.check<Registration>(path, raw)) return [r];
        return [{ ...r, sealed: true }];
      })
      .sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** Ends any registration retry (an attempt in flight revokes its lease) and revokes the lease held: the registration vanishes. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stop.abort();
    await this.#lease?.revoke().catch(() => {});
  }

  /** Grants a lease and puts this replica's registration under it; a failed attempt leaves no lease behind. */
  async #registerOnce(): Promise<void> {
    const lease = this.#etcd.lease(this.#opts.ttlSeconds);
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
    // The registration changed while the lease was missing (publish could not put it).
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
    const { log } = this.#opts;
    log.warn('etcd registration lease lost; registering again');
    void retryWithBackoff(() => this.#registerOnce(), {
      backoff: this.#backoff,
      signal: this.#stop.signal,
      onFailure: (e, f) => log.warn({ err: (e as Error).message, failures: f.failures, retryInMs: Math.round(f.delayMs) }, 'registration failed; retrying with backoff'),
      onRecovered: (failures) => log.info({ failures }, 'registered again'),
    });
  }

  /** The registration's etcd key: a lease puts through the client, outside the cluster's namespace. */
  get #key(): string {
    return `${clusterPrefix(this.#opts.clusterName)}${paths.coordinator(this.#me.id)}`;
  }

  async #put(): Promise<void> {
    const lease = this.#lease;
    if (lease) await lease.put(this.#key).value(this.#body()).exec();
  }

  /** This replica's registration as stored: with a record MAC while unsealed. */
  #body(): string {
    const path = paths.coordinator(this.#me.id);
    return !this.#me.sealed && this.#opts.integrity.available ? this.#opts.integrity.stamp(path, this.#me) : JSON.stringify(this.#me);
  }
}
