/**
 * Separation of duties, attacked with one stolen administrator certificate against a real cluster
 * (etcd, SoftHSM custodians, audit sink; key-policy.ts). The finding it closes: after
 * `keyshard key policy set invoices encrypt=app decrypt=app`, `admin` still encrypted and decrypted.
 *   - A cluster admin administers every key but uses none its policy does not name it for:
 *     Encrypt, Decrypt, ReEncrypt, batches, data keys, Sign, Verify, GetPublicKey, Mac, VerifyMac
 *     are PERMISSION_DENIED (KEY_POLICY_DENIED), each audited as denied.
 *   - It cannot grant itself use: UpdateKey naming itself, CreateKey naming itself, an alias
 *     repointed (or deleted and made again) onto a key it uses — PERMISSION_DENIED
 *     (SEPARATION_OF_DUTIES), audited, and nothing changed. A second admin may (dual control).
 *   - Default policy: the creator uses its key, another key user does not, the admin administers it.
 *   - GetKey/ListKeys: policy and usage statistics only for who administers the key.
 * Principals: admin and admin-2 (config `admins`), app and billing (config `keyUsers`).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DevCluster } from '@keyshard/devcluster';
import { issueCert } from '@keyshard/pki';
import { KeyshardError, type KeyshardClient } from '@keyshard/client';
import { waitFor } from './support/grpc.ts';

const MSG = Buffer.from('invoice 2024-0001: 4111-1111');

describe('separation of duties: key administrators do not use keys', { timeout: 180_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  let admin2: KeyshardClient;
  let app: KeyshardClient;
  let billing: KeyshardClient;
  /** Every refusal the attacks got, by request id, for the audit check. */
  const refusals: { requestId: string; principal: string; method: string }[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-duties-'));
    cluster = await DevCluster.create({ dir, custodians: 2, threshold: 2, coordinatorOverrides: { admins: ['admin', 'admin-2'], keyUsers: ['app', 'billing'] } });
    for (const p of ['admin-2', 'billing']) cluster.layout.certs[p] = await issueCert(path.join(dir, 'pki'), p, p, 'client');
    await cluster.start();
    await cluster.bootstrap();
    admin = cluster.client('admin');
    admin2 = cluster.client('admin-2');
    app = cluster.client('app');
    billing = cluster.client('billing');
  });

  after(async () => {
    for (const c of [admin, admin2, app, billing]) c?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Expects `call` (made with a fresh request id) refused PERMISSION_DENIED with `reason`; records it for the audit check. */
  async function refused(principal: string, method: string, reason: string, call: (o: { requestId: string }) => Promise<unknown>, words?: RegExp): Promise<void> {
    const requestId = `duties-${randomBytes(8).toString('hex')}`;
    await assert.rejects(call({ requestId }), (e: unknown) => {
      assert.ok(e instanceof KeyshardError, String(e));
      assert.deepEqual([e.code, e.reason], ['PERMISSION_DENIED', reason], `${principal} ${method}: ${e.message}`);
      if (words) assert.match(e.message, words);
      return true;
    });
    refusals.push({ requestId, principal, method });
  }

  it('after `policy set invoices encrypt=app decrypt=app` the admin cannot encrypt, decrypt, make data keys, re-encrypt or batch with it', async () => {
    await admin.createKey('invoices');
    await admin.updateKey('invoices', { policy: { encrypt: ['app'], decrypt: ['app'] } });
    const ct = await app.encrypt('invoices', MSG, { tenant: 'acme' });
    assert.deepEqual((await app.decrypt(ct.ciphertext, { tenant: 'acme' })).plaintext, MSG);

    const why = /admin may not (encrypt|decrypt|generate data key) with key invoices: cluster admins administer keys but use one only when its policy names them/;
    await refused('admin', 'Encrypt', 'KEY_POLICY_DENIED', (o) => admin.encrypt('invoices', MSG, {}, o), why);
    await refused('admin', 'Decrypt', 'KEY_POLICY_DENIED', (o) => admin.decrypt(ct.ciphertext, { tenant: 'acme' }, o), why);
    await refused('admin', 'GenerateDataKey', 'KEY_POLICY_DENIED', (o) => admin.generateDataKey('invoices', 32, {}, o), why);
    await refused('admin', 'GenerateDataKeyWithoutPlaintext', 'KEY_POLICY_DENIED', (o) => admin.generateDataKeyWithoutPlaintext('invoices', 32, {}, o), why);
    await refused('admin', 'ReEncrypt', 'KEY_POLICY_DENIED', (o) => admin.reEncrypt(ct.ciphertext, { tenant: 'acme' }, '', {}, o), why);
    // Batches answer per item: each item refused, nothing in clear.
    const enc = await admin.encryptBatch([{ key: 'invoices', plaintext: MSG }]);
    const dec = await admin.decryptBatch([{ ciphertext: ct.ciphertext, context: { tenant: 'acme' } }]);
    for (const r of [...enc.results, ...dec.results]) assert.deepEqual([r.result ?? null, r.error?.reason], [null, 'KEY_POLICY_DENIED']);
    // ... while it still administers the key: rotation, state, description.
    await admin.rotateKey('invoices');
    await admin.updateKey('invoices', { description: 'invoice PDFs' });
    await admin.disableKey('invoices');
    await admin.enableKey('invoices');
    assert.deepEqual((await app.decrypt(ct.ciphertext, { tenant: 'acme' })).plaintext, MSG, 'the user still decrypts');
  });

  it('the admin cannot sign, verify, read a public key or MAC with a key whose policy does not name it', async () => {
    await app.createKey('app-signer', { type: 'ed25519' });
    await app.createKey('app-mac', { type: 'hmac-sha256' });
    const sig = await app.sign('app-signer', { message: MSG });
    const tag = await app.mac('app-mac', MSG);
    await refused('admin', 'Sign', 'KEY_POLICY_DENIED', (o) => admin.sign('app-signer', { message: MSG }, o));
    await refused('admin', 'Verify', 'KEY_POLICY_DENIED', (o) => admin.verify('app-signer', { message: MSG }, sig.signature, 0, o));
    await refused('admin', 'GetPublicKey', 'KEY_POLICY_DENIED', (o) => admin.getPublicKey('app-signer', 0, o));
    await refused('admin', 'Mac', 'KEY_POLICY_DENIED', (o) => admin.mac('app-mac', MSG, o));
    await refused('admin', 'VerifyMac', 'KEY_POLICY_DENIED', (o) => admin.verifyMac('app-mac', MSG, tag.mac, 0, o));
  });

  it('one admin certificate cannot grant itself use: not by UpdateKey, not by CreateKey, not through an alias; a second admin can', async () => {
    const self = /separation of duties: admin may not grant itself (decrypt|encrypt, decrypt) on key [\w-]+; another administrator, or a user of the key who administers it, must/;
    await refused('admin', 'UpdateKey', 'SEPARATION_OF_DUTIES', (o) => admin.updateKey('invoices', { policy: { encrypt: ['app'], decrypt: ['app', 'admin'] } }, o), self);
    assert.deepEqual((await admin.getKey('invoices')).policy?.grants?.decrypt?.principals, ['app'], 'the refused change did not apply');
    await refused('admin', 'CreateKey', 'SEPARATION_OF_DUTIES', (o) => admin.createKey('admin-own', { policy: { encrypt: ['admin'], decrypt: ['admin'] } }, o), self);
    await assert.rejects(admin.getKey('admin-own'), (e: unknown) => e instanceof KeyshardError && e.reason === 'KEY_NOT_FOUND');
    // A key the admin made without a policy: it administers it and uses nothing.
    await admin.createKey('admin-default');
    await refused('admin', 'Encrypt', 'KEY_POLICY_DENIED', (o) => admin.encrypt('admin-default', MSG, {}, o));

    // The alias route: services encrypt under alias/billing-docs; a key the admin may decrypt with
    // (named by its owner, legitimately) must not become its target, by repointing or by delete + create.
    await admin.createKey('billing-docs-key', { policy: { encrypt: ['app'], decrypt: ['app'] } });
    await admin.createAlias('billing-docs', 'billing-docs-key');
    await app.createKey('shared-with-admin', { policy: { admin: ['app'], encrypt: ['app'], decrypt: ['app', 'admin'] } });
    const aliasWhy = /separation of duties: admin may decrypt with key shared-with-admin, so it may not point alias billing-docs at it/;
    await refused('admin', 'UpdateAlias', 'SEPARATION_OF_DUTIES', (o) => admin.updateAlias('billing-docs', 'shared-with-admin', o), aliasWhy);
    await admin.deleteAlias('billing-docs');
    await refused('admin', 'CreateAlias', 'SEPARATION_OF_DUTIES', (o) => admin.createAlias('billing-docs', 'shared-with-admin', o), aliasWhy);
    await admin.createAlias('billing-docs', 'billing-docs-key');
    assert.equal((await app.encrypt('alias/billing-docs', MSG)).key_id, (await admin.getKey('billing-docs-key')).id);

    // ReEncrypt into a key the admin may use needs decrypt on the source: refused.
    const ct = await app.encrypt('invoices', MSG);
    await refused('admin', 'ReEncrypt', 'KEY_POLICY_DENIED', (o) => admin.reEncrypt(ct.ciphertext, {}, 'shared-with-admin', {}, o));

    // Dual control: a second admin names the first, which then decrypts, and keeps it when it edits the policy.
    await admin2.updateKey('invoices', { policy: { encrypt: ['app'], decrypt: ['app', 'admin'] } });
    assert.deepEqual((await admin.decrypt(ct.ciphertext)).plaintext, MSG);
    await admin.updateKey('invoices', { policy: { encrypt: ['app'], decrypt: ['admin'] } });
    await refused('app', 'Decrypt', 'KEY_POLICY_DENIED', (o) => app.decrypt(ct.ciphertext, {}, o));
  });

  it('default policy: its creator uses the key, another key user does not, the admin administers it but cannot use it', async () => {
    const k = await app.createKey('app-default');
    assert.deepEqual(k.policy?.grants ?? {}, {}, 'the default policy is empty');
    const ct = await app.encrypt('app-default', MSG);
    assert.deepEqual((await app.decrypt(ct.ciphertext)).plaintext, MSG);
    await refused('billing', 'Encrypt', 'KEY_POLICY_DENIED', (o) => billing.encrypt('app-default', MSG, {}, o), /^billing may not encrypt with key app-default$/);
    await refused('billing', 'Decrypt', 'KEY_POLICY_DENIED', (o) => billing.decrypt(ct.ciphertext, {}, o));
    await refused('billing', 'RotateKey', 'KEY_POLICY_DENIED', (o) => billing.rotateKey('app-default', o));
    await refused('admin', 'Decrypt', 'KEY_POLICY_DENIED', (o) => admin.decrypt(ct.ciphertext, {}, o));
    assert.equal((await admin.rotateKey('app-default')).primary_version, 2);
    // The app may not steer an alias onto a key it uses; the admin, who cannot use it, may.
    await refused('app', 'CreateAlias', 'SEPARATION_OF_DUTIES', (o) => app.createAlias('app-default-alias', 'app-default', o));
    await admin.createAlias('app-default-alias', 'app-default');
    assert.equal((await app.encrypt('alias/app-default-alias', MSG)).key_version, 2);
  });

  it('GetKey and ListKeys show the policy and usage statistics only to who administers the key', async () => {
    await admin.createKey('reports', { policy: { encrypt: ['app', 'billing'], decrypt: ['app'] } });
    await app.encrypt('reports', MSG);
    const seen = async (c: KeyshardClient) => {
      const k = await c.getKey('reports');
      const listed = (await c.listKeys(1000)).keys.find((x) => x.name === 'reports')!;
      return [k, listed].map((x) => ({ administers: x.caller_administers, ops: Object.keys(x.policy?.grants ?? {}).sort(), encryptions: x.versions[0]!.encryptions, used: x.versions[0]!.last_used_at !== '' }));
    };
    const administrator = { administers: true, ops: ['decrypt', 'encrypt'], encryptions: 0, used: true };
    for (const [who, c] of [['admin', admin], ['admin-2', admin2]] as const) {
      const [got, listed] = await seen(c);
      assert.ok(got!.encryptions > 0, `${who} sees the encryption count`);
      assert.deepEqual([{ ...got!, encryptions: 0 }, { ...listed!, encryptions: 0 }], [administrator, administrator], who);
    }
    const user = { administers: false, ops: [], encryptions: 0, used: false };
    for (const [who, c] of [['app', app], ['billing', billing]] as const) assert.deepEqual(await seen(c), [user, user], who);
    // The key's owner (default policy) sees its own key's policy; another user does not.
    assert.equal((await app.getKey('app-default')).caller_administers, true);
    assert.equal((await billing.getKey('app-default')).caller_administers, false);
  });

  it('every refusal above is in the audit log as denied, with its principal and operation', async () => {
    assert.ok(refusals.length >= 20, `${refusals.length} refusals`);
    const byId = await waitFor('every refusal in the audit log', async () => {
      const events = readFileSync(cluster.auditLogFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l).event);
      const ids = new Map(events.filter((e) => e.request_id?.startsWith('duties-')).map((e) => [e.request_id as string, e]));
      return refusals.every((r) => ids.has(r.requestId)) ? ids : undefined;
    });
    for (const r of refusals) {
      const e = byId.get(r.requestId)!;
      assert.deepEqual({ operation: e.operation, principal: e.principal, result: e.result, code: e.code }, { operation: `keys.${r.method}`, principal: r.principal, result: 'denied', code: 'PERMISSION_DENIED' });
    }
  });
});
