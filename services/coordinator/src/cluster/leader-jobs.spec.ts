/**
 * LeaderJobs over a real election (TestEtcd; the keyring is a FAKE that lists one due key and
 * records the rotations asked of it): only the unsealed leader sweeps, each rotation audited
 * before it runs and fenced by the leader's election key; the same for scheduled backups.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { AuditRecorder } from '@keyshard/audit-client';
import type { Fence, KeyRecord } from '../keys/keyring.ts';
import { LeaderElection } from './leader-election.ts';
import { LeaderJobs } from './leader-jobs.ts';
import { etcdForTests, quietLog, unsealed, until } from './test-support.ts';

describe('LeaderJobs', { timeout: 60_000 }, () => {
  const local = etcdForTests();

  /** Replica `id`'s jobs: `steps` records audits, rotations (with the fence they carry) and backups, in order. */
  function replica(id: string) {
    const { seal } = unsealed();
    const steps: string[] = [];
    const fences: (Fence | undefined)[] = [];
    const keyring = {
      warm: async () => {},
      due: () => [{ id: 'key-1' } as KeyRecord],
      rotate: async (k: KeyRecord, opts: { fence?: Fence }) => (steps.push(`rotate ${k.id}`), fences.push(opts.fence), { ...k, primaryVersion: 2 }),
    };
    const audit: AuditRecorder = { record: async (e) => void steps.push(`audit ${e.operation}`) };
    const election = new LeaderElection(local.etcd.namespace('jobs'), { candidate: id, ttlSeconds: 2, log: quietLog });
    const backup = { everySeconds: 3600, write: async () => (steps.push('backup'), { file: `${id}.ksbackup`, entries: 1 }) };
    const j = new LeaderJobs(election, keyring, seal, audit, quietLog, { coordinatorId: id, sweepSeconds: 3600, backup });
    local.stopAfter(j).start();
    return { id, j, seal, steps, fences, election };
  }

  it('only the unsealed leader rotates due keys (audited first, fenced) and writes backups; after a stop the other does', async () => {
    const a = replica('replica-1');
    const b = replica('replica-2');
    await until('one leads', () => a.j.leading || b.j.leading);
    const [leader, follower] = a.j.leading ? [a, b] : [b, a];

    assert.equal(await follower.j.sweep(), 0);
    assert.equal(await follower.j.backup(), undefined);
    assert.deepEqual(follower.steps, [], 'a follower touches nothing');

    assert.equal(await leader.j.sweep(), 1);
    assert.equal(await leader.j.backup(), `${leader.id}.ksbackup`);
    assert.deepEqual(leader.steps, ['audit keys.rotation.scheduled', 'rotate key-1', 'audit backup.scheduled', 'backup']);
    assert.equal(leader.fences[0], leader.election.fence, 'the rotation carries the leader\'s fence');
    assert.equal(await leader.fences[0]!.held(), true);

    leader.seal.seal();
    assert.equal(await leader.j.sweep(), 0, 'sealed: no key material, no sweep');
    assert.equal(await leader.j.backup(), undefined);

    await leader.j.stop();
    await until('the other takes over', () => follower.j.leading);
    assert.equal(await leader.fences[0]!.held(), false, 'the old fence no longer holds');
    assert.equal(await follower.j.sweep(), 1);
    assert.deepEqual(follower.steps, ['audit keys.rotation.scheduled', 'rotate key-1']);
  });
});
