/**
 * ClusterStore against a real single-member etcd (TestEtcd; no custodians, no HSM): the cluster
 * record's compare-and-swaps, KEK records round trip, the share-set switch, and records whose
 * MAC fails (seal epoch, share-set-next) refused and reported, never used.
 */
import { beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { splitRootKey, type ShareManifest } from '@keyshard/crypto';
import { isKeyshardError } from '@keyshard/errors';
import { paths, type Namespace } from '@keyshard/store';
import { ClusterStore, kekRecord, recordMacKeyRecord, unwrapKekRecord, unwrapRecordMacKeyRecord, type ClusterRecord } from './cluster-store.ts';
import { collectingIntegrity, etcdForTests, FakeCustodian, unsealed, until } from './test-support.ts';
import { Seal } from './seal.ts';

const code = (e: unknown) => (isKeyshardError(e) ? e.code : String(e));
const record = (state: ClusterRecord['state'], clusterId = 'c-store'): ClusterRecord => ({ clusterId, state, kekEpoch: state === 'initialized' ? 1 : 0, createdAt: new Date().toISOString() });

describe('ClusterStore', { timeout: 60_000 }, () => {
  const local = etcdForTests();
  let ns: Namespace;
  let n = 0;
  const custodians = ['c1', 'c2', 'c3'].map((id) => new FakeCustodian(id));
  const manifestOf = async (root: Buffer, generation = 1): Promise<ShareManifest> => (await splitRootKey(root, 'c-store', custodians.map((c) => c.keys), 2, generation)).manifest;

  beforeEach(() => {
    ns = local.etcd.namespace(`store-${++n}`); // a fresh cluster per test
  });

  it('the cluster record: of two concurrent claims exactly one wins; init commits manifest, KEK, record MAC key and record once', async () => {
    const { integrity } = unsealed();
    const [a, b] = [new ClusterStore(ns, integrity), new ClusterStore(local.etcd.namespace(`store-${n}`), integrity)];
    const claims = await Promise.all([a.claim(record('initializing', 'c-a')), b.claim(record('initializing', 'c-b'))]);
    assert.deepEqual(claims.filter(Boolean).length, 1);
    assert.equal(await a.claim(record('initializing')), false, 'a claim never replaces a record');
    const root = randomBytes(32);
    const manifest = await manifestOf(root);
    const init = { manifest, kek: kekRecord(root, 'c-store', 1, randomBytes(32)), recordMacKey: recordMacKeyRecord(root, 'c-store', randomBytes(32)), record: record('initialized') };
    assert.equal(await a.commitInit(init), true);
    assert.equal(await b.commitInit({ ...init, record: record('initialized', 'c-other') }), false, 'a second init finds the manifest and writes nothing');
    assert.deepEqual(await b.load(), { record: init.record, manifest });
  });

  it('KEK records round trip: each unwraps under the root it was wrapped with, at its own epoch; a record at another epoch\'s path is refused', async () => {
    const { integrity } = unsealed();
    const store = new ClusterStore(ns, integrity);
    const [root, kek1, macKey] = [randomBytes(32), randomBytes(32), randomBytes(32)];
    const manifest = await manifestOf(root);
    await store.commitInit({ manifest, kek: kekRecord(root, 'c-store', 1, kek1), recordMacKey: recordMacKeyRecord(root, 'c-store', macKey), record: record('initialized') });
    let stored = await store.wrappedKeys();
    assert.deepEqual(stored.keks.map((k) => k.epoch), [1]);
    assert.deepEqual(unwrapKekRecord(root, 'c-store', stored.keks[0]!), kek1);
    assert.deepEqual(unwrapRecordMacKeyRecord(root, 'c-store', stored.recordMacKey!), macKey);

    // A root rotation re-wraps every KEK and the record MAC key under the new root, with the new manifest, at once.
    const [newRoot, kek2] = [randomBytes(32), randomBytes(32)];
    const { revision } = await store.manifest();
    const rewrapped = { keks: [kekRecord(newRoot, 'c-store', 1, kek1), kekRecord(newRoot, 'c-store', 2, kek2)], recordMacKey: recordMacKeyRecord(newRoot, 'c-store', macKey) };
    assert.equal(await store.switchShareSet(await manifestOf(newRoot, 2), revision, rewrapped), true);
    stored = await store.wrappedKeys();
    assert.deepEqual(stored.keks.map((k) => unwrapKekRecord(newRoot, 'c-store', k)), [kek1, kek2]);
    assert.deepEqual(unwrapRecordMacKeyRecord(newRoot, 'c-store', stored.recordMacKey!), macKey);
    assert.throws(() => unwrapKekRecord(root, 'c-store', stored.keks[0]!), 'the old root opens nothing');
    assert.throws(() => unwrapKekRecord(newRoot, 'c-other', stored.keks[0]!), 'bound to its cluster');

    await ns.put(paths.kek(3)).value(JSON.stringify(stored.keks[1]));
    await assert.rejects(store.wrappedKeys(), (e) => code(e) === 'INTERNAL' && /keks\/3 holds the KEK of epoch 2/.test((e as Error).message));
  });

  it('a share-set switch applies only to the manifest it read: a stale one changes nothing', async () => {
    const { integrity } = unsealed();
    const store = new ClusterStore(ns, integrity);
    const root = randomBytes(32);
    const [g1, g2, g3] = [await manifestOf(root), await manifestOf(root, 2), await manifestOf(root, 3)];
    assert.equal(await store.switchShareSet(g1, undefined), true, 'none yet: created');
    assert.equal(await store.switchShareSet(g1, undefined), false, 'no longer absent');
    const read = await store.manifest();
    assert.deepEqual(read.manifest, g1);
    assert.equal(await store.switchShareSet(g2, read.revision), true);
    assert.equal(await store.switchShareSet(g3, read.revision), false, 'another replica switched since');
    assert.deepEqual((await store.manifest()).manifest, g2);
  });

  it('share-set-next: a reservation reads back; one altered or not a generation is refused with the integrity error and reported', async () => {
    const { integrity, reports } = unsealed();
    const store = new ClusterStore(ns, integrity);
    assert.equal(await store.reservedGeneration(), 0, 'none reserved');
    await store.reserveShareSet(4);
    assert.equal(await store.reservedGeneration(), 4);
    const stored = (await ns.get(paths.shareSetNext).string())!;
    await ns.put(paths.shareSetNext).value(stored.replace('"generation":4', '"generation":2'));
    await assert.rejects(store.reservedGeneration(), (e) => code(e) === 'FAILED_PRECONDITION' && /record share-set-next failed its integrity check/.test((e as Error).message));
    await ns.put(paths.shareSetNext).value(integrity.stamp(paths.shareSetNext, { generation: -1 }));
    await assert.rejects(store.reservedGeneration(), (e) => code(e) === 'FAILED_PRECONDITION');
    assert.deepEqual(reports, [
      { path: paths.shareSetNext, reason: 'MAC mismatch' },
      { path: paths.shareSetNext, reason: 'not a generation' },
    ]);
  });

  it('seal epoch: each rise is a compare-and-swap above the stored epoch and the one seen; an altered epoch is refused, reported and never heard', async () => {
    const macKey = randomBytes(32);
    const { integrity, reports } = unsealed(macKey);
    const store = new ClusterStore(ns, integrity);
    const heard: [number, boolean][] = [];
    local.stopAfter({ stop: await store.watchSealEpoch((epoch, verified) => heard.push([epoch, verified])) });
    const stamper = integrity.detachedStamper();
    assert.deepEqual(await Promise.all([store.raiseSealEpoch(0, stamper), store.raiseSealEpoch(0, stamper)]).then((r) => r.sort()), [1, 2], 'two rises at once: both count');
    assert.equal(await store.raiseSealEpoch(5, stamper), 6, 'above the epoch this replica has seen');
    const valid = (await ns.get(paths.sealEpoch).string())!;
    await ns.put(paths.sealEpoch).value(valid.replace('"epoch":6', '"epoch":7'));
    assert.equal(await store.raiseSealEpoch(0, stamper), 8, 'the stored epoch is only raised, even if altered');
    stamper.close();
    await until('the last rise is heard', () => heard.some(([e]) => e === 8));
    assert.deepEqual(heard, [[1, true], [2, true], [6, true], [8, true]], 'the altered epoch 7 is not heard');
    assert.deepEqual(reports, [{ path: paths.sealEpoch, reason: 'MAC mismatch' }]);
    assert.equal(await store.sealEpoch(), 8);

    // A sealed replica has no key: it follows the epoch unchecked.
    const seal = new Seal();
    const sealed = new ClusterStore(local.etcd.namespace(`store-${n}`), collectingIntegrity(seal).integrity);
    const followed: [number, boolean][] = [];
    local.stopAfter({ stop: await sealed.watchSealEpoch((epoch, verified) => followed.push([epoch, verified])) });
    await ns.put(paths.sealEpoch).value(valid.replace('"epoch":6', '"epoch":9'));
    await until('the sealed replica follows', () => followed.length > 0);
    assert.deepEqual(followed, [[9, false]]);
  });

  it('erase removes every durable record, the locks and every ceremony but the one kept; registrations, election and seal epoch stay', async () => {
    const { integrity } = unsealed();
    const store = new ClusterStore(ns, integrity);
    const kept = [paths.ceremony('destroy-1'), paths.coordinator('coordinator-1'), paths.sealEpoch, 'election/leader/1'];
    const erased = [
      paths.cluster, paths.manifest, paths.kek(1), paths.recordMacKey, paths.key('k1'), paths.version('k1', 1), paths.usage('k1', 1),
      paths.name('n'), paths.alias('a'), paths.ceremony('unseal-1'), paths.ceremonyLock('reshare'), paths.shareSetNext,
      // More ceremonies than etcd takes operations in one transaction (128): one delete each failed destroy-cluster.
      ...Array.from({ length: 150 }, (_, i) => paths.ceremony(`c-${String(i).padStart(3, '0')}`)),
      paths.ceremony('destroy-0'), paths.ceremony('destroy-10'), paths.ceremony('destroy-1x'),
    ];
    for (const k of [...kept, ...erased]) await ns.put(k).value('{}');
    const revision = await store.erase('destroy-1');
    assert.match(revision, /^\d+$/);
    assert.deepEqual(Object.keys(await ns.getAll().strings()).sort(), [...kept].sort());
    assert.equal((await store.load()).record, undefined);
  });

  it('a share export is stored under a record MAC and refused by a sealed replica, which cannot check it', async () => {
    const { seal, integrity } = unsealed();
    const store = new ClusterStore(ns, integrity);
    const exported = {
      ceremony_id: 'x-1', cluster_id: 'c-store', custodian_id: 'c1', generation: 1, peers_json: '[]', wrapped_share: 'AAAA',
      recovery_key_fingerprint: 'f', oaep_hash: 'sha256', succession_statement: '',
    };
    await store.putShareExport(exported);
    assert.deepEqual(await store.shareExport('x-1'), exported);
    assert.equal(await store.shareExport('x-2'), undefined);
    seal.seal();
    await assert.rejects(store.shareExport('x-1'), (e) => code(e) === 'FAILED_PRECONDITION' && /sealed/.test((e as Error).message));
  });
});
