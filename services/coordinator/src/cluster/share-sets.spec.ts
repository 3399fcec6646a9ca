/**
 * Share-set ceremonies (reshare, rotate-root, destroy-cluster) and Cluster init/unseal against a
 * real single-member etcd (TestEtcd), with FAKE custodians (test-support.ts: keys in memory, no
 * HSM) and no quorum ceremony around them: the operations are called as the ceremony runner
 * calls them once a quorum approved. What is checked is what etcd holds after each step.
 */
import { beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Ceremony } from '@keyshard/crypto';
import { isKeyshardError } from '@keyshard/errors';
import { paths, type Namespace } from '@keyshard/store';
import { Cluster } from './cluster.ts';
import { ClusterStore } from './cluster-store.ts';
import { Seal } from './seal.ts';
import { destroyClusterOperation, shareSetOperation, type ShareSetDeps } from './share-sets.ts';
import { collectingIntegrity, etcdForTests, FakeCustodian, quietLog, rootOf } from './test-support.ts';

const code = (e: unknown) => (isKeyshardError(e) ? e.code : String(e));
const ceremony = (id: string, operation: string, parameters: Record<string, string>) => ({ id, operation, parameters }) as unknown as Ceremony;

describe('share sets on etcd', { timeout: 120_000 }, () => {
  const local = etcdForTests();
  let ns: Namespace;
  let n = 0;

  /** A replica of a cluster initialised 3-of-2 over c1..c3 (c4 configured, holding nothing), unsealed with the root its custodians hold. */
  async function unsealedCluster(custodians: FakeCustodian[]) {
    const seal = new Seal();
    const { integrity, reports } = collectingIntegrity(seal);
    const store = new ClusterStore(ns, integrity);
    const cluster = new Cluster(store, custodians.map((c) => c.link), seal, 'sha256');
    await cluster.init(3, 2);
    await cluster.openSeal(await rootOf(cluster.manifest!, custodians), seal.generation);
    const calls: string[] = [];
    const deps: ShareSetDeps = {
      store, cluster, seal, links: custodians.map((c) => c.link), log: quietLog,
      sealCluster: async () => calls.push('seal cluster'),
      compact: async (revision) => calls.push(`compact ${revision}`),
    };
    return { seal, store, cluster, reports, deps, calls };
  }
  /** Another replica of the same cluster: loads it and opens its seal with `root` (throws if that root does not unwrap every key). */
  async function anotherReplica(root: Buffer) {
    const seal = new Seal();
    const cluster = new Cluster(new ClusterStore(ns, collectingIntegrity(seal).integrity), [], seal, 'sha256');
    await cluster.load();
    await cluster.openSeal(root, seal.generation);
    return seal;
  }

  beforeEach(() => {
    ns = local.etcd.namespace(`share-sets-${++n}`);
  });

  it('reshare: the generation is above the manifest\'s and any reservation, reserved before any delivery; the new set alone holds the same root; the old set is retired', async () => {
    const custodians = ['c1', 'c2', 'c3', 'c4'].map((id) => new FakeCustodian(id));
    const { seal, store, cluster, deps } = await unsealedCluster(custodians);
    const root = seal.rootCopy();
    await store.reserveShareSet(4); // left by a ceremony that crashed after reserving
    const op = shareSetOperation(deps, 'reshare');
    const parameters = await op.prepare({ custodians: 'c2,c3,c4', threshold: '2' });
    assert.equal(parameters.new_generation, '5');
    const reservedAtDelivery: number[] = [];
    custodians[3]!.beforeDelivery = async () => void reservedAtDelivery.push(await store.reservedGeneration());

    const result = await op.execute(ceremony('reshare-1', 'reshare', parameters), []);
    assert.deepEqual(result, { generation: '5', custodians: 'c2,c3,c4', threshold: '2', old_shares_destroyed: 'c1,c2,c3' });
    assert.deepEqual(reservedAtDelivery, [5]);
    const { manifest } = await store.manifest();
    assert.deepEqual([manifest!.generation, manifest!.custodians.map((c) => c.id)], [5, ['c2', 'c3', 'c4']]);
    assert.deepEqual(cluster.manifest, manifest);
    assert.deepEqual(await rootOf(manifest!, custodians.slice(1)), root, 'the same root, from the new shares');
    assert.deepEqual(custodians.map((c) => c.destroyed), [['reshare-1'], ['reshare-1'], ['reshare-1'], []]);
    await anotherReplica(root);
  });

  it('rotate-root: a new root; every KEK and the record MAC key re-wrapped under it, so MAC\'d records stay valid and the old root opens nothing', async () => {
    const custodians = ['c1', 'c2', 'c3'].map((id) => new FakeCustodian(id));
    const { seal, store, deps } = await unsealedCluster(custodians);
    const [oldRoot, kek] = [seal.rootCopy(), Buffer.from(seal.kek(1))];
    const op = shareSetOperation(deps, 'rotate-root');
    await op.execute(ceremony('rotate-1', 'rotate-root', await op.prepare({})), []);
    const { manifest } = await store.manifest();
    const newRoot = await rootOf(manifest!, custodians);
    assert.notDeepEqual(newRoot, oldRoot);
    assert.deepEqual(seal.rootCopy(), newRoot, 'this replica holds the new root');
    const other = await anotherReplica(newRoot);
    assert.deepEqual(other.kek(1), kek, 'the same KEK, wrapped anew');
    const otherStore = new ClusterStore(ns, collectingIntegrity(other).integrity);
    assert.equal(await otherStore.reservedGeneration(), 2, 'the reservation MAC\'d before the rotation still verifies');
    await assert.rejects(anotherReplica(oldRoot));
  });

  it('a share set switched by another replica during the ceremony: nothing is switched', async () => {
    const custodians = ['c1', 'c2', 'c3'].map((id) => new FakeCustodian(id));
    const { store, deps } = await unsealedCluster(custodians);
    const op = shareSetOperation(deps, 'reshare');
    const parameters = await op.prepare({});
    custodians[0]!.beforeDelivery = async () => {
      const { manifest, revision } = await store.manifest();
      await store.switchShareSet({ ...manifest!, createdAt: 'switched elsewhere' }, revision);
    };
    await assert.rejects(op.execute(ceremony('reshare-2', 'reshare', parameters), []), /the share manifest changed during the ceremony; nothing was switched/);
    const { manifest } = await store.manifest();
    assert.deepEqual([manifest!.createdAt, manifest!.generation], ['switched elsewhere', undefined]);
    assert.deepEqual(custodians.map((c) => c.destroyed), [[], [], []], 'no old share retired');
  });

  it('a ceremony is refused before it begins: bad parameters, or a reservation altered in etcd (reported)', async () => {
    const custodians = ['c1', 'c2', 'c3'].map((id) => new FakeCustodian(id));
    const { reports, deps } = await unsealedCluster(custodians);
    const op = shareSetOperation(deps, 'reshare');
    await assert.rejects(op.prepare({ threshold: 'two' }), (e) => code(e) === 'INVALID_ARGUMENT');
    await assert.rejects(op.prepare({ custodians: 'c1,c9', threshold: '2' }), /not configured custodians: c9/);
    await assert.rejects(op.prepare({ custodians: 'c1,c1,c2', threshold: '2' }), /a custodian is listed twice/);
    await ns.put(paths.shareSetNext).value(JSON.stringify({ generation: 1 }));
    await assert.rejects(op.prepare({}), (e) => code(e) === 'FAILED_PRECONDITION' && /record share-set-next failed its integrity check/.test((e as Error).message));
    assert.deepEqual(reports, [{ path: paths.shareSetNext, reason: 'no MAC' }]);
  });

  it('destroy-cluster: every custodian destroys its shares, the cluster is sealed, its state erased (the ceremony\'s record kept) and compacted', async () => {
    const custodians = ['c1', 'c2', 'c3', 'c4'].map((id) => new FakeCustodian(id));
    const { cluster, deps, calls } = await unsealedCluster(custodians);
    const op = destroyClusterOperation(deps);
    const parameters = await op.prepare({});
    assert.deepEqual([parameters.cluster_id, parameters.custodians], [cluster.record!.clusterId, 'c1,c2,c3,c4']);
    await ns.put(paths.ceremony('destroy-1')).value('{"state":"CEREMONY_STATE_OPEN"}');
    const result = await op.execute(ceremony('destroy-1', 'destroy-cluster', parameters), []);
    assert.deepEqual(result, { cluster_id: parameters.cluster_id, shares_destroyed_at: 'c1,c2,c3,c4' });
    assert.deepEqual(custodians.map((c) => c.destroyed), [['destroy-1'], ['destroy-1'], ['destroy-1'], ['destroy-1']]);
    assert.equal(calls[0], 'seal cluster');
    assert.match(calls[1]!, /^compact \d+$/);
    assert.deepEqual(Object.keys(await ns.getAll().strings()), [paths.ceremony('destroy-1')]);
    assert.equal(cluster.initialized, false);
  });
});
