/**
 * What `Status` reports of the coordinator's dependencies besides the replicas and custodians:
 * etcd's members (Cluster.MemberList, and the leader and version as the member that answers
 * sees them) and the audit sink — each replica of a replicated one — (reachable, and the size of
 * its log from a fresh signed checkpoint; where this replica's producer sends). Each probe has a short deadline and never throws: an unreachable dependency is
 * a status, and its reason is a fixed phrase, never a remote error text. etcd counts as
 * reachable only if it answers the member list and this replica's reads of its state succeed
 * (etcd-reachability.ts): a member can list the members without a quorum, but not serve reads.
 */
import * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from '@keyshard/store';
import type { AuditReader } from '@keyshard/audit-client/reader';
import { isServiceError, reasonOfStatus, type pb } from '@keyshard/rpc';

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

/** Where this coordinator's audit producer sends (AuditClient.sendingTo). */
export interface AuditProducer {
  readonly sendingTo: { address: string; serverId: string; acknowledged: boolean };
}

/** One configured audit sink replica (config audit.replicas; one sink: audit.address) and the reader that probes it. */
export interface AuditReplicaProbe {
  address: string;
  serverId: string;
  reader: Pick<AuditReader, 'checkpoint'>;
}

const CATCHING_UP = 'the replica answers but serves no reads: it is catching up with the leader, or stopped on a log that differs from it';
const NO_CHECKPOINT = 'the audit sink did not give a checkpoint';

async function probeSink(p: AuditReplicaProbe): Promise<Pick<AuditSinkStatus, 'reachable' | 'tree_size' | 'checkpoint_time' | 'error'>> {
  try {
    const c = await p.reader.checkpoint();
    return { reachable: true, tree_size: c.tree_size, checkpoint_time: c.time, error: '' };
  } catch (e) {
    // A replica that is not in sync refuses reads AUDIT_UNAVAILABLE (audit-sink replication/sink-log.ts).
    const fromReplica = isServiceError(e) && e.code === grpc.status.UNAVAILABLE && reasonOfStatus(e) === 'AUDIT_UNAVAILABLE';
    return { reachable: false, tree_size: 0, checkpoint_time: '', error: fromReplica ? CATCHING_UP : NO_CHECKPOINT };
  }
}

/**
 * Every configured sink replica, probed at once for a fresh checkpoint, and which one the
 * producer sends to: `sink` is that one (Status `audit_sink`), `replicas` all of them in config
 * order (`audit_replicas`). `leader` only with several replicas: the producer's current replica
 * once it acknowledged there (only the leader acknowledges).
 */
export async function auditSinkStatuses(probes: readonly AuditReplicaProbe[], producer: AuditProducer): Promise<{ sink: AuditSinkStatus; replicas: AuditSinkStatus[] }> {
  const probed = await Promise.all(probes.map(probeSink));
  const to = producer.sendingTo; // read after the probes: the freshest view
  const replicated = probes.length > 1;
  const replicas = probes.map((p, i): AuditSinkStatus => {
    const sending = p.address === to.address && p.serverId === to.serverId;
    return { address: p.address, server_id: p.serverId, ...probed[i]!, sending, leader: replicated && sending && to.acknowledged };
  });
  return { sink: replicas.find((r) => r.sending) ?? replicas[0]!, replicas };
}
