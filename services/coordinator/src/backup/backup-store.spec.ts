/**
 * BackupStore against a real single-member etcd (TestEtcd): a backup's snapshot is every durable
 * entry at one revision, in backup order, read in pages; a restore's writes land only under its
 * claim on the cluster record, its commit swaps in the backup's record, its undo empties the
 * cluster unless the claim is not its own any more.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { paths, type Namespace } from '@keyshard/store';
import { BackupStore } from './backup-store.ts';
import type { ClusterRecord } from '../cluster/cluster-store.ts';
import { etcdForTests } from '../cluster/test-support.ts';

const KEYS = 1_500; // more than one page of keys/
const live = [paths.ceremony('c-1'), paths.coordinator('replica-1'), paths.sealEpoch]; // coordination, never backed up
const durable = [paths.cluster, paths.manifest, paths.kek(1), paths.version('k0001', 1), paths.usage('k0001', 1), paths.name('n'), paths.alias('a')];
const keyPaths = Array.from({ length: KEYS }, (_, i) => paths.key(`k${String(i).padStart(4, '0')}`));

async function putAll(ns: Namespace, keys: string[], value = (k: string) => `{"at":"${k}"}`): Promise<void> {
  for (let i = 0; i < keys.length; i += 100) await Promise.all(keys.slice(i, i + 100).map((k) => ns.put(k).value(value(k))));
}

describe('BackupStore', { timeout: 60_000 }, () => {
  const local = etcdForTests();

  it('a snapshot holds every durable entry as of its revision, in backup order, over several pages; later writes and live state are not in it', async () => {
    const ns = local.etcd.namespace('snapshot');
    await putAll(ns, [...durable, ...keyPaths, ...live]);
    const store = new BackupStore(ns);
    const revision = await store.revision();
    await ns.delete().key(keyPaths[0]!);
    await ns.put(paths.key('k9999')).value('{}');
    await ns.put(paths.cluster).value('{"changed":true}');

    assert.equal(await store.count(revision), durable.length + KEYS);
    const read: { key: string; value: Buffer }[] = [];
    for await (const e of store.entries(revision)) read.push(e);
    const order = [paths.cluster, paths.manifest, paths.kek(1), ...keyPaths, paths.version('k0001', 1), paths.usage('k0001', 1), paths.name('n'), paths.alias('a')];
    assert.deepEqual(read.map((e) => e.key), order);
    assert.equal(read[0]!.value.toString(), `{"at":"${paths.cluster}"}`, 'the value at the revision');
  });

  it('restore: claims only an empty cluster; writes only under its claim; commit swaps in the backup\'s record once', async () => {
    const ns = local.etcd.namespace('restore');
    const store = new BackupStore(ns);
    const claim: ClusterRecord = { clusterId: 'c-backup', state: 'restoring', kekEpoch: 0, createdAt: new Date().toISOString() };
    assert.equal(await store.claim(claim), true);
    assert.equal(await store.claim({ ...claim, clusterId: 'c-other' }), false);
    assert.equal(await store.write(JSON.stringify(claim), [{ key: paths.kek(1), value: Buffer.from('{"epoch":1}') }]), true);
    assert.equal(await store.write(JSON.stringify({ ...claim, clusterId: 'c-other' }), [{ key: paths.kek(2), value: Buffer.from('{}') }]), false);
    const backedUp = Buffer.from('{"clusterId":"c-backup","state":"initialized"}');
    assert.equal(await store.commit(claim, backedUp), true);
    assert.equal(await store.commit(claim, Buffer.from('{}')), false, 'the claim is gone');
    assert.deepEqual(await ns.getAll().strings(), { [paths.cluster]: backedUp.toString(), [paths.kek(1)]: '{"epoch":1}' });
  });

  it('undo removes every backed-up entry and then the claim; a cluster whose record is not the claim any more is left alone', async () => {
    const ns = local.etcd.namespace('undo');
    const store = new BackupStore(ns);
    const claim: ClusterRecord = { clusterId: 'c-backup', state: 'restoring', kekEpoch: 0, createdAt: new Date().toISOString() };
    await store.claim(claim);
    await putAll(ns, [...durable.slice(1), ...keyPaths.slice(0, 10), ...live]);
    await store.undo(claim);
    assert.deepEqual(Object.keys(await ns.getAll().strings()).sort(), [...live].sort(), 'only live coordination state stays');

    const taken = local.etcd.namespace('taken');
    const other = new BackupStore(taken);
    await other.claim(claim);
    await taken.put(paths.cluster).value('{"clusterId":"c-new","state":"initialized"}'); // e.g. an init won meanwhile
    await taken.put(paths.manifest).value('{}');
    await other.undo(claim);
    assert.deepEqual(Object.keys(await taken.getAll().strings()).sort(), [paths.cluster, paths.manifest]);
  });
});
