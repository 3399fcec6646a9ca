/**
 * The per-key policy matrix against a real cluster: every principal the dev cluster issues a
 * certificate to × every key operation (key-policy.ts: encrypt, decrypt, sign, verify, mac,
 * generate_data_key, rotate, admin), each tried through every RPC that needs it.
 *   - Separation of duties: the admin role administers every key (rotate, admin) and uses none
 *     whose policy does not name it.
 *   - Default policy: a key user's key is used and administered by its creator; an admin's key
 *     is used by nobody; every other principal is PERMISSION_DENIED.
 *   - Granting one operation (UpdateKey's policy) opens exactly that operation, and only for a
 *     principal with the key-user role: the role is checked before the key's policy.
 *   - Every denial is audited, as denied, with its principal and request id.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { aeadOf, encryptWithVersion } from '@keyshard/crypto';
import { DevCluster } from '@keyshard/devcluster';
import { isServiceError, keyshardProto, makeClient, readTls, unaryCallUnchecked } from '@keyshard/rpc';
import { waitFor } from './support/grpc.ts';

const OPERATIONS = ['encrypt', 'decrypt', 'sign', 'verify', 'mac', 'generate_data_key', 'rotate', 'admin'] as const;
type Operation = (typeof OPERATIONS)[number];
const ADMINISTRATION: readonly Operation[] = ['rotate', 'admin'];
/** What the admin role may do with a key whose policy does not name it: administer, never use. */
const administers = (p: string, op: Operation) => p === 'admin' && ADMINISTRATION.includes(op);

/** One key per usage, and what the probes need of each: a ciphertext, a signature, a MAC. */
interface KeySet {
  enc: string;
  sig: string;
  mac: string;
  ciphertext: Buffer;
  signature: Buffer;
  tag: Buffer;
}

const MESSAGE = Buffer.from('policy matrix probe');
const CONTEXT = { purpose: 'policy-matrix' };

/** Every RPC that needs the operation, as [method, request]; admin's probes leave the key enabled. */
const PROBES: Record<Operation, (k: KeySet) => [string, object][]> = {
  encrypt: (k) => [['Encrypt', { key: k.enc, plaintext: MESSAGE, context: CONTEXT }]],
  decrypt: (k) => [['Decrypt', { ciphertext: k.ciphertext, context: CONTEXT }]],
  sign: (k) => [['Sign', { key: k.sig, message: MESSAGE }]],
  verify: (k) => [['Verify', { key: k.sig, message: MESSAGE, signature: k.signature }], ['GetPublicKey', { key: k.sig }]],
  mac: (k) => [['Mac', { key: k.mac, message: MESSAGE }], ['VerifyMac', { key: k.mac, message: MESSAGE, mac: k.tag }]],
  generate_data_key: (k) => [['GenerateDataKey', { key: k.enc, length: 32 }], ['GenerateDataKeyWithoutPlaintext', { key: k.enc, length: 32 }]],
  rotate: (k) => [['RotateKey', { key: k.mac }], ['SetRotationPolicy', { key: k.mac, rotation: { period_seconds: 0 } }]],
  admin: (k) => [['DisableKey', { key: k.mac }], ['EnableKey', { key: k.mac }], ['UpdateKey', { key: k.mac, description: 'probed' }]],
};

