/**
 * Key records across coordinator replicas and across lost etcd answers, against a real etcd
 * (what test/faults.suite.ts found under load, made deterministic):
 *  - a key created or aliased through one replica resolves at once through another whose watch
 *    has not delivered it (here: never delivers), by id, name and alias; an unknown reference
 *    is NOT_FOUND and grows nothing; a late watch event never replaces a newer record;
 *  - the etcd client does not resend a write whose answer was lost (it resends reads);
 *  - CreateKey, an update, a rotation, a destroy and an alias deletion whose answer was lost succeed, applied exactly once.
 *  - a key record altered in etcd (no valid record MAC) leaves the cache as the watch delivers it
 *    and every use fails with the integrity error until a valid record is back; a name that
 *    leads to a key of another name is refused.
 * Each "replica" is a Keyring of its own, with its own etcd client, in this process.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { TestEtcd } from '@keyshard/devcluster/test-etcd';
import { isKeyshardError } from '@keyshard/errors';
import { clusterNamespace, paths, type Namespace } from '@keyshard/store';
import { Keyring, type KeyRecord } from '../services/coordinator/src/keys/keyring.ts';
import { Seal } from '../services/coordinator/src/cluster/seal.ts';
import { RecordIntegrity, type IntegrityViolation } from '../services/coordinator/src/cluster/record-integrity.ts';
import type { Cluster } from '../services/coordinator/src/cluster/cluster.ts';
import { AnswerLosingLink } from './support/lost-answers.ts';

const CLUSTER = 'consistency';
const kek = randomBytes(32);
const recordMacKey = randomBytes(32); // every replica of one cluster holds the same one

const keyrings: Keyring[] = [];

/** A Keyring as a coordinator replica makes it, unsealed, on its own etcd client; `reports` collects integrity failures (none allowed without it). */
function replica(ns: Namespace, reports?: IntegrityViolation[]): Keyring {
  const seal = new Seal();
  seal.open(randomBytes(32), new Map([[1, Buffer.from(kek)]]), seal.generation, Buffer.from(recordMacKey));
  const record = { clusterId: 'c-consistency', state: 'initialized', kekEpoch: 1, createdAt: '' };
  const cluster = { requireInitialized: () => ({ record, manifest: {} }) } as unknown as Cluster;
  const integrity = new RecordIntegrity(seal, (v) => (reports ? reports.push(v) : assert.fail(`no record should fail its check here: ${v.path} (${v.reason})`)));
  const k = new Keyring(ns, cluster, seal, integrity, { minRotationPeriodSeconds: 60 });
  keyrings.push(k);
  return k;
}

/**
 * `ns` as a replica that has not heard yet: its watches never deliver (the test emits their
 * events itself, by prefix), and its reads are counted.
 */
function deaf(ns: Namespace): { ns: Namespace; watchers: Map<string, EventEmitter>; reads: () => number } {
  const watchers = new Map<string, EventEmitter>();
  let reads = 0;
  const watch = () => ({
    prefix: (prefix: string) => ({
      create: async () => {
        const w = Object.assign(new EventEmitter(), { cancel: async () => {} });
        watchers.set(prefix, w);
        return w;
      },
    }),
  });
  const get = (key: string) => {
    reads++;
    return ns.get(key);
  };
  const proxy = new Proxy(ns, { get: (target, prop) => (prop === 'watch' ? watch : prop === 'get' ? get : Reflect.get(target, prop, target)) });
  return { ns: proxy, watchers, reads: () => reads };
}

const code = (e: unknown) => (isKeyshardError(e) ? e.code : String(e));

