/**
 * Key operations on a real keyring and usage accounting over a real single-member etcd (one per
 * file), no custodian, no HSM: what each operation checks (input, key, policy, state, usage),
 * versions and the minimum decryption version, the lifecycle, aliases, batches and data keys.
 * The seal check in front of these is the KeyService interceptor's: server/methods.spec.ts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestEtcd } from '@keyshard/devcluster/test-etcd';
import { createLogger } from '@keyshard/config';
import { isKeyshardError } from '@keyshard/errors';
import type { Keyring } from './keyring.ts';
import { KeyOperations, MAX_BATCH } from './key-operations.ts';
import { VersionUsage } from './version-usage.ts';
import { clusterSecrets, testKeyring, testReplica } from './test-keys.ts';

const code = (e: unknown) => (isKeyshardError(e) ? e.code : String(e));
const reason = (e: unknown) => (isKeyshardError(e) ? e.reason : String(e));
/** Rejects with code `c`, and `expected`: the reason (a string) or words of the message (a RegExp). */
const rejectsWith = (p: Promise<unknown>, c: string, expected?: RegExp | string) =>
  assert.rejects(p, (e) => code(e) === c && (expected === undefined || (typeof expected === 'string' ? reason(e) === expected : expected.test((e as Error).message))));
const text = (s: string) => Buffer.from(s);

