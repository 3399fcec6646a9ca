/**
 * The coordinator replicas of a cluster (brief, "Ceremonies": one unseal ceremony unseals every
 * replica): who is registered (replica-store.ts), and the cluster seal. An unseal ceremony
 * names every registered sealed replica as a recipient.
 *
 * The cluster seal: `seal-epoch` (cluster-store.ts) counts cluster-wide seals. `Seal` on any
 * replica raises it and every replica, watching it, seals itself. A replica records the epoch
 * it unsealed in; a sealed replica asks to join (a join ceremony) only while some replica is
 * unsealed in the current epoch, so a replica that has just sealed never rejoins through a peer
 * that has not yet seen the seal.
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
 * Registrations say "unsealed" only with a valid MAC (replica-store.ts). Nothing that releases a
 * share trusts a registration alone: unseal recipients are bound by the custodian-signed
 * ceremony hash and shares go only to custodian-enrolled transport keys.
 */
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import { failedPrecondition } from '@keyshard/errors';
import type { ClusterStore } from './cluster-store.ts';
import type { RecordIntegrity } from './record-integrity.ts';
import type { Registration, ReplicaStore } from './replica-store.ts';
import type { Seal } from './seal.ts';

export interface ReplicasDeps {
  store: ReplicaStore;
  clusterStore: ClusterStore;
  integrity: RecordIntegrity;
  log: Logger;
  audit: AuditRecorder;
}

export class Replicas {
  #d: ReplicasDeps;
  #epoch = 0;
  #onClusterSeal: ((epoch: number) => void)[] = [];
  #unwatch: (() => Promise<void>) | undefined;

  constructor(deps: ReplicasDeps) {
    this.#d = deps;
  }

  get id(): string {
    return this.#d.store.mine.id;
  }

  /** The current cluster seal epoch (as last seen). */
  get epoch(): number {
    return this.#epoch;
  }

  /**
   * Follows the cluster seal epoch and registers under a lease. Rejects if etcd refuses the
   * first registration (the process then exits); a lease lost later is registered again.
   */
  async start(): Promise<void> {
    const { clusterStore, store } = this.#d;
    this.#unwatch = await clusterStore.watchSealEpoch((epoch, verified) => this.#sawEpoch(epoch, verified));
    this.#sawEpoch(await clusterStore.sealEpoch(), false); // sealed at start: nothing to verify with
    await store.register();
  }

  /** Publishes this replica's seal state as `seal` opens and seals (failures are logged). */
  followSeal(seal: Seal): void {
    const publish = (sealed: boolean) => void this.setSealed(sealed).catch((e: Error) => this.#d.log.warn({ err: e.message }, 'could not publish seal state'));
    seal.onOpen(() => publish(false));
    seal.onSeal(() => publish(true));
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

  /** Seals `seal` when another replica seals the cluster, and audits it; then `onSealed` (e.g. cancel this replica's unseal). */
  followClusterSeal(seal: Seal, onSealed: () => void): void {
    const { log, audit } = this.#d;
    this.onClusterSeal((epoch) => {
      if (seal.sealed) return;
      seal.seal();
      log.info({ sealEpoch: epoch }, 'sealed: the cluster was sealed');
      onSealed();
      void audit
        .record({ operation: 'cluster.seal_epoch.followed', principal: this.id, result: 'ok', details: { seal_epoch: String(epoch), replica: this.id } })
        .catch((e: Error) => log.error({ err: e.message, sealEpoch: epoch }, 'the seal could not be audited'));
    });
  }

  /** Publishes this replica's seal state. */
  async setSealed(sealed: boolean): Promise<void> {
    await this.#d.store.publish({ sealed, sealEpoch: sealed ? this.#d.store.mine.sealEpoch : this.#epoch });
  }

  /** Publishes this replica's new current ephemeral key (the last one's ceremony ended). */
  async setEphemeral(ephemeralPublicKeyPem: string): Promise<void> {
    await this.#d.store.publish({ ephemeralPublicKeyPem });
  }

  /**
   * Seals the whole cluster: `sealSelf` seals this replica at once, then the epoch every replica
   * watches is raised, MAC'd with a copy of the key taken before (zeroized after), and audited.
   * A sealed replica refuses if any replica says it is unsealed (see the header).
   */
  async sealCluster(sealSelf: () => void, principal: string): Promise<number> {
    const { integrity, clusterStore, audit, log } = this.#d;
    if (!integrity.available) {
      sealSelf();
      const unsealed = (await this.list()).filter((r) => !r.sealed && r.id !== this.id).map((r) => r.id);
      if (unsealed.length)
        throw failedPrecondition(`this replica is sealed and cannot sign a cluster seal (the seal-epoch record carries a MAC only an unsealed replica can make): run the seal against an unsealed replica (${unsealed.join(', ')})`, { reason: 'SEALED' });
      return this.#epoch; // every replica is sealed already
    }
    const stamper = integrity.detachedStamper();
    let next: number;
    try {
      sealSelf();
      next = await clusterStore.raiseSealEpoch(this.#epoch, stamper);
    } finally {
      stamper.close();
    }
    this.#sawEpoch(next, true);
    // Sealing is never held back by the audit: the seal has happened; a lost record is logged.
    await audit
      .record({ operation: 'cluster.seal_epoch.raised', principal, result: 'ok', details: { seal_epoch: String(next), replica: this.id } })
      .catch((e: Error) => log.error({ err: e.message, sealEpoch: next }, 'the seal-epoch rise could not be audited'));
    return next;
  }

  /** Every registered replica; one that says "unsealed" without a valid MAC is listed as sealed (replica-store.ts). */
  async list(): Promise<Registration[]> {
    return this.#d.store.list();
  }

  /** `<id>/<instance>` of a registered replica process (the instance id changes per process). */
  static driverOf(r: { id: string; instance?: string }): string {
    return `${r.id}/${r.instance ?? ''}`;
  }

  get self(): string {
    return Replicas.driverOf(this.#d.store.mine);
  }

  /** Whether the replica process `driver` (driverOf) is still registered. */
  async alive(driver: string): Promise<boolean> {
    return (await this.list()).some((r) => Replicas.driverOf(r) === driver);
  }

  /** Whether some replica is unsealed in the current epoch (so this one may ask to join). */
  async peerUnsealed(): Promise<boolean> {
    return (await this.list()).some((r) => r.id !== this.id && !r.sealed && r.sealEpoch === this.#epoch);
  }

  /** Stops following the seal epoch, ends any registration retry and revokes the registration's lease. */
  async stop(): Promise<void> {
    await this.#unwatch?.().catch(() => {});
    await this.#d.store.stop();
  }
}