describe('key records across replicas and lost etcd answers', { timeout: 120_000 }, () => {
  let etcd: TestEtcd;
  let link: AnswerLosingLink;
  let direct: Namespace; // what etcd holds, read without faults
  let lossy: () => Namespace; // through the link that loses answers

  before(async () => {
    etcd = await TestEtcd.start();
    link = await AnswerLosingLink.open(etcd.clientPort);
    direct = etcd.namespace(CLUSTER);
    const lossyClient = etcd.client(link.port);
    lossy = () => clusterNamespace(lossyClient, CLUSTER);
  });

  after(async () => {
    await Promise.all(keyrings.map((k) => k.close()));
    await link?.close();
    await etcd?.stop();
  });

  describe('read-your-writes across replicas', () => {
    let replicaA: Keyring;
    let b: ReturnType<typeof deaf>;
    let replicaB: Keyring;
    let k: KeyRecord;

    before(async () => {
      replicaA = replica(direct);
      b = deaf(direct);
      replicaB = replica(b.ns);
      await replicaB.warm(); // B is up and following before A writes
    });

    it('a key created and aliased through replica A resolves at once through B, whose watch has not delivered', async () => {
      k = await replicaA.create({ name: 'made-on-a' }, 'app');
      await replicaA.putAlias('made-on-a-alias', k);
      assert.equal((await replicaB.resolve(k.id)).id, k.id, 'by id');
      assert.equal((await replicaB.resolve('made-on-a')).id, k.id, 'by name');
      assert.equal((await replicaB.resolve('alias/made-on-a-alias')).id, k.id, 'by alias');
      assert.deepEqual(await replicaB.listAliases(k.id), [{ name: 'made-on-a-alias', keyId: k.id }], 'what was read is remembered');
    });

    it('an unknown reference is NOT_FOUND after one shared read, and nothing of it is kept', async () => {
      const before = b.reads();
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => replicaB.resolve('never-made')));
      assert.deepEqual(new Set(results.map((r) => r.status === 'rejected' && code(r.reason))), new Set(['NOT_FOUND']));
      assert.equal(b.reads() - before, 1, 'twenty concurrent lookups of one name cost one etcd read');
      await assert.rejects(replicaB.resolve('alias/never-made'), (e) => code(e) === 'NOT_FOUND');
      await assert.rejects(replicaB.resolve('no such name!'), (e) => code(e) === 'NOT_FOUND');
      assert.equal(b.reads() - before, 2, 'a reference no key can have is not read');
      assert.deepEqual((await replicaB.list(1000, '')).keys.map((r) => r.name), ['made-on-a'], 'misses are not cached');
    });

    it('a watch event arriving after a newer record was read directly does not replace it', async () => {
      const v1 = (await direct.get(paths.key(k.id)).exec()).kvs[0]!;
      await replicaA.rotate(k);
      assert.equal((await replicaB.fresh(k)).primaryVersion, 2, 'B reads the rotation');
      b.watchers.get(paths.keysPrefix)!.emit('put', v1); // the create's event, late
      assert.equal((await replicaB.resolve(k.id)).primaryVersion, 2);
    });

    it('an update through a replica whose cached record is stale applies to the stored one', async () => {
      const seenByB = await replicaB.resolve(k.id); // B caches the record it reads now
      await replicaA.update(k.id, (cur) => ({ ...cur, labels: { ...cur.labels, by: 'a' } }));
      assert.equal((await replicaB.resolve(k.id)).labels.by, seenByB.labels.by, "B's watch has not delivered A's change");
      const next = await replicaB.update(k.id, (cur) => ({ ...cur, description: `after ${cur.labels.by ?? 'nothing'}` }));
      assert.equal(next.description, 'after a', "B's change was made to A's record, not to its stale copy");
      const stored = JSON.parse((await direct.get(paths.key(k.id)).string())!) as KeyRecord;
      assert.deepEqual([stored.labels.by, stored.description], ['a', 'after a']);
    });

    it("a change refused on a replica's stale record is judged again on the stored one", async () => {
      await replicaA.update(k.id, (cur) => ({ ...cur, state: 'KEY_STATE_DISABLED' }));
      // B's cache still says enabled; enabling from there would be refused as "already enabled"
      // if B did not read the record the moment its cached one does not fit.
      const next = await replicaB.update(k.id, (cur) => {
        if (cur.state !== 'KEY_STATE_DISABLED') throw new Error('not disabled');
        return { ...cur, state: 'KEY_STATE_ENABLED' };
      });
      assert.equal(next.state, 'KEY_STATE_ENABLED');
    });

    it('a deleted alias is not revived by an older event', async () => {
      const put = (await direct.get(paths.alias('made-on-a-alias')).exec()).kvs[0]!;
      await replicaA.deleteAlias('made-on-a-alias', k.id);
      const deletedAt = (await direct.get(paths.alias('made-on-a-alias')).exec()).header.revision;
      const aliases = b.watchers.get(paths.alias(''))!;
      aliases.emit('delete', { ...put, mod_revision: deletedAt });
      aliases.emit('put', put); // its creation, late
      await assert.rejects(replicaB.resolve('alias/made-on-a-alias'), (e) => code(e) === 'NOT_FOUND');
      assert.deepEqual(await replicaB.listAliases(), []);
    });
  });

  describe('lost answers', () => {
    let replicaA: Keyring;
    let k: KeyRecord;

    before(async () => {
      replicaA = replica(lossy());
      k = await replicaA.create({ name: 'lost-answers' }, 'app');
    });

    it('the etcd client does not resend a put whose answer was lost, and resends a read', async () => {
      const ns = lossy();
      await ns.put('probe').value('up');
      let lost = link.loseAnswerTo(1);
      await assert.rejects(ns.put('once').value('1').exec());
      await lost;
      assert.equal((await direct.get('once').exec()).kvs[0]?.version, '1', 'the put was applied once');
      lost = link.loseAnswerTo(1);
      assert.equal(await ns.get('once').string(), '1');
      await lost;
    });

    it('CreateKey whose answer was lost returns the key it made, made once', async () => {
      const lost = link.loseAnswerTo(1);
      const made = await replicaA.create({ name: 'lost-create' }, 'app');
      await lost;
      assert.equal(await direct.get(paths.name('lost-create')).string(), made.id);
      const records = Object.values(await direct.getAll().prefix(paths.keysPrefix).strings()).map((v) => JSON.parse(v) as KeyRecord);
      assert.deepEqual(records.filter((r) => r.name === 'lost-create').map((r) => r.id), [made.id]);
    });

    it('concurrent creates share transactions, each with its own outcome; one name is made once', async () => {
      const names = Array.from({ length: 40 }, (_, i) => `batched-${i}`);
      const results = await Promise.allSettled([
        ...names.map((name) => replicaA.create({ name }, 'app')),
        ...Array.from({ length: 5 }, () => replicaA.create({ name: 'batched-twice' }, 'app')),
      ]);
      const made = results.slice(0, 40).map((r) => (r.status === 'fulfilled' ? r.value : assert.fail(String((r as PromiseRejectedResult).reason))));
      for (const [i, k] of made.entries()) {
        assert.equal(await direct.get(paths.name(names[i]!)).string(), k.id);
        assert.equal((await replicaA.resolve(k.id)).name, names[i]);
      }
      const twice = results.slice(40);
      assert.equal(twice.filter((r) => r.status === 'fulfilled').length, 1, 'one create of the name applies');
      for (const r of twice) if (r.status === 'rejected') assert.equal(code(r.reason), 'ALREADY_EXISTS');
      const winner = twice.find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<KeyRecord>;
      assert.equal(await direct.get(paths.name('batched-twice')).string(), winner.value.id);
      const records = Object.values(await direct.getAll().prefix(paths.keysPrefix).strings()).map((v) => JSON.parse(v) as KeyRecord);
      assert.equal(records.filter((r) => r.name === 'batched-twice').length, 1, 'the losers wrote nothing');
    });

    it('creates batched into a transaction whose answer was lost are each made once', async () => {
      const lost = link.loseAnswerTo(1);
      const names = Array.from({ length: 20 }, (_, i) => `lost-batch-${i}`);
      const made = await Promise.all(names.map((name) => replicaA.create({ name }, 'app')));
      await lost;
      const records = Object.values(await direct.getAll().prefix(paths.keysPrefix).strings()).map((v) => JSON.parse(v) as KeyRecord);
      for (const [i, k] of made.entries()) {
        assert.equal(await direct.get(paths.name(names[i]!)).string(), k.id);
        assert.deepEqual(records.filter((r) => r.name === names[i]).map((r) => r.id), [k.id]);
      }
    });

    it('an update whose answer was lost is applied once', async () => {
      const lost = link.loseAnswerTo(1); // its compare-and-swap, from the record A has cached
      const next = await replicaA.update(k.id, (cur) => ({ ...cur, labels: { ...cur.labels, n: String(Number(cur.labels.n ?? '0') + 1) } }));
      await lost;
      assert.equal(next.labels.n, '1');
      assert.equal((JSON.parse((await direct.get(paths.key(k.id)).string())!) as KeyRecord).labels.n, '1');
    });

    it('a rotation whose answer was lost adds one version, whose material is the one kept', async () => {
      const lost = link.loseAnswerTo(1); // as for the update
      const rotated = await replicaA.rotate(k);
      await lost;
      assert.equal(rotated?.primaryVersion, 2);
      assert.equal(Object.keys(await direct.getAll().prefix(paths.versionsPrefix(k.id)).strings()).length, 2);
      assert.equal((JSON.parse((await direct.get(paths.key(k.id)).string())!) as KeyRecord).primaryVersion, 2);
      assert.deepEqual(await replicaA.material(rotated!, 2), await replica(direct).material(rotated!, 2), 'the cached material is the stored one');
    });

    it('a destroy whose answer was lost reports the revision it applied at (for the compaction)', async () => {
      const doomed = await replicaA.create({ name: 'lost-destroy' }, 'app');
      await replicaA.update(doomed.id, (cur) => ({ ...cur, state: 'KEY_STATE_PENDING_DESTRUCTION', destructionAt: new Date(Date.now() - 1000).toISOString() }));
      const lost = link.loseAnswerTo(2); // 1: the read of the record, 2: the destroy transaction
      const revision = await replicaA.destroy(doomed.id);
      await lost;
      const stored = (await direct.get(paths.key(doomed.id)).exec()).kvs[0]!;
      assert.equal((JSON.parse(stored.value.toString()) as KeyRecord).state, 'KEY_STATE_DESTROYED');
      assert.equal(revision, stored.mod_revision);
      assert.deepEqual(await direct.getAll().prefix(paths.versionsPrefix(doomed.id)).keys(), []);
    });

    it('an alias deletion whose answer was lost succeeds: the alias is gone', async () => {
      await replicaA.putAlias('lost-delete', k);
      const lost = link.loseAnswerTo(2); // 1: the read of the alias, 2: the deletion
      await replicaA.deleteAlias('lost-delete', k.id);
      await lost;
      assert.equal((await direct.get(paths.alias('lost-delete')).exec()).kvs.length, 0);
      await assert.rejects(replicaA.resolve('alias/lost-delete'), (e) => code(e) === 'NOT_FOUND');
    });
  });

  describe('records altered in etcd', () => {
    // A cluster prefix of its own: the other tests' replicas watch theirs and allow no failure.
    let direct: Namespace;
    before(() => {
      direct = etcd.namespace('tampered');
    });

    it('an altered key record from the watch leaves the cache: every use fails with the integrity error until the valid record is back', async () => {
      const reports: IntegrityViolation[] = [];
      const a = replica(direct, reports);
      const k = await a.create({ name: 'tamper-me' }, 'admin');
      await a.warm();
      const original = (await direct.get(paths.key(k.id)).string())!;
      const altered = JSON.parse(original) as KeyRecord;
      altered.policy = { decrypt: ['app'] };
      await direct.put(paths.key(k.id)).value(JSON.stringify(altered));
      const isIntegrity = (e: unknown) => code(e) === 'FAILED_PRECONDITION' && /record keys\/k_\S+ failed its integrity check/.test((e as Error).message);
      for (let i = 0; ; i++) {
        const r = await a.resolve(k.id).then(() => undefined, (e: unknown) => e);
        if (r !== undefined) {
          assert.ok(isIntegrity(r), String(r));
          break;
        }
        assert.ok(i < 100, 'the watch delivers the altered record');
        await new Promise((res) => setTimeout(res, 20));
      }
      await assert.rejects(a.resolve('tamper-me'), isIntegrity);
      await assert.rejects(a.update(k.id, (cur) => cur), isIntegrity);
      assert.equal((await a.list(1000, '')).keys.some((r) => r.id === k.id), false, 'not listed from the cache');
      assert.deepEqual(reports, [{ path: paths.key(k.id), reason: 'MAC mismatch' }], 'reported once, however often it is read');
      await direct.put(paths.key(k.id)).value(original);
      for (let i = 0; !(await a.resolve(k.id).then(() => true, () => false)); i++) {
        assert.ok(i < 100, 'the valid record is taken back');
        await new Promise((res) => setTimeout(res, 20));
      }
      assert.deepEqual((await a.resolve(k.id)).policy, {});
    });

    it('a name that leads to a key of another name is refused', async () => {
      const reports: IntegrityViolation[] = [];
      const a = replica(direct);
      const real = await a.create({ name: 'real-name' }, 'admin');
      await direct.put(paths.name('forged-name')).value(real.id);
      const fresh = replica(deaf(direct).ns, reports); // knows nothing yet: reads the name from etcd
      await assert.rejects(fresh.resolve('forged-name'), (e) => code(e) === 'FAILED_PRECONDITION' && /record names\/forged-name failed its integrity check/.test((e as Error).message));
      assert.equal(reports[0]?.path, 'names/forged-name');
    });
  });
});