describe('key operations (real etcd, no custodian)', { timeout: 60_000 }, () => {
  let etcd: TestEtcd;
  let keyring: Keyring;
  let usage: VersionUsage;
  let ops: KeyOperations;

  before(async () => {
    etcd = await TestEtcd.start();
    const ns = etcd.namespace('operations');
    const replica = testReplica(clusterSecrets());
    ({ keyring } = testKeyring(ns, replica));
    const bounds = { limit: 1_000_000, rotateAt: 900_000, reserveBlock: 100, flushSeconds: 3600 };
    usage = new VersionUsage(ns, replica.integrity, bounds, async () => {}, createLogger('key-operations.spec', 'silent'));
    ops = new KeyOperations(keyring, usage, { maxPlaintextBytes: 1024, admins: new Set(['admin', 'admin-2']), minDestructionWaitSeconds: 60, defaultDestructionWaitSeconds: 3600 });
  });
  after(async () => {
    await keyring?.close();
    await etcd?.stop();
  });

  it('encrypt and decrypt round-trip with the context bound as AAD, counted against the primary version', async () => {
    const k = await keyring.create({ name: 'invoices' }, 'app');
    const e = await ops.encrypt('invoices', text('secret'), { tenant: 'acme' }, 'app');
    assert.deepEqual([e.key.id, e.version], [k.id, 1]);
    assert.deepEqual((await ops.decrypt(e.ciphertext, { tenant: 'acme' }, 'app')).plaintext, text('secret'));
    await rejectsWith(ops.decrypt(e.ciphertext, { tenant: 'evil' }, 'app'), 'INVALID_ARGUMENT', 'WRONG_CONTEXT');
    await rejectsWith(ops.decrypt(Buffer.from('not a ciphertext at all'), {}, 'app'), 'INVALID_ARGUMENT', 'INVALID_CIPHERTEXT');
    await rejectsWith(ops.decrypt(e.ciphertext, { tenant: 'acme' }, 'app', 'alias/none'), 'NOT_FOUND', 'KEY_NOT_FOUND');
    assert.ok((await usage.ofKey(k.id, [1])).get(1)!.encryptions >= 1, 'a block was reserved for it');
  });

  it('checks input, the key, its policy, its state and its usage', async () => {
    await keyring.create({ name: 'guarded', policy: { encrypt: ['writer'], decrypt: ['reader'] } }, 'app');
    await rejectsWith(ops.encrypt('guarded', Buffer.alloc(2048), {}, 'writer'), 'INVALID_ARGUMENT', /limit is 1024/);
    await rejectsWith(ops.encrypt('missing', text('x'), {}, 'writer'), 'NOT_FOUND', 'KEY_NOT_FOUND');
    await rejectsWith(ops.encrypt('guarded', text('x'), {}, 'app'), 'PERMISSION_DENIED', /app may not encrypt/);
    const e = await ops.encrypt('guarded', text('x'), {}, 'writer');
    await rejectsWith(ops.decrypt(e.ciphertext, {}, 'writer'), 'PERMISSION_DENIED', 'KEY_POLICY_DENIED');
    await rejectsWith(ops.decrypt(e.ciphertext, {}, 'admin'), 'PERMISSION_DENIED', /cluster admins administer keys but use one only when its policy names them/);
    await ops.setState('guarded', 'admin', 'disable'); // administration: cluster admins may
    await rejectsWith(ops.encrypt('guarded', text('x'), {}, 'writer'), 'FAILED_PRECONDITION', 'KEY_DISABLED');
    await ops.setState('guarded', 'admin', 'enable');
    await rejectsWith(ops.sign('guarded', { message: text('m') }, 'admin'), 'PERMISSION_DENIED', 'KEY_POLICY_DENIED'); // policy before usage
    await ops.updateKey('guarded', { policy: { encrypt: ['writer'], decrypt: ['reader'], sign: ['writer'] } }, 'admin');
    await rejectsWith(ops.sign('guarded', { message: text('m') }, 'writer'), 'FAILED_PRECONDITION', 'WRONG_KEY_USAGE');
  });

  it('old versions decrypt until the minimum decryption version passes them, which can only rise', async () => {
    await keyring.create({ name: 'versioned' }, 'app');
    const v1 = await ops.encrypt('versioned', text('one'), {}, 'app');
    const r = await ops.rotate('versioned', 'app');
    assert.deepEqual([r.rotated, r.key.primaryVersion], [true, 2]);
    assert.equal((await ops.encrypt('versioned', text('two'), {}, 'app')).version, 2);
    assert.deepEqual((await ops.decrypt(v1.ciphertext, {}, 'app')).plaintext, text('one'));
    await ops.updateKey('versioned', { minDecryptionVersion: 2 }, 'app');
    await rejectsWith(ops.decrypt(v1.ciphertext, {}, 'app'), 'FAILED_PRECONDITION', 'KEY_VERSION_RETIRED');
    await rejectsWith(ops.updateKey('versioned', { minDecryptionVersion: 1 }, 'app'), 'INVALID_ARGUMENT', /can only be raised/);
    assert.deepEqual(await ops.rotate('versioned', 'app', true), { key: await keyring.resolve('versioned'), rotated: false }, 'no schedule: never due');
  });

  it('scheduled destruction waits at least the minimum; cancelling leaves the key disabled', async () => {
    await keyring.create({ name: 'retiring' }, 'app');
    await rejectsWith(ops.scheduleDestruction('retiring', 10, 'app'), 'INVALID_ARGUMENT', /at least 60 seconds/);
    const pending = await ops.scheduleDestruction('retiring', 0, 'app');
    assert.equal(pending.state, 'KEY_STATE_PENDING_DESTRUCTION');
    assert.ok(Date.parse(pending.destructionAt) > Date.now() + 3_500_000, 'the default wait');
    await rejectsWith(ops.encrypt('retiring', text('x'), {}, 'app'), 'FAILED_PRECONDITION', 'KEY_PENDING_DESTRUCTION');
    await rejectsWith(ops.scheduleDestruction('retiring', 0, 'app'), 'FAILED_PRECONDITION', /already pending/);
    assert.equal((await ops.cancelDestruction('retiring', 'app')).state, 'KEY_STATE_DISABLED');
    await rejectsWith(ops.cancelDestruction('retiring', 'app'), 'FAILED_PRECONDITION', 'WRONG_KEY_STATE');
  });

  it('an alias is administered by whoever administers the keys it names, and never points at a key its maker uses', async () => {
    const mine = await keyring.create({ name: 'mine', policy: { admin: ['app'], encrypt: ['svc'] } }, 'app');
    await keyring.create({ name: 'theirs' }, 'bob');
    await rejectsWith(ops.putAlias('shortcut', 'mine', false, 'bob'), 'PERMISSION_DENIED', 'KEY_POLICY_DENIED');
    assert.deepEqual(await ops.putAlias('shortcut', 'mine', false, 'app'), { name: 'shortcut', keyId: mine.id });
    await rejectsWith(ops.putAlias('shortcut', 'theirs', true, 'app'), 'PERMISSION_DENIED', /theirs/);
    // bob uses `theirs` (its creator, default policy): it may not steer a name onto it, even one of its own.
    await rejectsWith(ops.putAlias('bobs', 'theirs', false, 'bob'), 'PERMISSION_DENIED', 'SEPARATION_OF_DUTIES');
    await rejectsWith(ops.deleteAlias('shortcut', 'bob'), 'PERMISSION_DENIED');
    await ops.deleteAlias('shortcut', 'app');
    await rejectsWith(keyring.resolve('alias/shortcut'), 'NOT_FOUND');
  });

  it('separation of duties: nobody grants itself a use, on creation or by a policy change', async () => {
    // A cluster admin's key: the default policy gives it no use, and it may not name itself.
    await rejectsWith(ops.createKey({ name: 'self-made', policy: { decrypt: ['admin'] } }, 'admin'), 'PERMISSION_DENIED', 'SEPARATION_OF_DUTIES');
    await rejectsWith(keyring.resolve('self-made'), 'NOT_FOUND', undefined); // refused before anything was stored
    const made = await ops.createKey({ name: 'admin-made' }, 'admin');
    assert.equal((await keyring.resolve(made.id)).creatorAdmin, true, 'the record keeps that an admin made it, for after it leaves `admins`');
    await rejectsWith(ops.encrypt('admin-made', text('x'), {}, 'admin'), 'PERMISSION_DENIED', 'KEY_POLICY_DENIED');
    await rejectsWith(ops.updateKey('admin-made', { policy: { encrypt: ['app'], decrypt: ['app', 'admin'] } }, 'admin'), 'PERMISSION_DENIED', /separation of duties: admin may not grant itself decrypt/);
    assert.deepEqual((await keyring.resolve(made.id)).policy, {}, 'the refused change was not applied');
    await ops.updateKey('admin-made', { policy: { encrypt: ['app'], decrypt: ['app'] } }, 'admin'); // naming others is administration
    await rejectsWith(ops.encrypt('admin-made', text('x'), {}, 'admin'), 'PERMISSION_DENIED', 'KEY_POLICY_DENIED');
    await ops.encrypt('admin-made', text('x'), {}, 'app');
    // A key user who administers its key may drop a use, and may keep what it holds, but not take it back alone.
    await ops.createKey({ name: 'app-made', policy: { admin: ['app'], encrypt: ['app'], decrypt: ['app'] } }, 'app');
    await ops.updateKey('app-made', { policy: { admin: ['app'], encrypt: ['app'] } }, 'app');
    await rejectsWith(ops.updateKey('app-made', { policy: { admin: ['app'], encrypt: ['app'], decrypt: ['app'] } }, 'app'), 'PERMISSION_DENIED', 'SEPARATION_OF_DUTIES');
    await ops.updateKey('app-made', { policy: { admin: ['app'], encrypt: ['app'], decrypt: ['app'] } }, 'admin'); // another principal may
    // A second cluster admin may name the first (dual control); the first keeps it when it edits the policy.
    await ops.updateKey('admin-made', { policy: { encrypt: ['app'], decrypt: ['app', 'admin'] } }, 'admin-2');
    await ops.updateKey('admin-made', { policy: { encrypt: ['app'], decrypt: ['admin'] } }, 'admin');
  });

  it('GetKey/ListKeys show the policy only to who administers the key', async () => {
    const k = await ops.createKey({ name: 'shown', policy: { encrypt: ['app'], admin: ['ops'] } }, 'admin');
    assert.deepEqual(['admin', 'admin-2', 'ops', 'app', 'stranger'].map((p) => ops.showsPolicyTo(k, p)), [true, true, true, false, false]);
  });

  it('a batch holds 1 to MAX_BATCH items, each with its own outcome', async () => {
    await keyring.create({ name: 'batched' }, 'app');
    await rejectsWith(ops.batch([], async () => 0), 'INVALID_ARGUMENT');
    await rejectsWith(ops.batch(new Array(MAX_BATCH + 1).fill({}), async () => 0), 'INVALID_ARGUMENT');
    const results = await ops.batch([{ key: 'batched' }, { key: 'missing' }], (item: { key: string }) => ops.encrypt(item.key, text('x'), {}, 'app'));
    assert.ok('result' in results[0]!);
    assert.equal(code((results[1] as { error: unknown }).error), 'NOT_FOUND');
  });

  it('data keys come wrapped by the key, and in clear unless asked not to', async () => {
    await keyring.create({ name: 'kek-for-data' }, 'app');
    await rejectsWith(ops.generateDataKey('kek-for-data', 8, {}, 'app', true), 'INVALID_ARGUMENT');
    const d = await ops.generateDataKey('kek-for-data', 0, { purpose: 'file' }, 'app', true);
    assert.equal(d.plaintext.length, 32);
    assert.deepEqual((await ops.decrypt(d.ciphertext, { purpose: 'file' }, 'app')).plaintext, d.plaintext);
    assert.equal((await ops.generateDataKey('kek-for-data', 16, {}, 'app', false)).plaintext.length, 0);
  });

  it('signatures and MACs verify with the version that made them', async () => {
    await keyring.create({ name: 'signer', type: 'ed25519' }, 'app');
    await keyring.create({ name: 'macer', type: 'hmac-sha256' }, 'app');
    const s = await ops.sign('signer', { message: text('m') }, 'app');
    assert.equal(await ops.verify('signer', { message: text('m') }, s.signature, s.version, 'app'), true);
    assert.equal(await ops.verify('signer', { message: text('other') }, s.signature, s.version, 'app'), false);
    const m = await ops.mac('macer', text('m'), 'app');
    assert.equal(await ops.verifyMac('macer', text('m'), m.mac, m.version, 'app'), true);
    await rejectsWith(ops.verifyMac('macer', text('m'), m.mac, 2, 'app'), 'NOT_FOUND', 'KEY_VERSION_NOT_FOUND');
  });
});
