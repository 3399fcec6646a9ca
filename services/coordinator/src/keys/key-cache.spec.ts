/**
 * The key cache against a real single-member etcd (one per file), records written through the
 * key store: it loads and then follows etcd, reads a miss once however many ask, keeps the
 * newest write of each record and alias, and never keeps a record that fails its check.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { TestEtcd } from '@keyshard/devcluster/test-etcd';
import { isKeyshardError } from '@keyshard/errors';
import { paths, type Namespace } from '@keyshard/store';
import { KeyCache } from './key-cache.ts';
import { newKeyRecord, tombstoneOf, type KeyRecord } from './key-record.ts';
import { KeyStore } from './key-store.ts';
import { clusterSecrets, testReplica, type TestReplica } from './test-keys.ts';

const code = (e: unknown) => (isKeyshardError(e) ? e.code : String(e));

/** A key store that counts its reads of key records and names. */
class CountingStore extends KeyStore {
  reads = 0;
  override key(id: string) {
    this.reads++;
    return super.key(id);
  }
  override keyIdOfName(name: string) {
    this.reads++;
    return super.keyIdOfName(name);
  }
}

/** Waits (at most 2 s) until `ready()`; fails saying `what` was awaited. */
async function until(what: string, ready: () => boolean): Promise<void> {
  for (let i = 0; !ready(); i++) {
    assert.ok(i < 100, `within 2 s: ${what}`);
    await delay(20);
  }
}

describe('key cache (real etcd)', { timeout: 60_000 }, () => {
  let etcd: TestEtcd;
  let ns: Namespace;
  let replica: TestReplica;
  let writer: KeyStore; // another replica's writes
  const caches: KeyCache[] = [];
  const cacheOn = (store = new KeyStore(ns, replica.integrity), onDestroyed: (id: string) => void = () => {}) => {
    const c = new KeyCache(store, onDestroyed);
    caches.push(c);
    return c;
  };

  /** Creates key `name` in etcd through the writer; returns its record and the revision it was written at. */
  async function made(name: string): Promise<{ k: KeyRecord; revision: string }> {
    const k = newKeyRecord({ id: `k_${randomBytes(16).toString('base64url')}`, name, type: 'aes256-gcm', description: '', labels: {}, policy: {}, periodSeconds: 0 }, 'app', new Date());
    const res = await writer.create(k, { version: 1, kekEpoch: 1, wrapped: '', createdAt: k.createdAt });
    assert.equal(res.outcome, 'applied');
    return { k, revision: (res as { revision: string }).revision };
  }

  before(async () => {
    etcd = await TestEtcd.start();
    ns = etcd.namespace('cache');
    replica = testReplica(clusterSecrets());
    writer = new KeyStore(ns, replica.integrity);
  });
  after(async () => {
    await Promise.all(caches.map((c) => c.close()));
    await etcd?.stop();
  });

  it('loads what etcd holds, then follows what other replicas write', async () => {
    const { k } = await made('loaded');
    await writer.putAlias('loaded-alias', k.id);
    const cache = cacheOn();
    await cache.load();
    assert.equal(cache.entry(k.id)?.record.name, 'loaded');
    assert.ok(cache.aliases().some(([name, id]) => name === 'loaded-alias' && id === k.id));
    const later = await made('later');
    const stored = (await writer.key(k.id))!;
    await writer.swap(k.id, stored.revision, { ...k, description: 'changed elsewhere' });
    await until('the watch delivers the new key and the change', () => cache.entry(later.k.id) !== undefined && cache.entry(k.id)?.record.description === 'changed elsewhere');
  });

  it('concurrent lookups of a missing reference share one read, and nothing of it is kept', async () => {
    const store = new CountingStore(ns, replica.integrity);
    const cache = cacheOn(store);
    const found = await Promise.all(Array.from({ length: 20 }, () => cache.lookup({ name: 'never-made' })));
    assert.deepEqual(new Set(found), new Set([undefined]));
    assert.equal(store.reads, 1);
    const { k } = await made('read-on-miss'); // not loaded, not followed: known only by reading etcd
    assert.equal((await cache.lookup({ name: 'read-on-miss' }))?.id, k.id);
    assert.equal((await cache.lookup({ id: k.id }))?.id, k.id, 'kept once read');
    assert.equal(store.reads, 3, 'the name and the record, then nothing');
    assert.deepEqual(cache.page('', 10).keys.map((r) => r.name), ['read-on-miss']);
  });

  it('newest wins: an older write of a record or an alias never replaces a newer one, an alias deletion included', async () => {
    const cache = cacheOn();
    const { k, revision } = await made('ordered');
    const newer = { ...k, description: 'newer' };
    cache.remember(newer, String(BigInt(revision) + 5n));
    cache.remember(k, revision);
    assert.equal(cache.entry(k.id)?.record.description, 'newer');
    cache.rememberAlias('moved', k.id, '10');
    cache.rememberAlias('moved', undefined, '12');
    cache.rememberAlias('moved', k.id, '11');
    assert.deepEqual(cache.aliases(), []);
    cache.remember({ ...k, name: 'renamed' }, String(BigInt(revision) + 6n));
    assert.deepEqual(cache.page('', 10).keys.map((r) => r.name), ['renamed'], 'the old name leads nowhere');
  });

  it('a record that fails its check leaves the cache at its revision: an older valid write does not return, a newer one does', async () => {
    const cache = cacheOn();
    const { k, revision } = await made('altered');
    cache.remember(k, revision);
    const original = (await ns.get(paths.key(k.id)).string())!;
    await ns.put(paths.key(k.id)).value(JSON.stringify({ ...JSON.parse(original), createdBy: 'mallory' }));
    await assert.rejects(cache.read(k.id), (e) => code(e) === 'FAILED_PRECONDITION' && /integrity check/.test((e as Error).message));
    assert.equal(cache.entry(k.id), undefined);
    cache.remember(k, revision);
    assert.equal(cache.entry(k.id), undefined, 'the write before the refused one stays out');
    await ns.put(paths.key(k.id)).value(original);
    assert.equal((await cache.read(k.id))?.createdBy, 'app');
    assert.deepEqual(replica.reports.filter((r) => r.path === paths.key(k.id)), [{ path: paths.key(k.id), reason: 'MAC mismatch' }]);
  });

  it('a name leads only to a key record of that name', async () => {
    const cache = cacheOn();
    const { k } = await made('real');
    await ns.put(paths.name('impostor')).value(k.id);
    await assert.rejects(cache.lookup({ name: 'impostor' }), (e) => code(e) === 'FAILED_PRECONDITION' && (e as Error).message.includes('record names/impostor'));
  });

  it('a tombstone tells the keyring to drop that key; reset forgets everything until the next load', async () => {
    const destroyed: string[] = [];
    const cache = cacheOn(undefined, (id) => destroyed.push(id));
    const { k, revision } = await made('tombstoned');
    cache.remember(tombstoneOf(k), String(BigInt(revision) + 1n));
    assert.deepEqual(destroyed, [k.id]);
    await cache.load();
    assert.ok(cache.records().length > 0);
    await cache.reset();
    assert.deepEqual([cache.records(), cache.aliases()], [[], []]);
    await cache.load();
    assert.ok(cache.entry(k.id), 'loaded again');
  });
});
