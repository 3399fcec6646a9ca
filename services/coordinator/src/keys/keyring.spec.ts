/**
 * The keyring and its store against a real single-member etcd (one per file), no custodian, no
 * HSM: every write is a compare-and-swap (creates, updates, rotations, the destroy and every alias
 * change), a stale revision writes nothing, and a record altered in etcd is refused and reported.
 * Lost answers (the resends of those compare-and-swaps) are in test/replica-consistency.test.ts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestEtcd } from '@keyshard/devcluster/test-etcd';
import { isKeyshardError } from '@keyshard/errors';
import { paths, type Namespace } from '@keyshard/store';
import type { Keyring } from './keyring.ts';
import { tombstoneOf, type KeyRecord } from './key-record.ts';
import { UsageStore } from './usage-store.ts';
import { clusterSecrets, testKeyring, testReplica, type ClusterSecrets } from './test-keys.ts';

const code = (e: unknown) => (isKeyshardError(e) ? e.code : String(e));
const rejectsWith = (p: Promise<unknown>, c: string, message?: RegExp) =>
  assert.rejects(p, (e) => code(e) === c && (!message || message.test((e as Error).message)));

describe('keyring (real etcd, no custodian)', { timeout: 60_000 }, () => {
  let etcd: TestEtcd;
  const keyrings: Keyring[] = [];
  /** A replica of cluster `secrets` on `ns`, closed after the file. */
  const replica = (ns: Namespace, secrets: ClusterSecrets, minRotationPeriodSeconds?: number) => {
    const r = testReplica(secrets);
    const made = testKeyring(ns, r, minRotationPeriodSeconds);
    keyrings.push(made.keyring);
    return { ...r, ...made };
  };

  before(async () => {
    etcd = await TestEtcd.start();
  });
  after(async () => {
    await Promise.all(keyrings.map((k) => k.close()));
    await etcd?.stop();
  });

  describe('writes', () => {
    let ns: Namespace;
    let a: ReturnType<typeof replica>;
    let b: ReturnType<typeof replica>;

    before(() => {
      ns = etcd.namespace('writes');
      const secrets = clusterSecrets();
      a = replica(ns, secrets, 1);
      b = replica(ns, secrets, 1);
    });

    it('create writes the name, the MAC-stamped record and version 1 together; a second key of that name is ALREADY_EXISTS', async () => {
      const k = await a.keyring.create({ name: 'alpha' }, 'app');
      assert.equal(await ns.get(paths.name('alpha')).string(), k.id);
      assert.ok(JSON.parse((await ns.get(paths.key(k.id)).string())!).mac, 'the record carries its MAC');
      assert.deepEqual(await ns.getAll().prefix(paths.versionsPrefix(k.id)).keys(), [paths.version(k.id, 1)]);
      assert.equal((await b.keyring.resolve('alpha')).id, k.id, 'another replica resolves it by name at once');
      await rejectsWith(b.keyring.create({ name: 'alpha' }, 'app'), 'ALREADY_EXISTS');
      const records = Object.values(await ns.getAll().prefix(paths.keysPrefix).strings()).map((v) => JSON.parse(v) as KeyRecord);
      assert.equal(records.filter((r) => r.name === 'alpha').length, 1, 'the refused create wrote nothing');
    });

    it('concurrent updates through two replicas lose none: the stored count is the number that applied', async () => {
      const k = await a.keyring.create({ name: 'counted' }, 'app');
      await b.keyring.resolve(k.id);
      const bump = (cur: KeyRecord) => ({ ...cur, labels: { n: String(Number(cur.labels.n ?? '0') + 1) } });
      const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).keyring.update(k.id, bump)));
      const applied = results.filter((r) => r.status === 'fulfilled').length;
      for (const r of results) if (r.status === 'rejected') assert.equal(code(r.reason), 'UNAVAILABLE', String(r.reason));
      assert.ok(applied > 0);
      assert.equal((JSON.parse((await ns.get(paths.key(k.id)).string())!) as KeyRecord).labels.n, String(applied));
    });

    it('a swap from a stale revision conflicts and writes nothing', async () => {
      const k = await a.keyring.create({ name: 'stale' }, 'app');
      const seen = (await a.store.key(k.id))!;
      await a.keyring.update(k.id, (cur) => ({ ...cur, description: 'newer' }));
      assert.deepEqual(await a.store.swap(k.id, seen.revision, { ...seen.record!, description: 'from the stale record' }), { outcome: 'conflict' });
      assert.equal((await a.store.key(k.id))!.record!.description, 'newer');
    });

    it('rotate adds a version in the same compare-and-swap; ifPrimary and ifDueAt rotate only while still so', async () => {
      const k = await a.keyring.create({ name: 'rotating', rotationPeriodSeconds: 1 }, 'app');
      assert.equal(await b.keyring.rotate(k, { ifDueAt: Date.now() - 10_000 }), undefined, 'not due yet');
      assert.ok(a.keyring.due(Date.now() + 2_000).some((d) => d.id === k.id));
      const r = (await b.keyring.rotate(k, { ifDueAt: Date.now() + 2_000 }))!;
      assert.equal(r.primaryVersion, 2);
      assert.ok(Date.parse(r.rotation.nextRotationAt) > Date.parse(k.rotation.nextRotationAt), 'the next rotation moved on');
      assert.equal(await a.keyring.rotate(k, { ifPrimary: 1 }), undefined, 'version 1 is no longer primary');
      assert.equal((await ns.getAll().prefix(paths.versionsPrefix(k.id)).keys()).length, 2);
      assert.deepEqual(await a.keyring.material(r, 2), await b.keyring.material(r, 2), 'each replica unwraps the one version stored');
    });

    it('a fenced write by a leader that lost its election key is refused and writes nothing', async () => {
      const k = await a.keyring.create({ name: 'fenced' }, 'app');
      const fence = { key: 'elections/none', createRevision: '7', held: async () => false };
      await rejectsWith(a.keyring.rotate(k, { fence }), 'FAILED_PRECONDITION', /fenced off/);
      assert.equal((await a.store.key(k.id))!.record!.primaryVersion, 1);
    });

    it('destroy is a compare-and-swap: refused before its date or unless pending; from a stale revision it deletes nothing; done, it leaves a tombstone and deletes versions and usage', async () => {
      const k = await a.keyring.create({ name: 'doomed' }, 'app');
      await a.keyring.rotate(k);
      await new UsageStore(ns, a.integrity).change(k.id, 1, 1, () => ({ encryptions: 5, lastUsedAt: '' }));
      const unwrapped = await a.keyring.material(k, 1); // the buffer the keyring keeps
      await rejectsWith(a.keyring.destroy(k.id), 'FAILED_PRECONDITION', /not pending destruction/);
      const pending = (at: number) => (cur: KeyRecord): KeyRecord => ({ ...cur, state: 'KEY_STATE_PENDING_DESTRUCTION', destructionAt: new Date(at).toISOString() });
      await a.keyring.update(k.id, pending(Date.now() + 60_000));
      await rejectsWith(a.keyring.destroy(k.id), 'FAILED_PRECONDITION', /may not be destroyed before/);
      await a.keyring.update(k.id, pending(Date.now() - 1_000));
      const stale = (await a.store.key(k.id))!;
      await a.keyring.update(k.id, (cur) => ({ ...cur, description: 'changed meanwhile' }));
      assert.deepEqual(await a.store.destroy(k.id, stale.revision, tombstoneOf(stale.record!)), { outcome: 'conflict' });
      assert.equal((await ns.getAll().prefix(paths.versionsPrefix(k.id)).keys()).length, 2, 'the conflicting destroy deleted nothing');

      const revision = await a.keyring.destroy(k.id);
      const stored = (await ns.get(paths.key(k.id)).exec()).kvs[0]!;
      assert.equal(revision, stored.mod_revision);
      const tombstone = JSON.parse(stored.value.toString()) as KeyRecord;
      assert.deepEqual([tombstone.state, tombstone.policy, tombstone.description], ['KEY_STATE_DESTROYED', {}, 'changed meanwhile']);
      assert.deepEqual(await ns.getAll().prefix(paths.versionsPrefix(k.id)).keys(), []);
      assert.deepEqual(await ns.getAll().prefix(paths.keyUsagePrefix(k.id)).keys(), []);
      assert.deepEqual(unwrapped, Buffer.alloc(unwrapped.length), 'the unwrapped material was zeroized');
      await rejectsWith(a.keyring.material(k, 1), 'NOT_FOUND', /has no version 1/);
      assert.equal((await b.keyring.resolve(k.id)).state, 'KEY_STATE_DESTROYED');
    });

    it('aliases: created only if absent; repointed or deleted only while naming the key the caller saw, by compare-and-swap', async () => {
      const one = await a.keyring.create({ name: 'alias-one' }, 'app');
      const two = await a.keyring.create({ name: 'alias-two' }, 'app');
      await a.keyring.putAlias('current', one);
      assert.equal((await b.keyring.resolve('alias/current')).id, one.id);
      await rejectsWith(b.keyring.putAlias('current', two), 'ALREADY_EXISTS');
      await rejectsWith(b.keyring.putAlias('current', two, two.id), 'UNAVAILABLE', /changed meanwhile/);
      await b.keyring.putAlias('current', two, one.id);
      assert.equal((await a.store.alias('current'))?.record.keyId, two.id);
      await rejectsWith(a.keyring.deleteAlias('current', one.id), 'UNAVAILABLE', /changed meanwhile/);
      const seen = (await a.store.alias('current'))!;
      await a.keyring.putAlias('current', two, two.id); // rewritten: a new revision
      assert.deepEqual(await a.store.deleteAlias('current', seen.revision), { outcome: 'conflict' });
      assert.equal((await a.store.alias('current'))?.record.keyId, two.id, 'the stale deletion deleted nothing');
      await a.keyring.deleteAlias('current', two.id);
      assert.equal(await a.store.alias('current'), undefined);
      await rejectsWith(a.keyring.resolve('alias/current'), 'NOT_FOUND');
      assert.deepEqual(await a.keyring.listAliases(two.id), []);
    });
  });

  describe('records altered in etcd', () => {
    it('a key record, a misplaced record and an alias that fail their checks are refused with the integrity error and reported', async () => {
      const ns = etcd.namespace('altered');
      const secrets = clusterSecrets();
      const a = replica(ns, secrets);
      const k = await a.keyring.create({ name: 'victim' }, 'admin');
      const other = await a.keyring.create({ name: 'other' }, 'admin');
      await a.keyring.putAlias('pointer', k);
      const original = (await ns.get(paths.key(k.id)).string())!;
      await ns.put(paths.key(k.id)).value(JSON.stringify({ ...JSON.parse(original), policy: { decrypt: ['mallory'] } })); // its MAC kept: no longer matches
      await ns.put(paths.key(other.id)).value(original); // k's valid record in other's place: its MAC binds its path
      await ns.put(paths.alias('pointer')).value(JSON.stringify({ keyId: other.id })); // no MAC

      const fresh = replica(ns, secrets); // knows nothing yet: reads what etcd holds now
      const integrity = (path: string) => (e: unknown) => code(e) === 'FAILED_PRECONDITION' && (e as Error).message.includes(`record ${path} failed its integrity check`);
      await assert.rejects(fresh.keyring.resolve(k.id), integrity(paths.key(k.id)));
      await assert.rejects(fresh.keyring.update(k.id, (cur) => cur), integrity(paths.key(k.id)));
      await assert.rejects(fresh.keyring.resolve('alias/pointer'), integrity(paths.alias('pointer')));
      await assert.rejects(fresh.keyring.resolve(other.id), integrity(paths.key(other.id)));
      assert.deepEqual(new Set(fresh.reports.map((r) => `${r.path}: ${r.reason}`)), new Set([
        `${paths.key(k.id)}: MAC mismatch`,
        `${paths.alias('pointer')}: no MAC`,
        `${paths.key(other.id)}: MAC mismatch`,
      ]));
    });
  });

  it('sealed: the keyring refuses every call and keeps no material', async () => {
    const ns = etcd.namespace('sealed');
    const a = replica(ns, clusterSecrets());
    const k = await a.keyring.create({ name: 'sealed-key' }, 'app');
    await a.keyring.material(k, 1);
    a.seal.seal();
    const calls = [
      () => a.keyring.resolve(k.id),
      () => a.keyring.create({ name: 'later' }, 'app'),
      () => a.keyring.update(k.id, (cur) => cur),
      () => a.keyring.material(k, 1),
      () => a.keyring.list(0, ''),
    ];
    for (const call of calls) await rejectsWith(call(), 'FAILED_PRECONDITION', /sealed/);
  });
});
