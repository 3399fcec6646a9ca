/**
 * Status of the audit sink (cluster-status.ts auditSinkStatuses): every configured replica
 * probed, in config order, with why it gives no checkpoint (a fixed phrase, never the remote
 * text), and where this coordinator's producer sends (`sending`; `leader` only with several
 * replicas, once the producer's current replica acknowledged).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { STATUS_DETAILS_KEY, encodeStatusDetails } from '@keyshard/rpc';
import type { SignedCheckpoint } from '@keyshard/audit-log';
import { auditSinkStatuses, type AuditReplicaProbe } from './cluster-status.ts';

const checkpoint = (size: number): SignedCheckpoint => ({ tree_size: size, root_hash: 'ab'.repeat(32), time: '2025-01-02T03:04:05.678Z', key_id: '00'.repeat(8), signature: '' });

/** A grpc ServiceError as a sink sends it: status code, message, ErrorInfo reason. */
function refusal(code: grpc.status, reason: string, message: string): grpc.ServiceError {
  const metadata = new grpc.Metadata();
  metadata.set(STATUS_DETAILS_KEY, encodeStatusDetails(code, message, reason));
  return Object.assign(new Error(message), { code, details: message, metadata });
}

const probe = (serverId: string, port: number, answer: () => Promise<SignedCheckpoint>): AuditReplicaProbe => ({
  address: `10.0.0.${port % 10}:${port}`,
  serverId,
  reader: { checkpoint: answer },
});

const three = [
  probe('audit-sink', 7301, async () => checkpoint(120)),
  probe('audit-sink-2', 7302, async () => {
    throw refusal(grpc.status.UNAVAILABLE, 'AUDIT_UNAVAILABLE', 'this audit sink replica is catching up with the leader <remote text>');
  }),
  probe('audit-sink-3', 7303, async () => {
    throw refusal(grpc.status.UNAVAILABLE, 'UNAVAILABLE', 'connect ECONNREFUSED <remote text>');
  }),
];

describe('auditSinkStatuses', () => {
  it('reports every replica in config order: reachable with its checkpoint, catching up, or unreachable (fixed phrases)', async () => {
    const { replicas } = await auditSinkStatuses(three, { sendingTo: { address: three[0]!.address, serverId: 'audit-sink', acknowledged: true } });
    assert.deepEqual(
      replicas.map((r) => [r.server_id, r.address, r.reachable, r.tree_size, r.checkpoint_time]),
      [
        ['audit-sink', '10.0.0.1:7301', true, 120, '2025-01-02T03:04:05.678Z'],
        ['audit-sink-2', '10.0.0.2:7302', false, 0, ''],
        ['audit-sink-3', '10.0.0.3:7303', false, 0, ''],
      ],
    );
    assert.equal(replicas[0]!.error, '');
    assert.match(replicas[1]!.error, /^the replica answers but serves no reads: it is catching up with the leader/);
    assert.equal(replicas[2]!.error, 'the audit sink did not give a checkpoint');
    assert.ok(replicas.every((r) => !r.error.includes('<remote text>')), 'never the remote error text');
  });

  it('marks the replica the producer sends to; leader only once it acknowledged there', async () => {
    const to = (i: number, acknowledged: boolean) => ({ sendingTo: { address: three[i]!.address, serverId: three[i]!.serverId, acknowledged } });
    const acked = await auditSinkStatuses(three, to(2, true));
    assert.deepEqual(acked.replicas.map((r) => [r.sending, r.leader]), [[false, false], [false, false], [true, true]]);
    assert.equal(acked.sink.server_id, 'audit-sink-3', 'audit_sink: the replica the producer sends to');
    const moving = await auditSinkStatuses(three, to(1, false));
    assert.deepEqual(moving.replicas.map((r) => [r.sending, r.leader]), [[false, false], [true, false], [false, false]], 'looking for the leader: none marked');
    assert.equal(moving.sink.server_id, 'audit-sink-2');
  });

  it('one sink: that sink, sending, never called leader', async () => {
    const one = [three[0]!];
    const r = await auditSinkStatuses(one, { sendingTo: { address: one[0]!.address, serverId: 'audit-sink', acknowledged: true } });
    assert.deepEqual(r.replicas.map((x) => [x.server_id, x.reachable, x.sending, x.leader]), [['audit-sink', true, true, false]]);
    assert.equal(r.sink, r.replicas[0]);
  });
});
