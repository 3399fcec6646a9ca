/**
 * Per-version usage against a real single-member etcd (one per file): encryptions are reserved
 * in blocks by compare-and-swap on the version's usage record, so replicas never share one and
 * the stored count bounds what was encrypted; the rotation is asked once at `rotateAt`, nothing
 * is reserved past `limit`; a record that fails its MAC is never used.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { TestEtcd } from '@keyshard/devcluster/test-etcd';
import { createLogger } from '@keyshard/config';
import { isKeyshardError } from '@keyshard/errors';
import { paths, type Namespace } from '@keyshard/store';
import type { AuditEventInput } from '@keyshard/audit-client';
import type { Keyring } from './keyring.ts';
import type { UsageRecord } from './key-record.ts';
import { rotateAtUsageBound, VersionUsage, type RotateForUsage, type VersionUsageOptions } from './version-usage.ts';
import { clusterSecrets, testKeyring, testReplica, type TestReplica } from './test-keys.ts';

const log = createLogger('version-usage.spec', 'silent');
const code = (e: unknown) => (isKeyshardError(e) ? e.code : String(e));
const BOUNDS: VersionUsageOptions = { limit: 30, rotateAt: 20, reserveBlock: 10, flushSeconds: 3600 };

/** Counts `n` encryptions with version 1 of `keyId`; how many were counted before the version was exhausted. */
async function encrypt(usage: VersionUsage, keyId: string, n: number): Promise<number> {
  for (let i = 0; i < n; i++) {
    const counting = usage.encryption(keyId, 1);
    if (counting !== undefined && !(await counting)) return i;
  }
  return n;
}

describe('version usage (real etcd)', { timeout: 60_000 }, () => {
  let etcd: TestEtcd;
  let ns: Namespace;
  let replica: TestReplica;
  const keyrings: Keyring[] = [];
  const stored = async (keyId: string): Promise<UsageRecord | undefined> => {
    const raw = await ns.get(paths.usage(keyId, 1)).string();
    return raw === null ? undefined : (JSON.parse(raw) as UsageRecord);
  };
  const usageOf = (bounds: VersionUsageOptions, rotate: RotateForUsage = async () => {}, r = replica) => new VersionUsage(ns, r.integrity, bounds, rotate, log);

  before(async () => {
    etcd = await TestEtcd.start();
    ns = etcd.namespace('usage');
    replica = testReplica(clusterSecrets());
  });
  after(async () => {
    await Promise.all(keyrings.map((k) => k.close()));
    await etcd?.stop();
  });

  it('the first encryption reserves a block in etcd; the rest of the block is counted in memory, the next block reserved ahead', async () => {
    const usage = usageOf({ ...BOUNDS, limit: 1000, rotateAt: 900 });
    assert.equal(await usage.encryption('k_block', 1), true);
    assert.equal((await stored('k_block'))?.encryptions, 10);
    for (let i = 1; i < 10; i++) assert.equal(usage.encryption('k_block', 1), undefined, `encryption ${i + 1} needs no etcd`);
    for (let i = 0; (await stored('k_block'))?.encryptions !== 20; i++) {
      assert.ok(i < 100, 'the next block is reserved within 2 s');
      await delay(20);
    }
  });

  it('two replicas never share a block: the stored count bounds all they encrypted', async () => {
    const [a, b] = [usageOf({ ...BOUNDS, limit: 1000, rotateAt: 900 }), usageOf({ ...BOUNDS, limit: 1000, rotateAt: 900 })];
    const done = await Promise.all([encrypt(a, 'k_shared', 45), encrypt(b, 'k_shared', 45)]);
    assert.deepEqual(done, [45, 45]);
    const count = (await stored('k_shared'))!.encryptions;
    assert.ok(count >= 90 && count % 10 === 0, `stored ${count}`);
  });

  it('the rotation is asked once, at rotateAt; at the limit the version reserves nothing and the caller is told to use the new primary', async () => {
    const asked: [string, number, number][] = [];
    const usage = usageOf(BOUNDS, async (keyId, version, encryptions) => void asked.push([keyId, version, encryptions]));
    assert.equal(await encrypt(usage, 'k_bounded', 40), 30);
    assert.equal((await stored('k_bounded'))?.encryptions, 30);
    assert.deepEqual(asked, [['k_bounded', 1, 20]]);
  });

  it('with the keyring: the usage bound rotates the key once, audited first, and not at all if the audit fails', async () => {
    const { keyring } = testKeyring(ns, replica);
    keyrings.push(keyring);
    const events: AuditEventInput[] = [];
    let sinkUp = false;
    const audit = { record: async (e: AuditEventInput) => (sinkUp ? void events.push(e) : Promise.reject(new Error('sink down'))) };
    const usage = usageOf({ ...BOUNDS, rotateAt: 10 }, rotateAtUsageBound(keyring, audit, 'coordinator-1', log));
    const k = await keyring.create({ name: 'worn' }, 'app');
    await encrypt(usage, k.id, 10);
    await delay(100);
    assert.equal((await keyring.fresh(k)).primaryVersion, 1, 'not rotated unaudited');
    sinkUp = true;
    await encrypt(usage, k.id, 10); // the next reservation asks again
    for (let i = 0; (await keyring.fresh(k)).primaryVersion !== 2; i++) {
      assert.ok(i < 100, 'rotated within 2 s');
      await delay(20);
    }
    assert.deepEqual(events.map((e) => [e.operation, e.key_id, e.details?.version]), [['keys.rotation.usage', k.id, '1']]);
  });

  it('a usage record altered in etcd is never used: reservations on that version fail with the integrity error', async () => {
    await ns.put(paths.usage('k_altered', 1)).value(JSON.stringify({ encryptions: 0, lastUsedAt: '' }));
    await assert.rejects(Promise.resolve(usageOf(BOUNDS).encryption('k_altered', 1)), (e) => code(e) === 'FAILED_PRECONDITION' && /integrity check/.test((e as Error).message));
    assert.deepEqual(replica.reports.filter((r) => r.path === paths.usage('k_altered', 1)), [{ path: paths.usage('k_altered', 1), reason: 'no MAC' }]);
  });

  it('last use is kept in memory, merged into what is stored, written at the flush — and not while sealed', async () => {
    const usage = usageOf(BOUNDS);
    usage.used('k_used', 1);
    const seen = await usage.ofKey('k_used', [1, 2]);
    assert.ok(seen.get(1)!.lastUsedAt, 'version 1 used here');
    assert.deepEqual(seen.get(2), { encryptions: 0, lastUsedAt: '' });
    assert.equal(await stored('k_used'), undefined, 'not written yet');
    await usage.flush();
    assert.equal((await stored('k_used'))?.lastUsedAt, seen.get(1)!.lastUsedAt);

    const sealed = testReplica(clusterSecrets());
    const later = usageOf(BOUNDS, undefined, sealed);
    later.used('k_sealed', 1);
    sealed.seal.seal();
    await later.flush();
    assert.equal(await stored('k_sealed'), undefined);
  });
});