describe('per-key policy matrix: every principal × every key operation', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let principals: string[];
  const keys = new Map<string, grpc.Client>();
  /** Request ids of every denial the matrix saw, with who was denied what. */
  const denials: { requestId: string; principal: string; method: string }[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-policy-'));
    cluster = await DevCluster.create({ dir, custodians: 2, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
    // Every certificate that can be a TLS client: etcd's is server-only (@keyshard/pki profiles) and never gets past the handshake.
    principals = Object.keys(cluster.layout.certs).filter((p) => p !== 'etcd').sort();
    for (const p of principals) keys.set(p, makeClient(keyshardProto().KeyService, cluster.coordinatorAddress, readTls(cluster.layout.certs[p]!)));
  });

  after(async () => {
    for (const c of keys.values()) c.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function call(principal: string, method: string, req: object): Promise<{ code: string; details: string; res?: any; requestId: string }> {
    const requestId = `matrix-${randomBytes(8).toString('hex')}`;
    try {
      return { code: 'OK', details: '', res: await unaryCallUnchecked(keys.get(principal)!, method, req, { requestId }), requestId };
    } catch (e) {
      if (!isServiceError(e)) throw e;
      return { code: grpc.status[e.code]!, details: e.details, requestId };
    }
  }

  async function ok(principal: string, method: string, req: object): Promise<any> {
    const r = await call(principal, method, req);
    assert.equal(r.code, 'OK', `${principal} ${method}: ${r.details}`);
    return r.res;
  }

  /**
   * Three keys made by `creator`, and a ciphertext, signature and MAC of them made by `producer`
   * (who may use them). With no producer, nobody may use the keys: the probes get a ciphertext
   * that names the key but was made under a random key, and random bytes as signature and MAC
   * (every probe is refused before they are looked at).
   */
  async function keySet(creator: string, tag: string, producer?: string): Promise<KeySet> {
    const [enc, sig, mac] = ['aes256-gcm', 'ed25519', 'hmac-sha256'].map((t) => `pm-${tag}-${t}`) as [string, string, string];
    const ids: string[] = [];
    for (const [name, type] of [[enc, 'aes256-gcm'], [sig, 'ed25519'], [mac, 'hmac-sha256']]) ids.push((await ok(creator, 'CreateKey', { name, type })).id);
    if (!producer)
      return { enc, sig, mac, ciphertext: encryptWithVersion(randomBytes(32), { keyId: ids[0]!, keyVersion: 1 }, MESSAGE, CONTEXT, aeadOf('aes256-gcm')), signature: randomBytes(64), tag: randomBytes(32) };
    return {
      enc,
      sig,
      mac,
      ciphertext: (await ok(producer, 'Encrypt', { key: enc, plaintext: MESSAGE, context: CONTEXT })).ciphertext,
      signature: (await ok(producer, 'Sign', { key: sig, message: MESSAGE })).signature,
      tag: (await ok(producer, 'Mac', { key: mac, message: MESSAGE })).mac,
    };
  }

  /** keySet by the admin, whose material `app` makes under a policy the admin then replaces with `grants`. */
  async function adminKeySet(tag: string, grants: Record<string, string[]>): Promise<KeySet> {
    const [enc, sig, mac] = ['aes256-gcm', 'ed25519', 'hmac-sha256'].map((t) => `pm-${tag}-${t}`) as [string, string, string];
    const producing = { grants: { encrypt: { principals: ['app'] }, sign: { principals: ['app'] }, mac: { principals: ['app'] } } };
    for (const [name, type] of [[enc, 'aes256-gcm'], [sig, 'ed25519'], [mac, 'hmac-sha256']]) await ok('admin', 'CreateKey', { name, type, policy: producing });
    const k = {
      enc,
      sig,
      mac,
      ciphertext: (await ok('app', 'Encrypt', { key: enc, plaintext: MESSAGE, context: CONTEXT })).ciphertext,
      signature: (await ok('app', 'Sign', { key: sig, message: MESSAGE })).signature,
      tag: (await ok('app', 'Mac', { key: mac, message: MESSAGE })).mac,
    };
    const policy = { grants: Object.fromEntries(Object.entries(grants).map(([op, principals]) => [op, { principals }])) };
    for (const key of [enc, sig, mac]) {
      const updated = await ok('admin', 'UpdateKey', { key, policy });
      for (const [op, principals] of Object.entries(grants)) assert.deepEqual(updated.policy.grants[op].principals, principals);
    }
    return k;
  }

  /** Tries every operation as every principal; returns each cell that is not as `allowed` says. */
  async function matrix(k: KeySet, allowed: (principal: string, op: Operation) => boolean): Promise<string[]> {
    const wrong: string[] = [];
    for (const op of OPERATIONS)
      for (const p of principals)
        for (const [method, req] of PROBES[op](k)) {
          const r = await call(p, method, req);
          const expected = allowed(p, op) ? 'OK' : 'PERMISSION_DENIED';
          if (r.code === 'PERMISSION_DENIED') denials.push({ requestId: r.requestId, principal: p, method });
          if (r.code !== expected) wrong.push(`${p} ${op} (${method}): ${r.code} "${r.details}", expected ${expected}`);
          else if (r.code === 'PERMISSION_DENIED' && !r.details.includes(p)) wrong.push(`${p} ${op} (${method}): the denial does not name the principal: "${r.details}"`);
          if (method === 'Verify' && r.code === 'OK') assert.equal(r.res.valid, true);
        }
    return wrong;
  }

  it('the dev cluster issues certificates to admin, app, auditor, its components and the custodian operators', () => {
    for (const p of ['admin', 'app', 'auditor', 'coordinator-1', 'custodian-1', 'custodian-1-operator', 'custodian-2-operator', 'audit-sink'])
      assert.ok(principals.includes(p), `${p} in ${principals.join(', ')}`);
  });

  it('default policy: a key user\'s key is its creator\'s to use and administer; the admin administers it and uses nothing; an admin\'s key nobody uses', async () => {
    assert.deepEqual(await matrix(await keySet('app', 'by-app', 'app'), (p, op) => p === 'app' || administers(p, op)), []);
    assert.deepEqual(await matrix(await keySet('admin', 'by-admin'), administers), []);
  });

  it('granting one operation opens exactly that operation, and only for a principal with the key-user role; the admin still only administers', async () => {
    const others = principals.filter((p) => p !== 'admin');
    for (const granted of OPERATIONS) {
      const k = await adminKeySet(`grant-${granted.replace(/_/g, '-')}`, { [granted]: others });
      const grants = (op: Operation) => op === granted || (granted === 'admin' && op === 'rotate'); // admin includes rotate
      assert.deepEqual(await matrix(k, (p, op) => administers(p, op) || (p === 'app' && grants(op))), [], `after granting ${granted}`);
    }
  });

  it('the admin uses a key only when another principal names it: then exactly the named operations', async () => {
    const k = await keySet('app', 'names-admin', 'app');
    const policy = { grants: { decrypt: { principals: ['admin'] }, verify: { principals: ['admin'] }, admin: { principals: ['app'] } } };
    for (const key of [k.enc, k.sig, k.mac]) await ok('app', 'UpdateKey', { key, policy }); // app names the admin, not itself: no self-grant
    assert.deepEqual(await matrix(k, (p, op) => (p === 'admin' && ['decrypt', 'verify', 'rotate', 'admin'].includes(op)) || (p === 'app' && ADMINISTRATION.includes(op))), []);
  });

  it('a grant can be taken back: the operation closes again', async () => {
    const k = await keySet('admin', 'revoked');
    await ok('admin', 'UpdateKey', { key: k.enc, policy: { grants: { encrypt: { principals: ['app'] } } } });
    await ok('app', 'Encrypt', { key: k.enc, plaintext: MESSAGE });
    await ok('admin', 'UpdateKey', { key: k.enc, policy: { grants: { decrypt: { principals: ['app'] } } } });
    const r = await call('app', 'Encrypt', { key: k.enc, plaintext: MESSAGE });
    assert.equal(r.code, 'PERMISSION_DENIED', r.details);
    assert.match(r.details, /app may not encrypt with key pm-revoked-aes256-gcm/);
  });

  it('aliases follow the key: a key user cannot point, repoint or delete an alias of a key it may not administer', async () => {
    await ok('admin', 'CreateKey', { name: 'pm-payments' });
    await ok('admin', 'CreateAlias', { name: 'pm-pay', key: 'pm-payments' });
    await ok('app', 'CreateKey', { name: 'pm-app-own' });
    const refusals = [
      await call('app', 'UpdateAlias', { name: 'pm-pay', key: 'pm-app-own' }),
      await call('app', 'CreateAlias', { name: 'pm-pay-2', key: 'pm-payments' }),
      await call('app', 'DeleteAlias', { name: 'pm-pay' }),
    ];
    assert.deepEqual(
      refusals.map((r) => r.code),
      ['PERMISSION_DENIED', 'PERMISSION_DENIED', 'PERMISSION_DENIED'],
      `app repointed, made or deleted an alias of the admin key: ${refusals.map((r) => `${r.code} ${r.details}`).join('; ')}`,
    );
    const target = (await ok('admin', 'GetKey', { key: 'alias/pm-pay' })).id;
    assert.equal(target, (await ok('admin', 'GetKey', { key: 'pm-payments' })).id, 'alias/pm-pay still names the admin key');
  });

  it('every denial is in the audit log, as denied, with its principal and operation', async () => {
    assert.ok(denials.length > 500, `${denials.length} denials`);
    const byId = await waitFor('every denial in the audit log', async () => {
      const records = readFileSync(cluster.auditLogFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l).event);
      const ids = new Map(records.filter((e) => e.request_id?.startsWith('matrix-')).map((e) => [e.request_id as string, e]));
      return denials.every((d) => ids.has(d.requestId)) ? ids : undefined;
    });
    for (const d of denials) {
      const e = byId.get(d.requestId)!;
      assert.deepEqual({ operation: e.operation, principal: e.principal, result: e.result, code: e.code }, { operation: `keys.${d.method}`, principal: d.principal, result: 'denied', code: 'PERMISSION_DENIED' });
    }
  });
});
