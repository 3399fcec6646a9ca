/**
 * ReplicaStore against a real single-member etcd (TestEtcd): registrations live exactly as long
 * as their lease (revoked, expired after the process dies, or lost and granted again), and a
 * registration says "unsealed" only with a valid record MAC.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { clusterNamespace, paths } from '@keyshard/store';
import { ReplicaStore } from './replica-store.ts';
import { collectingIntegrity, etcdForTests, quietLog, unsealed, until } from './test-support.ts';
import type { RecordIntegrity } from './record-integrity.ts';
import { Seal } from './seal.ts';

const TTL_SECONDS = 2; // etcd's smallest lease
const REPLICA_PROCESS = fileURLToPath(new URL('./replica-store.spec-process.ts', import.meta.url));

describe('ReplicaStore', { timeout: 60_000 }, () => {
  const local = etcdForTests();

  /** A replica `id` of `cluster`, on its own etcd client. */
  function replica(id: string, cluster: string, integrity: RecordIntegrity): ReplicaStore {
    const client = local.etcd.client();
    const me = { id, address: `${id}:7000`, publicKeyPem: `transport-${id}`, ephemeralPublicKeyPem: `ephemeral-${id}` };
    const store = new ReplicaStore(client, me, { clusterName: cluster, ttlSeconds: TTL_SECONDS, integrity, log: quietLog });
    return local.stopAfter(store);
  }
  const ids = async (s: ReplicaStore) => (await s.list()).map((r) => r.id);

  it('a registration is listed while its lease lives, and vanishes with it: at once when stopped, within its TTL when the process dies', async (t) => {
    const { integrity } = unsealed();
    const observer = replica('observer', 'leases', integrity);
    const stopped = replica('replica-a', 'leases', integrity);
    await stopped.register();
    const dies = spawn(process.execPath, ['--conditions=keyshard-source', '--import', 'tsx', REPLICA_PROCESS, `http://127.0.0.1:${local.etcd.clientPort}`, 'leases', 'replica-b'], { stdio: ['ignore', 'pipe', 'inherit'] });
    t.after(() => void dies.kill('SIGKILL'));
    await once(dies.stdout, 'data');
    const listed = await observer.list();
    assert.deepEqual(listed.map((r) => r.id), ['replica-a', 'replica-b'], 'the observer itself never registered');
    assert.deepEqual(listed[0], stopped.mine);
    assert.equal(listed[0]!.sealed, true, 'a replica registers sealed');
    assert.notEqual(listed[0]!.instance, listed[1]!.instance);

    await stopped.stop();
    assert.deepEqual(await ids(observer), ['replica-b'], 'revoked with the lease');
    dies.kill('SIGKILL'); // no more keepalives, nothing revoked
    const t0 = Date.now();
    await until('the dead replica\'s lease expires', async () => (await ids(observer)).length === 0, 15_000);
    assert.ok(Date.now() - t0 >= 1_000, 'it stayed registered until its lease ran out');
  });

  it('a lease lost (here: revoked behind its back) is granted again and the registration comes back, as last published', async () => {
    const { integrity } = unsealed();
    const store = replica('replica-c', 'lost', integrity);
    await store.register();
    const ns = clusterNamespace(local.etcd.client(), 'lost');
    const lease = (await ns.get(paths.coordinator('replica-c')).exec()).kvs[0]!.lease;
    await local.etcd.client().leaseClient.leaseRevoke({ ID: lease });
    await until('registered again', async () => {
      const kv = (await ns.get(paths.coordinator('replica-c')).exec()).kvs[0];
      return kv !== undefined && kv.lease !== lease;
    });
    await store.publish({ ephemeralPublicKeyPem: 'ephemeral-next' });
    assert.equal((await store.list())[0]!.ephemeralPublicKeyPem, 'ephemeral-next');
  });

  it('"unsealed" counts only with a valid record MAC: a forged or foreign one is listed as sealed and reported; a sealed reader cannot tell', async () => {
    const macKey = randomBytes(32);
    const a = unsealed(macKey);
    const writer = replica('replica-d', 'flags', a.integrity);
    await writer.register();
    await writer.publish({ sealed: false, sealEpoch: 3 });
    const reader = unsealed(macKey);
    const peer = replica('peer', 'flags', reader.integrity);
    const mine = (await peer.list())[0]!;
    assert.deepEqual([mine.sealed, mine.sealEpoch], [false, 3]);
    assert.equal('mac' in mine, false, 'listed without its MAC');

    const ns = clusterNamespace(local.etcd.client(), 'flags');
    await ns.put(paths.coordinator('replica-f')).value(JSON.stringify({ ...mine, id: 'replica-f', sealed: false }));
    await ns.put(paths.coordinator('replica-g')).value('{not json');
    const listed = await peer.list();
    assert.deepEqual(listed.map((r) => [r.id, r.sealed]), [['replica-d', false], ['replica-f', true]], 'the forged one is sealed; the unreadable one is left out');
    assert.deepEqual(reader.reports, [{ path: paths.coordinator('replica-f'), reason: 'no MAC' }]);

    const foreign = replica('foreign', 'flags', unsealed().integrity); // another cluster's record MAC key
    assert.deepEqual((await foreign.list()).map((r) => r.sealed), [true, true]);
    const sealedReader = replica('sealed', 'flags', collectingIntegrity(new Seal()).integrity);
    assert.deepEqual((await sealedReader.list()).map((r) => r.sealed), [false, false], 'no key to check with: taken as stored');

    await writer.publish({ sealed: true });
    assert.deepEqual((await peer.list()).map((r) => r.sealed), [true, true]);
  });
});
