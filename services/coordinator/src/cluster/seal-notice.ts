/**
 * Sealing the cluster, and telling the custodians (brief, "Ceremonies": joins are released
 * "never while no replica is unsealed").
 *
 * A join vouch names the seal epoch its voucher is unsealed in; custodians refuse vouches of an
 * epoch older than the newest they know. The replica that seals makes a seal-notice signer from
 * the root while it still holds it (packages/crypto/src/join-vouch.ts), seals itself and raises
 * the epoch (replicas.ts), then tells every custodian the new epoch, signed. A custodian that
 * does not hear it (down, unreachable) still refuses a vouch once its 2-minute life is over.
 * The notice is best effort and never holds the seal back; who heard it is audited.
 */
import { sealNoticeSigner, zeroize, type SealNotice } from '@keyshard/crypto';
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import type { Cluster } from './cluster.ts';
import type { CustodianLink } from '../ceremonies/custodian-link.ts';
import type { Seal } from './seal.ts';

export interface ClusterSealDeps {
  seal: Seal;
  cluster: Cluster;
  links: CustodianLink[];
  replicas: { sealCluster(sealSelf: () => void, principal: string): Promise<number> };
  audit: AuditRecorder;
  log: Logger;
}

/** Seals every replica (this one at once) and tells the custodians the new epoch. Returns it. */
export async function sealCluster(d: ClusterSealDeps, principal: string): Promise<number> {
  const sign = noticeSigner(d);
  const epoch = await d.replicas.sealCluster(() => d.seal.seal(), principal);
  if (sign) void tellCustodians(d, sign(epoch));
  return epoch;
}

/** Made from the root while this replica holds it; undefined when it is sealed or uninitialized. */
function noticeSigner(d: ClusterSealDeps): ((epoch: number) => SealNotice) | undefined {
  if (d.seal.sealed || !d.cluster.initialized) return undefined;
  const { record, manifest } = d.cluster.requireInitialized();
  const root = d.seal.rootCopy();
  try {
    return sealNoticeSigner(root, record.clusterId, manifest.generation ?? 1);
  } finally {
    zeroize(root);
  }
}

async function tellCustodians(d: ClusterSealDeps, notice: SealNotice): Promise<void> {
  const answers = await Promise.allSettled(d.links.map((l) => l.noteSeal(notice)));
  const told = d.links.filter((_, i) => answers[i]!.status === 'fulfilled').map((l) => l.id);
  const missed = d.links.filter((_, i) => answers[i]!.status === 'rejected').map((l) => l.id);
  if (missed.length) d.log.warn({ sealEpoch: notice.seal_epoch, missed }, 'custodians not told of the seal (their vouches still die within 2 minutes)');
  await d.audit
    .record({ operation: 'cluster.seal_notice.sent', principal: 'system', result: missed.length ? 'error' : 'ok', details: { seal_epoch: String(notice.seal_epoch), told: told.join(','), missed: missed.join(',') } })
    .catch((e: Error) => d.log.error({ err: e.message }, 'the seal notice could not be audited'));
}
