/**
 * export-share: custodian recovery, export side (issue "Disaster recovery" item 4). A quorum of
 * the current share set approves that one custodian's share be wrapped (C_WrapKey, RSA-OAEP,
 * RFC 8017) to an offline recovery public key the operator supplies; the ceremony binds the
 * key's fingerprint, the custodian checks the quorum against its own peers record and the key
 * against the fingerprint. The export (no plaintext: only the recovery private key opens it)
 * is kept in etcd for `keyshard custodian backup` to fetch, and is imported into a new token
 * with `keyshard custodian restore`. The stored export carries a record MAC (record-integrity.ts),
 * checked when it is fetched: a sealed replica, which cannot check it, refuses to hand it out.
 */
import { parseRecoveryPublicKey } from '@keyshard/crypto';
import { invalidArgument, notFound, quote } from '@keyshard/errors';
import type { Cluster } from './cluster.ts';
import type { ClusterStore, ShareExportRecord } from './cluster-store.ts';
import type { CustodianLink } from '../ceremonies/custodian-link.ts';
import type { QuorumOperation } from '../ceremonies/quorum-ceremonies.ts';

export function exportShareOperation(store: ClusterStore, cluster: Cluster, links: CustodianLink[]): QuorumOperation {
  return {
    async prepare(p) {
      const { manifest } = cluster.requireInitialized();
      const custodian = p.custodian ?? '';
      if (!manifest.custodians.some((c) => c.id === custodian)) throw invalidArgument(`custodian ${quote(custodian)} holds no share of the current set`);
      if (!links.some((l) => l.id === custodian)) throw invalidArgument(`custodian ${quote(custodian)} is not configured on this coordinator`);
      // Checked before anything is stored or audited: an RSA public key of >= 3072 bits only (a
      // private key is refused, never echoed); what the ceremony binds is the key re-encoded, not the caller's text.
      const { publicKeyPem, fingerprint } = parseRecoveryPublicKey(p.recovery_key);
      return { custodian, recovery_key: publicKeyPem, recovery_key_fingerprint: fingerprint };
    },
    async execute(c, approvals) {
      const link = links.find((l) => l.id === c.parameters.custodian)!;
      const res = await link.exportShare(c.cluster_id, c.id, c.parameters.recovery_key!, approvals);
      const record: ShareExportRecord = {
        ceremony_id: c.id,
        cluster_id: c.cluster_id,
        custodian_id: link.id,
        generation: res.generation,
        peers_json: res.peers_json,
        wrapped_share: Buffer.from(res.wrapped_share).toString('base64'),
        recovery_key_fingerprint: c.parameters.recovery_key_fingerprint!,
        oaep_hash: res.oaep_hash,
        succession_statement: Buffer.from(res.succession_statement ?? []).toString('base64'),
      };
      await store.putShareExport(record);
      return { custodian: link.id, generation: String(res.generation) };
    },
  };
}

export async function getShareExport(store: ClusterStore, ceremonyId: string) {
  const r = await store.shareExport(ceremonyId);
  if (!r) throw notFound(`no share export for ceremony ${quote(ceremonyId)} (not an export-share ceremony, or not completed)`);
  return { ...r, wrapped_share: Buffer.from(r.wrapped_share, 'base64'), succession_statement: Buffer.from(r.succession_statement ?? '', 'base64') };
}
