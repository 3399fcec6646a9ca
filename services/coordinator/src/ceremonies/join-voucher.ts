/**
 * Vouching for joins (brief, "Ceremonies"; packages/crypto/src/join-vouch.ts for the format).
 *
 * A replica that restarts is sealed; it asks the custodians to release their shares to it in
 * a join ceremony. Custodians under joinPolicy `auto` release only on a vouch signed with the
 * root's join-vouch key — something only an unsealed replica can make. This module is the
 * unsealed side: it sees each open join ceremony in etcd and vouches for it when
 *   - this replica is unsealed, in the current seal epoch, and its root is the current one
 *     (`Cluster.currentRoot` checks the manifest's key check value);
 *   - the ceremony passes the checks a custodian makes (hash, cluster, real times, a join's
 *     15-minute lifetime, unexpired), is for the current share set, and names exactly one
 *     recipient: the replica that initiated it;
 *   - that replica is registered, sealed, and registered with the very transport key (and
 *     per-ceremony ephemeral key) the ceremony names (the custodians also wrap only to transport keys their security
 *     officers enrolled, so a key planted in etcd gets nothing).
 * Otherwise it refuses, audited. The vouch (and its refusal) is audited before it is written;
 * the joiner reads it from `join-vouches/<ceremony>/<voucher>`.
 */
import { checkCeremonyForCustodian, signVouch, zeroize, type Ceremony } from '@keyshard/crypto';
import { KeyshardError } from '@keyshard/errors';
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import type { Cluster } from '../cluster/cluster.ts';
import type { Seal } from '../cluster/seal.ts';
import type { CeremonyStore, StoredVouch } from './ceremony-store.ts';

/** What the voucher needs of the replica directory (replicas.ts). */
export interface VoucherReplicas {
  readonly id: string;
  readonly epoch: number;
  list(): Promise<{ id: string; publicKeyPem: string; ephemeralPublicKeyPem?: string; sealed: boolean; sealEpoch: number }[]>;
}

export interface JoinVoucherDeps {
  store: CeremonyStore;
  cluster: Cluster;
  seal: Seal;
  replicas: VoucherReplicas;
  audit: AuditRecorder;
  log: Logger;
}

export class JoinVoucher {
  #d: JoinVoucherDeps;
  #seen = new Set<string>();

  constructor(deps: JoinVoucherDeps) {
    this.#d = deps;
  }

  /** Called for every open join ceremony seen in etcd; vouches at most once per ceremony. */
  consider(c: Ceremony): void {
    const { seal, replicas, log } = this.#d;
    if (seal.sealed || c.operation !== 'join' || c.initiator === replicas.id || this.#seen.has(c.id)) return;
    this.#seen.add(c.id);
    if (this.#seen.size > 1_000) this.#seen.delete(this.#seen.values().next().value!); // bounded
    void this.#vouch(c).catch((e: Error) => log.warn({ ceremonyId: c.id, err: e.message }, 'could not vouch for a join'));
  }

  async #vouch(c: Ceremony): Promise<void> {
    const { audit, replicas, store } = this.#d;
    const reason = await this.#refusal(c);
    if (reason) {
      this.#d.log.warn({ ceremonyId: c.id, joiner: c.initiator, reason }, 'refused to vouch for a join');
      await audit.record({
        operation: 'ceremony.join.vouch_refused', principal: replicas.id, ceremony_id: c.id, result: 'denied', code: 'FAILED_PRECONDITION',
        details: { joiner: c.initiator.slice(0, 128), reason },
      });
      return;
    }
    const root = await this.#d.cluster.currentRoot();
    let stored: StoredVouch;
    try {
      const v = signVouch(root, c, replicas.id, replicas.epoch);
      stored = { voucher: v.voucher, seal_epoch: v.seal_epoch, not_after: v.not_after, signature: v.signature.toString('base64') };
    } finally {
      zeroize(root);
    }
    await audit.record({
      operation: 'ceremony.join.vouched', principal: replicas.id, ceremony_id: c.id, result: 'ok',
      details: { joiner: c.initiator, seal_epoch: String(stored.seal_epoch) },
    });
    await store.putVouch(c.id, replicas.id, stored);
  }

  /** Why this replica will not vouch for `c`, or '' when it will. */
  async #refusal(c: Ceremony): Promise<string> {
    const { cluster, replicas, seal } = this.#d;
    if (seal.sealed) return 'this replica is sealed';
    // The share set may have changed through another replica (a reshare): judge against the stored manifest.
    await cluster.load();
    let clusterId: string;
    let generation: number;
    try {
      const { record, manifest } = cluster.requireInitialized();
      clusterId = record.clusterId;
      generation = manifest.generation ?? 1;
    } catch (e) {
      return e instanceof KeyshardError ? e.message : 'the cluster is not initialized';
    }
    try {
      checkCeremonyForCustodian(c, [clusterId]); // hash, cluster, real times, bounded lifetime, unexpired
    } catch (e) {
      return e instanceof KeyshardError ? e.message : 'the ceremony is malformed';
    }
    if (c.parameters?.generation !== String(generation)) return `the ceremony is for share set ${String(c.parameters?.generation).slice(0, 16)}, not the current ${generation}`;
    const joiner = c.recipients?.length === 1 ? c.recipients[0]! : undefined;
    if (!joiner || joiner.coordinator_id !== c.initiator) return 'a join names exactly one recipient: the replica that asks';
    const all = await replicas.list();
    const me = all.find((r) => r.id === replicas.id);
    if (!me || me.sealed || me.sealEpoch !== replicas.epoch) return 'this replica is not unsealed in the current seal epoch';
    const registered = all.find((r) => r.id === joiner.coordinator_id);
    if (!registered) return `${joiner.coordinator_id.slice(0, 128)} is not a registered replica`;
    if (!registered.sealed) return `${joiner.coordinator_id.slice(0, 128)} is not sealed`;
    if (registered.publicKeyPem !== joiner.public_key_pem || registered.ephemeralPublicKeyPem !== joiner.ephemeral_public_key_pem)
      return `the ceremony names keys ${joiner.coordinator_id.slice(0, 128)} is not registered with`;
    return '';
  }
}
