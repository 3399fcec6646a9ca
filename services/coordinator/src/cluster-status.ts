/**
 * What `Status` reports of the coordinator's dependencies besides the replicas and custodians:
 * etcd's members (Cluster.MemberList, and the leader and version as the member that answers
 * sees them) and the audit sink (reachable, and the size of its log from a fresh signed
 * checkpoint). Each probe has a short deadline and never throws: an unreachable dependency is
 * a status, and its reason is a fixed phrase, never a remote error text.
 */
import type { Etcd3 } from '@keyshard/store';
import type { AuditReader } from '@keyshard/audit-client/reader';

/** keyshard.v1.EtcdStatus (snake_case, as in ceremony.proto). */
export interface EtcdStatus {
  reachable: boolean;
  members: { id: string; name: string; client_urls: string[]; peer_urls: string[]; leader: boolean; learner: boolean }[];
  version: string;
  error: string;
}

/** keyshard.v1.AuditSinkStatus. */
export interface AuditSinkStatus {
  address: string;
  reachable: boolean;
  tree_size: number;
  checkpoint_time: string;
  error: string;
}

const PROBE_TIMEOUT_MS = 1_000;

/** etcd member ids are uint64 (decimal strings from etcd3); etcdctl prints them in hex. */
const hexId = (id: string): string => (/^\d+$/.test(id) ? BigInt(id).toString(16) : id);

export async function etcdStatus(etcd: Etcd3, timeoutMs = PROBE_TIMEOUT_MS): Promise<EtcdStatus> {
  const options = () => ({ deadline: Date.now() + timeoutMs });
  try {
    const [list, status] = await Promise.all([etcd.cluster.memberList({}, options()), etcd.maintenance.status(options()).catch(() => undefined)]);
    return {
      reachable: true,
      members: list.members.map((m) => ({
        id: hexId(m.ID),
        name: m.name,
        client_urls: m.clientURLs,
        peer_urls: m.peerURLs,
        leader: status !== undefined && m.ID === status.leader,
        learner: m.isLearner,
      })),
      version: status?.version ?? '',
      error: '',
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
