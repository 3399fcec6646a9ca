/**
 * Rotation with two coordinator replicas over one real etcd:
 *  - the per-version encryption bound (NIST SP 800-38D §8.3) holds across replicas, and a
 *    version is rotated automatically when it nears it (small bounds configured for the test);
 *  - last use per version;
 *  - a due rotation happens exactly once when the leader is SIGKILLed in the middle of a sweep.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { APP, DevCluster, coordinatorId } from '@keyshard/devcluster';
import { readTls } from '@keyshard/rpc';
import { clusterNamespace, connectEtcd } from '@keyshard/store';
import type { Key, KeyshardClient } from '@keyshard/client';
import { rejectsWith, waitFor } from './support/grpc.ts';

const LIMIT = 40;
/** Key.versions with their usage fields (proto KeyVersion). */
const versionsOf = (k: Key) => k.versions;
const ROTATE_AT = 20;

describe('rotation across two coordinators', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let one: KeyshardClient; // coordinator-1
  let two: KeyshardClient; // coordinator-2

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-rotation-'));
    cluster = await DevCluster.create({
      dir,
      custodians: 2,
      threshold: 2,
      coordinators: 2,
      coordinatorOverrides: {
        keys: { minRotationPeriodSeconds: 2, usage: { limit: LIMIT, rotateAt: ROTATE_AT, reserveBlock: 3, lastUseFlushSeconds: 1 } },
        leaderTtlSeconds: 2,
        rotationSweepSeconds: 1,
      },
    });
    await cluster.start();
    await cluster.bootstrap();
    one = cluster.client(APP, { coordinator: coordinatorId(0) });
    two = cluster.client(APP, { coordinator: coordinatorId(1) });
  });

  after(async () => {
    one?.close();
    two?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('no version encrypts more than the bound, across replicas; it is rotated automatically before', async () => {
    const k = await one.createKey('bounded');
    const results: { ciphertext: Buffer; key_version: number; plaintext: Buffer }[] = [];
    // 150 encryptions, 8 at a time, alternating replicas: far more than one version may do.
    for (let i = 0; i < 150; i += 8) {
      const batch = await Promise.all(
        Array.from({ length: 8 }, async (_, j) => {
          const plaintext = Buffer.from(`message ${i + j}`);
          const r = await ((i + j) % 2 ? two : one).encrypt(k.id, plaintext, { n: String(i + j) });
          return { ...r, plaintext };
        }),
      );
      results.push(...batch);
    }
    const perVersion = new Map<number, number>();
    for (const r of results) perVersion.set(r.key_version, (perVersion.get(r.key_version) ?? 0) + 1);
    for (const [v, n] of perVersion) assert.ok(n <= LIMIT, `version ${v} encrypted ${n} messages; the bound is ${LIMIT}`);
    assert.ok(perVersion.size >= 4, `150 encryptions need at least 4 versions of ${LIMIT}; used ${[...perVersion.keys()]}`);

    const meta = await one.getKey(k.id);
    for (const v of versionsOf(meta)) {
      assert.ok(Number(v.encryptions) <= LIMIT, `version ${v.version} reserved ${v.encryptions} (bound ${LIMIT})`);
      const used = perVersion.get(v.version) ?? 0;
      assert.ok(Number(v.encryptions) >= used, `version ${v.version}: counter ${v.encryptions} below the ${used} encryptions seen`);
    }
    // Every ciphertext still decrypts, on either replica.
    for (const [i, r] of results.entries()) {
      const d = await (i % 2 ? one : two).decrypt(r.ciphertext, { n: String(i) });
      assert.deepEqual(d.plaintext, r.plaintext);
    }
    await waitFor('the usage rotation in the audit log', async () =>
      readFileSync(cluster.auditLogFile, 'utf8').includes(`"key_id":"${k.id}","operation":"keys.rotation.usage"`) ? true : undefined,
    );
  });

  it('last use is kept per version, for decryptions of old versions too, and seen by every replica', async () => {
    const k = await two.createKey('last-use');
    const c1 = await two.encrypt(k.id, Buffer.from('v1'));
    await two.rotateKey(k.id);
    await two.rotateKey(k.id);
    // Past replica 2's flush of the encryption's last use: replica 1 sees it.
    await waitFor('replica 1 seeing the encryption as version 1 last use', async () => (versionsOf(await one.getKey(k.id))[0]!.last_used_at ? true : undefined));
    const decryptedAt = Date.now();
    await two.decrypt(c1.ciphertext); // replica 2 uses version 1 again; replica 1 never touches this key's material
    // Replica 2 writes last use to etcd within its flush interval (1 s here); replica 1 sees it through its watch.
    const v1 = await waitFor('replica 1 seeing the decryption as version 1 last use', async () => {
      const v = versionsOf(await one.getKey(k.id))[0]!;
      return v.last_used_at && Date.parse(v.last_used_at) >= decryptedAt - 5 ? v : undefined;
    });
    assert.ok(Date.parse(v1.last_used_at) <= Date.now());
    assert.ok(Number(v1.encryptions) >= 1 && Number(v1.encryptions) <= 3, `one encryption, counted within one reserved block: ${v1.encryptions}`);
    const [, v2, v3] = versionsOf(await one.getKey(k.id));
    assert.equal(v2!.last_used_at, '', 'a version never used has no last use');
    assert.equal(v3!.last_used_at, '');
  });

  it('a rotation period under the configured minimum is refused', async () => {
    // This cluster's minimum is 2 s (production: 1 hour).
    await rejectsWith(one.createKey('too-fast', { rotationPeriodSeconds: 1 }), 'INVALID_ARGUMENT', /at least 2 seconds/);
    const k = await one.createKey('slow');
    await rejectsWith(one.setRotationPolicy(k.id, 1), 'INVALID_ARGUMENT', /at least 2 seconds/);
    assert.equal((await one.setRotationPolicy(k.id, 2)).rotation?.period_seconds, 2);
  });

  it('each due rotation happens exactly once when the leader is SIGKILLed mid-sweep', async (t) => {
    const KEYS = 400;
    const PERIOD = 20;
    const leaderOf = async (c: KeyshardClient) => (await c.status()).leader_id;
    const leader = await waitFor('a leader', async () => (await leaderOf(one)) || undefined);
    const follower = cluster.coordinatorIds.find((id) => id !== leader)!;
    const followerClient = leader === coordinatorId(0) ? two : one;

    // Every version write, straight from etcd: the evidence of how often each key was rotated.
    const certs = cluster.layout.certs[coordinatorId(0)]!;
    const etcd = connectEtcd({ endpoints: [cluster.etcdEndpoint], tls: readTls(certs) });
    t.after(() => etcd.close());
    const ns = clusterNamespace(etcd, cluster.layout.plan.clusterName);
    const keys: Key[] = [];
    for (let i = 0; i < KEYS; i += 100)
      keys.push(...(await Promise.all(Array.from({ length: Math.min(100, KEYS - i) }, (_, j) => one.createKey(`sweep-${i + j}`, { rotationPeriodSeconds: PERIOD })))));
    const ids = new Set(keys.map((k) => k.id));
    const writes = new Map<string, number>(); // 'versions/<id>/<n>' -> puts seen
    let atKill = -1;
    const watcher = await ns.watch().prefix('versions/').create();
    t.after(() => watcher.cancel());
    watcher.on('put', (kv) => {
      const key = kv.key.toString();
      if (!ids.has(key.split('/')[1]!)) return;
      writes.set(key, (writes.get(key) ?? 0) + 1);
      if (atKill < 0) {
        // The first rotation of the sweep: kill the leader now, while the sweep is running.
        atKill = writes.size;
        process.kill(cluster.process(leader).pid!, 'SIGKILL');
      }
    });

    await waitFor('the sweep to start and the leader to be killed', async () => (atKill > 0 ? true : undefined), (PERIOD + 30) * 1000);
    await cluster.process(leader).kill(); // reaps it (already dead)
    // The follower takes over (within 2 TTLs) and finishes the sweep.
    await waitFor('the follower to lead', async () => ((await leaderOf(followerClient)) === follower ? true : undefined), 15_000);
    await waitFor('every key rotated', async () => (writes.size >= KEYS ? true : undefined), 30_000);
    t.diagnostic(`leader ${leader} SIGKILLed at its sweep's first version write; the follower wrote the rest`);

    // Exactly once: one write of version 2 per key, no version 3, two versions in every record.
    assert.equal(writes.size, KEYS, `version writes: ${[...writes.keys()].filter((k) => !k.endsWith('0000000002')).join(', ')}`);
    for (const [key, n] of writes) {
      assert.ok(key.endsWith('/0000000002'), `${key}: a second rotation`);
      assert.equal(n, 1, `${key} written ${n} times`);
    }
    const all = await Promise.all(keys.map((k) => followerClient.getKey(k.id)));
    for (const k of all) assert.equal(k.versions.length, 2, `${k.name} has ${k.versions.length} versions`);
    for (const k of all) assert.ok(Date.parse(k.rotation!.next_rotation_at) > Date.now(), `${k.name} is not due again yet`);

    // The killed replica comes back, unseals, and sees the same state.
    await cluster.start([leader]);
    await cluster.bootstrapReplica(leader);
    const back = leader === coordinatorId(0) ? one : two;
    assert.equal((await back.getKey(keys[0]!.id)).versions.length, 2);
  });
});
