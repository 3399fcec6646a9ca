/** `keyshard status`: the audit sink lines (one sink: one line as before; replicas: one each, the leader marked). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Status } from '@keyshard/client';
import { auditSinkLines } from './cluster.ts';

type Sink = NonNullable<Status['audit_sink']>;
const sink = (serverId: string, address: string, more: Partial<Sink> = {}): Sink => ({
  address, server_id: serverId, reachable: true, tree_size: 42, checkpoint_time: '2025-01-02T03:04:05.678Z', error: '', sending: false, leader: false, ...more,
});

describe('keyshard status: audit sink lines', () => {
  it('one sink: one line without a name, as before replication', () => {
    const one = sink('audit-sink', '127.0.0.1:7300', { sending: true });
    assert.deepEqual(auditSinkLines({ audit_sink: one, audit_replicas: [one] }), [`audit sink   ${''.padEnd(14)} 127.0.0.1:7300         reachable, 42 records`]);
    assert.deepEqual(auditSinkLines({ audit_sink: one, audit_replicas: [] }), auditSinkLines({ audit_sink: one, audit_replicas: [one] }), 'an older coordinator: audit_sink alone');
    assert.deepEqual(auditSinkLines({ audit_sink: null, audit_replicas: [] }), []);
  });

  it('replicas: one line each, named, with the leader (or the replica sent to) marked', () => {
    const replicas = [
      sink('audit-sink', '127.0.0.1:7301'),
      sink('audit-sink-2', '127.0.0.1:7302', { sending: true, leader: true }),
      sink('audit-sink-3', '127.0.0.1:7303', { reachable: false, tree_size: 0, error: 'the audit sink did not give a checkpoint' }),
    ];
    const lines = auditSinkLines({ audit_sink: replicas[1]!, audit_replicas: replicas });
    assert.deepEqual(lines, [
      'audit sink   audit-sink     127.0.0.1:7301         reachable, 42 records',
      'audit sink   audit-sink-2   127.0.0.1:7302         reachable, 42 records  leader',
      'audit sink   audit-sink-3   127.0.0.1:7303         UNREACHABLE: the audit sink did not give a checkpoint',
    ]);
    replicas[1]!.leader = false;
    assert.match(auditSinkLines({ audit_sink: replicas[1]!, audit_replicas: replicas })[1]!, /records {2}sending$/, 'sent to, no acknowledgement yet');
  });
});
