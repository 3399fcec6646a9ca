/**
 * What `Status` reports of the coordinator's dependencies besides the replicas and custodians:
 * etcd's members (Cluster.MemberList, and the leader and version as the member that answers
 * sees them) and the audit sink (reachable, and the size of its log from a fresh signed
 * checkpoint). Each probe has a short deadline and never throws: an unreachable dependency is
 * a status, and its reason is a fixed phrase, never a remote error text. etcd counts as
 * reachable only if it answers the member list and this replica's reads of its state succeed
 * (etcd-reachability.ts): a member can list the members without a quorum, but not serve reads.
 */
import type { Etcd3 } from '@keyshard/store';
import type { AuditReader } from '@keyshard/audit-client/reader';
import type { pb } from '@keyshard/rpc';

/** keyshard.v1.EtcdStatus (ceremony.proto), every field set. */
export type EtcdStatus = pb.EtcdStatus__Output;

/** keyshard.v1.AuditSinkStatus, every field set. */
export type AuditSinkStatus = pb.AuditSinkStatus__Output;

const PROBE_TIMEOUT_MS = 1_000;

/** etcd member ids are uint64 (decimal strings from etcd3); etcdctl prints them in hex. */
const hexId = (id: string): string => (/^\d+$/.test(id) ? BigInt(id).toString(16) : id);

/** What EtcdReachability knows of this replica's reads (etcd-reachability.ts). */
export interface EtcdReads {
  reachable: boolean;
  silentForMs: number;
}

export async function etcdStatus(etcd: Etcd3, reads?: EtcdReads, timeoutMs = PROBE_TIMEOUT_MS): Promise<EtcdStatus> {
  const options = () => ({ deadline: Date.now() + timeoutMs });
  const readsFail = reads !== undefined && !reads.reachable;
  try {
    const [list, status] = await Promise.all([etcd.cluster.memberList({}, options()), etcd.maintenance.status(options()).catch(() => undefined)]);
    return {
      reachable: !readsFail,
      members: list.members.map((m) => ({
        id: hexId(m.ID),
        name: m.name,
        client_urls: m.clientURLs,
        peer_urls: m.peerURLs,
        leader: status !== undefined && m.ID === status.leader,
        learner: m.isLearner,
      })),
      version: status?.version ?? '',
      error: readsFail ? `etcd lists its members, but no read of this cluster's state succeeded for ${Math.round(reads.silentForMs / 1000)} s` : '',
    };
  } catch {
    return { reachable: false, members: [], version: '', error: `etcd did not answer the member list within ${timeoutMs} ms` };
  }
}

export async function auditSinkStatus(reader: AuditReader, address: string): Promise<AuditSinkStatus> {
  try {
    const c = await reader.checkpoint();
    return { address, reachable: true, tree_size: c.tree_size, checkpoint_time: c.time, error: '' };
  } catch {
    return { address, reachable: false, tree_size: 0, checkpoint_time: '', error: 'the audit sink did not give a checkpoint' };
  }
}
