/**
 * The key lifecycle through the SDK against a real cluster: key types and usages, versions and
 * rotation, min_decryption_version, re-encryption, data keys, batches, states, aliases,
 * per-key policy. Signatures are checked with plain node:crypto against GetPublicKey's PEM.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, verify as nodeVerify, createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DevCluster } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { observeFor, rejectsWith, waitFor } from './support/grpc.ts';

describe('key lifecycle', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  let app: KeyshardClient;
  const msg = Buffer.from('pay 100 to alice');

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-keys-'));
    cluster = await DevCluster.create({ dir, custodians: 2, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
    admin = cluster.client();
    app = cluster.client('app');
  });

  after(async () => {
    admin?.close();
    app?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('key types are fixed with their usage; another usage is FAILED_PRECONDITION', async () => {
    const types = { 'aes256-gcm': 'encrypt', 'chacha20-poly1305': 'encrypt', 'hmac-sha256': 'mac', ed25519: 'sign', 'ecdsa-p256': 'sign', 'ecdsa-secp256k1': 'sign' };
    for (const [type, usage] of Object.entries(types)) {
      const k = await app.createKey(`t-${type}`, { type });
      assert.equal(k.type, type);
      assert.equal(k.usage, usage);
    }
    await rejectsWith(app.createKey('t-bad', { type: 'rot13' }), 'INVALID_ARGUMENT', /unsupported key type/);
    await rejectsWith(app.encrypt('t-ed25519', msg), 'FAILED_PRECONDITION', /usage sign/);
    await rejectsWith(app.sign('t-aes256-gcm', { message: msg }), 'FAILED_PRECONDITION', /usage encrypt/);
    await rejectsWith(app.mac('t-ecdsa-p256', msg), 'FAILED_PRECONDITION');
    const c = await app.encrypt('t-chacha20-poly1305', msg, { a: 'b' });
    assert.deepEqual((await app.decrypt(c.ciphertext, { a: 'b' })).plaintext, msg);
    await rejectsWith(app.decrypt(c.ciphertext, { a: 'c' }), 'INVALID_ARGUMENT');
  });

  it('signatures verify with node:crypto against the published key; digests too', async () => {
    for (const type of ['ed25519', 'ecdsa-p256', 'ecdsa-secp256k1']) {
      const { signature } = await app.sign(`t-${type}`, { message: msg });
      const pub = await app.getPublicKey(`t-${type}`);
      const alg = type === 'ed25519' ? null : 'sha256';
      assert.ok(nodeVerify(alg, msg, createPublicKey(pub.pem), signature), `${type} PEM`);
      assert.ok(nodeVerify(alg, msg, createPublicKey({ key: JSON.parse(pub.jwk), format: 'jwk' }), signature), `${type} JWK`);
      assert.equal((await app.verify(`t-${type}`, { message: msg }, signature)).valid, true);
      assert.equal((await app.verify(`t-${type}`, { message: Buffer.from('pay 900') }, signature)).valid, false);
    }
    const digest = createHash('sha256').update(msg).digest();
    const { signature } = await app.sign('t-ecdsa-p256', { digest });
    assert.ok(nodeVerify('sha256', msg, createPublicKey((await app.getPublicKey('t-ecdsa-p256')).pem), signature), 'digest signature = message signature');
    await rejectsWith(app.sign('t-ecdsa-p256', { digest: digest.subarray(0, 20) }), 'INVALID_ARGUMENT', /32-byte/);
    await rejectsWith(app.sign('t-ed25519', { digest }), 'INVALID_ARGUMENT', /messages, not digests/);
    await rejectsWith(app.getPublicKey('t-aes256-gcm'), 'FAILED_PRECONDITION');
  });

  it('MACs verify, and a changed message or tag does not', async () => {
    const { mac } = await app.mac('t-hmac-sha256', msg);
    assert.equal(mac.length, 32);
    assert.equal((await app.verifyMac('t-hmac-sha256', msg, mac)).valid, true);
    assert.equal((await app.verifyMac('t-hmac-sha256', Buffer.from('pay 900'), mac)).valid, false);
    assert.equal((await app.verifyMac('t-hmac-sha256', msg, Buffer.alloc(32))).valid, false);
  });

  it('rotation adds versions; old ciphertexts decrypt until min_decryption_version retires them', async () => {
    await app.createKey('rot');
    const v1 = await app.encrypt('rot', msg);
    const rotated = await app.rotateKey('rot');
    assert.equal(rotated.primary_version, 2);
    assert.deepEqual(rotated.versions.map((v) => v.version), [1, 2]);
    const v2 = await app.encrypt('rot', msg);
    assert.equal(v2.key_version, 2);
    assert.deepEqual((await app.decrypt(v1.ciphertext)).plaintext, msg);
    assert.equal((await app.decrypt(v1.ciphertext)).key_version, 1);
    const re = await app.reEncrypt(v1.ciphertext);
    assert.equal(re.key_version, 2);
    await app.updateKey('rot', { minDecryptionVersion: 2 });
    await rejectsWith(app.decrypt(v1.ciphertext), 'FAILED_PRECONDITION', /minimum decryption version/);
    assert.deepEqual((await app.decrypt(re.ciphertext)).plaintext, msg);
    await rejectsWith(app.updateKey('rot', { minDecryptionVersion: 3 }), 'INVALID_ARGUMENT', /above the primary/);
    const again = await app.getKey('rot');
    assert.equal(again.min_decryption_version, 2);
    const scheduled = await app.createKey('rot-scheduled', { rotationPeriodSeconds: 7200 });
    assert.equal(scheduled.rotation?.period_seconds, 7200);
    assert.ok(Date.parse(scheduled.rotation!.next_rotation_at) > Date.now() + 7_000_000);
    const daily = await app.setRotationPolicy('rot-scheduled', 86_400);
    assert.equal(daily.rotation?.period_seconds, 86_400);
    assert.equal((await app.setRotationPolicy('rot-scheduled', 0)).rotation?.next_rotation_at, '', '0 clears the schedule');
  });

  it('the leader rotates keys on their schedule, once per period, and audits it', async () => {
    const k = await app.createKey('auto-rotated', { rotationPeriodSeconds: 2 });
    const rotated = await waitFor('a scheduled rotation', async () => {
      const cur = await app.getKey('auto-rotated');
      return cur.primary_version >= 2 ? cur : undefined;
    }, 15_000);
    assert.ok(Date.parse(rotated.rotation!.next_rotation_at) > Date.parse(rotated.rotated_at), 'next rotation moved forward');
    // Watched for 2.5 s (over one more period) after the first scheduled rotation: no burst of rotations, no version twice.
    await observeFor('the versions of a key rotated every 2 s', 2_500, async () => {
      const later = await app.getKey('auto-rotated');
      assert.ok(later.primary_version <= 4, `about one rotation per 2 s period, got v${later.primary_version}`);
      assert.deepEqual(later.versions.map((v) => v.version), Array.from({ length: later.primary_version }, (_, i) => i + 1), 'no version twice, none skipped');
    });
    await waitFor('the scheduled rotation in the audit log', async () =>
      readFileSync(cluster.auditLogFile, 'utf8').includes(`"key_id":"${k.id}","operation":"keys.rotation.scheduled"`) ? true : undefined,
    );
  });

  it('re-encrypts to another key and context inside the service', async () => {
    await app.createKey('other');
    const c = await app.encrypt('rot', msg, { from: 'a' });
    const moved = await app.reEncrypt(c.ciphertext, { from: 'a' }, 'other', { to: 'b' });
    const other = await app.getKey('other');
    assert.equal(moved.key_id, other.id);
    assert.deepEqual((await app.decrypt(moved.ciphertext, { to: 'b' })).plaintext, msg);
    await rejectsWith(app.reEncrypt(c.ciphertext, { from: 'x' }, 'other'), 'INVALID_ARGUMENT');
  });

  it('data keys: plaintext and wrapped copy; the wrapped copy decrypts to the same bytes', async () => {
    const dk = await app.generateDataKey('other', 32, { purpose: 'file' });
    assert.equal(dk.plaintext.length, 32);
    assert.deepEqual((await app.decrypt(dk.ciphertext, { purpose: 'file' })).plaintext, dk.plaintext);
    const np = await app.generateDataKeyWithoutPlaintext('other', 64);
    assert.equal(np.plaintext.length, 0);
    assert.equal((await app.decrypt(np.ciphertext)).plaintext.length, 64);
    await rejectsWith(app.generateDataKey('other', 8), 'INVALID_ARGUMENT', /between 16 and 1024/);
  });

  it('batches: 1,000 items with one result or error each; 1,001 refused', async () => {
    const items = Array.from({ length: 1000 }, (_, i) => ({ key: i === 7 ? 'missing' : 'other', plaintext: Buffer.from(`item ${i}`) }));
    const enc = await app.encryptBatch(items);
    assert.equal(enc.results.length, 1000);
    assert.equal(enc.results[7]!.error?.code, 5);
    assert.match(enc.results[7]!.error!.message, /missing/);
    const dec = await app.decryptBatch(enc.results.map((r) => ({ ciphertext: r.result?.ciphertext ?? Buffer.from('junk') })));
    assert.equal(dec.results[7]!.error?.code, 3);
    assert.equal(dec.results[999]!.result!.plaintext.toString(), 'item 999');
    await rejectsWith(app.encryptBatch([...items, items[0]!]), 'INVALID_ARGUMENT', /at most 1000/);
  });

  it('states: disabled keys only show metadata; destruction is scheduled and cancelled (by the admin, who administers the key app uses)', async () => {
    await app.createKey('stateful');
    const c = await app.encrypt('stateful', msg);
    assert.equal((await admin.disableKey('stateful')).state, 'KEY_STATE_DISABLED');
    await rejectsWith(app.encrypt('stateful', msg), 'FAILED_PRECONDITION', /not enabled \(disabled\)/);
    await rejectsWith(app.decrypt(c.ciphertext), 'FAILED_PRECONDITION');
    assert.equal((await app.getKey('stateful')).state, 'KEY_STATE_DISABLED');
    assert.equal((await admin.enableKey('stateful')).state, 'KEY_STATE_ENABLED');
    const pending = await admin.scheduleKeyDestruction('stateful', 3600);
    assert.equal(pending.state, 'KEY_STATE_PENDING_DESTRUCTION');
    assert.ok(Date.parse(pending.destruction_at) > Date.now() + 3_500_000);
    await rejectsWith(app.encrypt('stateful', msg), 'FAILED_PRECONDITION', /pending_destruction/);
    await rejectsWith(admin.enableKey('stateful'), 'FAILED_PRECONDITION');
    assert.equal((await admin.cancelKeyDestruction('stateful')).state, 'KEY_STATE_DISABLED');
    await rejectsWith(admin.cancelKeyDestruction('stateful'), 'FAILED_PRECONDITION', /not pending/);
    const dflt = await admin.scheduleKeyDestruction('stateful');
    assert.ok(Date.parse(dflt.destruction_at) > Date.now() + 29 * 24 * 3600 * 1000, 'default waiting period is 30 days');
  });

  it('aliases: every key reference accepts alias/<name>; the admin steers them, the key user may not', async () => {
    await rejectsWith(app.createAlias('payments', 'rot'), 'PERMISSION_DENIED', 'SEPARATION_OF_DUTIES'); // app uses rot
    await admin.createAlias('payments', 'rot');
    const c = await app.encrypt('alias/payments', msg);
    assert.equal(c.key_id, (await app.getKey('rot')).id);
    await rejectsWith(admin.createAlias('payments', 'other'), 'ALREADY_EXISTS');
    await admin.updateAlias('payments', 'other');
    assert.equal((await app.encrypt('alias/payments', msg)).key_id, (await app.getKey('other')).id);
    assert.deepEqual((await admin.listAliases()).aliases.map((a) => a.name), ['payments']);
    await admin.deleteAlias('payments');
    await rejectsWith(app.encrypt('alias/payments', msg), 'NOT_FOUND');
    await rejectsWith(admin.deleteAlias('payments'), 'NOT_FOUND');
    await rejectsWith(admin.updateAlias('nope', 'rot'), 'NOT_FOUND');
  });

  it('per-key policy: creator by default, grants per operation, admins administer but do not use; denials audited', async () => {
    const mine = await app.createKey('app-key');
    assert.equal(mine.created_by, 'app');
    const c = await app.encrypt('app-key', msg);
    await rejectsWith(admin.decrypt(c.ciphertext), 'PERMISSION_DENIED', 'KEY_POLICY_DENIED');
    await admin.createKey('admins-key');
    await rejectsWith(app.encrypt('admins-key', msg), 'PERMISSION_DENIED', /app may not encrypt with key admins-key/);
    await admin.createKey('shared', { policy: { encrypt: ['app'] } });
    const s = await app.encrypt('shared', msg);
    await rejectsWith(app.decrypt(s.ciphertext), 'PERMISSION_DENIED', /may not decrypt/);
    await rejectsWith(app.rotateKey('shared'), 'PERMISSION_DENIED');
    await rejectsWith(admin.updateKey('shared', { policy: { explode: ['x'] } }), 'INVALID_ARGUMENT', /unknown policy operation/);
    await admin.updateKey('shared', { policy: { encrypt: ['app'], decrypt: ['app'] } });
    assert.deepEqual((await app.decrypt(s.ciphertext)).plaintext, msg);
    await waitFor('the denial in the audit log', async () => {
      const denied = readFileSync(cluster.auditLogFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('"operation":"keys.Decrypt"') && l.includes('"result":"denied"') && l.includes('"principal":"app"'));
      return denied.length === 1 ? true : undefined;
    });
  });
});
