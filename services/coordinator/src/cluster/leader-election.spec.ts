/**
 * LeaderElection against a real single-member etcd (TestEtcd), two replicas on their own
 * clients: one leader at a time, a takeover when it stops or loses its lease, and a fence that
 * stops holding once its leadership is gone.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Fence } from '../keys/keyring.ts';
import { LeaderElection } from './leader-election.ts';
import { etcdForTests, quietLog, until } from './test-support.ts';

const TTL_SECONDS = 2;

describe('LeaderElection', { timeout: 60_000 }, () => {
  const local = etcdForTests();

  /** A replica `candidate` campaigning in `cluster`'s election; `events` records what it was told. */
  function candidate(name: string, cluster: string) {
    const election = new LeaderElection(local.etcd.namespace(cluster), { candidate: name, ttlSeconds: TTL_SECONDS, log: quietLog });
    const events: string[] = [];
    const fences: Fence[] = [];
    election.onElected((f) => (events.push('elected'), fences.push(f)));
    election.onDeposed(() => events.push('deposed'));
    local.stopAfter(election).start();
    return { name, election, events, fences };
  }
  /** Waits until one of `a` and `b` leads (never both); returns [leader, follower]. */
  async function oneLeader<C extends { election: LeaderElection }>(a: C, b: C): Promise<[C, C]> {
    await until('one replica leads', () => a.election.leading || b.election.leading);
    assert.equal(a.election.leading && b.election.leading, false, 'never two leaders');
    return a.election.leading ? [a, b] : [b, a];
  }

  it('of two replicas one leads, both name it; when it stops the other takes over and the old fence no longer holds', async () => {
    const [leader, follower] = await oneLeader(candidate('replica-1', 'stop'), candidate('replica-2', 'stop'));
    assert.equal(await leader.election.currentLeader(), leader.name);
    assert.equal(await follower.election.currentLeader(), leader.name);
    const fence = leader.election.fence!;
    assert.deepEqual(leader.fences, [fence]);
    assert.equal(await fence.held(), true);
    assert.deepEqual(follower.events, [], 'the follower is told nothing');

    await leader.election.stop();
    assert.equal(leader.election.leading, false);
    await until('the follower takes over', () => follower.election.leading);
    assert.equal(await follower.election.currentLeader(), follower.name);
    assert.equal(await fence.held(), false, 'a write fenced by the old leader would fail');
    assert.equal(await follower.election.fence!.held(), true);
  });

  it('a leader whose lease is lost is deposed: the other takes over, and it campaigns again behind it', async () => {
    const [leader, follower] = await oneLeader(candidate('replica-3', 'lost'), candidate('replica-4', 'lost'));
    const fence = leader.election.fence!;
    const ns = local.etcd.namespace('lost');
    const lease = (await ns.get(fence.key).exec()).kvs[0]!.lease;
    await local.etcd.client().leaseClient.leaseRevoke({ ID: lease });
    await until('the follower takes over', () => follower.election.leading);
    await until('the old leader is told', () => leader.events.includes('deposed'));
    assert.equal(leader.election.leading, false);
    assert.equal(await fence.held(), false);
    await until('the old leader campaigns again', async () => (await ns.getAll().prefix('election/').keys()).length === 2, 20_000);
    assert.equal(leader.election.leading, false, 'behind the new leader');
    assert.equal(await leader.election.currentLeader(), follower.name);
    // When the new leader resigns, the one campaigning behind it takes over. (Waiting for that
    // also ends its etcd watch on the leader's key: etcd3's resign does not cancel a campaign's
    // wait, and a watch left open keeps retrying after etcd stops, so the test file never exits.)
    await follower.election.stop();
    await until('the old leader leads again', () => leader.election.leading);
  });
});
