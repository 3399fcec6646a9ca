/**
 * Security properties against a real cluster: no plaintext key material or plaintext in
 * etcd, logs, audit records or anywhere on disk; shares unreadable from the tokens; mutual
 * TLS refuses strangers; roles are enforced; bad input gets a clear status and crashes nothing.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { APP, DevCluster, ETCD_ROOT } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { issueCert } from '@keyshard/pki';
import { keyshardProto, makeClient, readTls, unaryCall, CHANNEL_OPTIONS } from '@keyshard/rpc';
import { clusterNamespace, connectEtcd } from '@keyshard/store';
import {
  encryptWithVersion, newCeremony, sealAesGcm, splitRootKey, wrapKek, wrapVersion, type ShareManifest,
} from '@keyshard/crypto';
import { LeakScanner, type Probes } from './support/leaks.ts';
import { rejectsWith } from './support/grpc.ts';

const run = promisify(execFile);
const MODULE = '/usr/lib/softhsm/libsofthsm2.so';

describe('security properties', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let client: KeyshardClient;
  /** The service principal that makes and uses the keys (the admin administers; it does not use them). */
  let user: KeyshardClient;
  let clusterId: string;
  const context = { tenant: 'security-test', record: '42' };
  const plaintexts = [0, 1, 2].map((i) => Buffer.from(`top secret payload ${i} ${randomBytes(12).toString('hex')}`));
  const ciphertexts: { blob: Buffer; context: Record<string, string> }[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-security-'));
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
    client = cluster.client();
    user = cluster.client(APP);
    clusterId = (await client.status()).cluster_id;
    await user.createKey('payments');
    for (const pt of plaintexts) ciphertexts.push({ blob: (await user.encrypt('payments', pt, context)).ciphertext, context });
  });

  after(async () => {
    client?.close();
    user?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function etcdDump(): Promise<Map<string, Buffer>> {
    // The whole keyspace, as the etcd operator reads it (a coordinator's etcd user may read only its cluster's prefix).
    const etcd = connectEtcd({ endpoints: [`https://127.0.0.1:${cluster.layout.plan.ports.etcdClient}`], tls: readTls(cluster.layout.certs[ETCD_ROOT]!) });
    try {
      const all = await etcd.getAll().prefix('').buffers();
      return new Map(Object.entries(all));
    } finally {
      etcd.close();
    }
  }

  async function probes(): Promise<Probes> {
    const ns = new Map(await etcdDump());
    const get = (k: string) => ns.get(`/keyshard/dev/${k}`)!;
    const manifest = JSON.parse(get('manifest').toString()) as ShareManifest;
    const kek = JSON.parse(get('keks/1').toString()) as { wrapped: string };
    const keyId = ciphertexts[0]!.blob.subarray(4, 4 + ciphertexts[0]!.blob[3]!).toString();
    const version = JSON.parse(get(`versions/${keyId}/0000000001`).toString()) as { wrapped: string };
    return {
      clusterId,
      plaintexts,
      ciphertexts,
      wrappedKek: { epoch: 1, wrapped: Buffer.from(kek.wrapped, 'base64') },
      wrappedVersion: { keyId, version: 1, wrapped: Buffer.from(version.wrapped, 'base64') },
      manifest,
    };
  }

  it('the leak scanner finds planted secrets of every kind (positive control)', async () => {
    const root = randomBytes(32);
    const kek = randomBytes(32);
    const material = randomBytes(32);
    const pt = Buffer.from(`planted ${randomBytes(8).toString('hex')}`);
    const { manifest, shares } = await splitRootKey(root, 'c-planted', [1, 2].map((i) => ({ id: `c${i}`, enrollmentPublicKeyPem: '', approvalPublicKeyPem: '' })), 2);
    const scanner = new LeakScanner({
      clusterId: 'c-planted',
      plaintexts: [pt],
      ciphertexts: [{ blob: encryptWithVersion(material, { keyId: 'k_planted', keyVersion: 1 }, pt, {}), context: {} }],
      wrappedKek: { epoch: 1, wrapped: wrapKek(root, 'c-planted', 1, kek) },
      wrappedVersion: { keyId: 'k_planted', version: 1, wrapped: wrapVersion(kek, 'c-planted', 'k_planted', 1, material) },
      manifest,
    });
    const found = (data: Buffer) => new Set(scanner.scanBuffer('planted', data).map((f) => f.what));
    assert.ok(found(Buffer.from(`{"x":"${root.toString('base64')}"}`)).has('root key'));
    assert.ok(found(Buffer.from(`kek=${kek.toString('hex')}`)).has('key-encryption key'));
    assert.ok(found(Buffer.concat([randomBytes(7), material, randomBytes(5)])).has('key version material'));
    assert.ok(found(Buffer.from(Buffer.from(shares[1]!).toString('base64'))).has('Shamir share'));
    assert.ok(found(Buffer.from(`log: ${pt.toString('base64')}`)).has('plaintext (base64)'));
    assert.deepEqual(scanner.scanBuffer('clean', Buffer.from(sealAesGcm(kek, pt, Buffer.alloc(0)).toString('base64'))), []);
  });

  it('etcd holds no root key, share, KEK, key material or plaintext', async () => {
    const scanner = new LeakScanner(await probes());
    const dump = await etcdDump();
    assert.ok([...dump.keys()].some((k) => k.startsWith('/keyshard/dev/versions/')), 'one etcd key per key version');
    const findings = [...dump].flatMap(([k, v]) => scanner.scanBuffer(`etcd:${k}`, v));
    assert.deepEqual(findings, []);
  });

  it('nothing on disk (etcd data, logs, audit log, configs, tokens) holds them either', async () => {
    await user.decrypt(ciphertexts[0]!.blob, context);
    const scanner = new LeakScanner(await probes());
    const { findings, files } = scanner.scanTree(dir);
    assert.ok(files > 20, `scanned ${files} files`);
    assert.deepEqual(findings, []);
  });

  it('pkcs11-tool cannot read the value of any share object', async () => {
    for (const id of cluster.custodianIds) {
      const env = { ...process.env, SOFTHSM2_CONF: cluster.layout.softhsmConf[id] };
      const pin = readFileSync(cluster.layout.pinFile[id]!, 'utf8').trim();
      const base = ['--module', MODULE, '--token-label', id, '--login', '--pin', pin];
      const listed = await run('pkcs11-tool', [...base, '--list-objects', '--type', 'secrkey'], { env });
      assert.match(listed.stdout, new RegExp(`keyshard-share:${clusterId}`), `${id} holds its share`);
      const out = path.join(dir, `${id}-share.bin`);
      const read = await run('pkcs11-tool', [...base, '--read-object', '--type', 'secrkey', '--label', `keyshard-share:${clusterId}`, '--output-file', out], { env }).then(
        (r) => ({ ok: true, text: r.stdout + r.stderr }),
        (e) => ({ ok: false, text: `${e.stdout}${e.stderr}` }),
      );
      assert.equal(read.ok, false, `reading ${id}'s share must fail: ${read.text}`);
      assert.match(read.text, /CKR_ATTRIBUTE_SENSITIVE|sensitive|error/i);
    }
  });

  it('a caller without a client certificate is refused', async () => {
    const tls = readTls(cluster.layout.certs.admin!);
    const raw = new (keyshardProto().CeremonyService)(cluster.coordinatorAddress, grpc.credentials.createSsl(tls.ca), {
      ...CHANNEL_OPTIONS,
      'grpc.ssl_target_name_override': 'localhost',
    });
    await rejectsWith(unaryCall(raw, 'Status', {}, { timeoutMs: 3_000 }), 'UNAVAILABLE');
    raw.close();
  });

  it('a certificate from another CA is refused, even with an admin name', async () => {
    const evil = await issueCert(path.join(dir, 'evil-pki'), 'admin');
    const c = makeClient(keyshardProto().CeremonyService, cluster.coordinatorAddress, readTls(evil));
    await rejectsWith(unaryCall(c, 'Status', {}, { timeoutMs: 3_000 }), 'UNAVAILABLE');
    c.close();
  });

  it('a client certificate cannot call custodian or audit RPCs', async () => {
    const tls = readTls(cluster.layout.certs.admin!);
    const cust = makeClient(keyshardProto().CustodianService, cluster.custodianAddress('custodian-1'), tls);
    await rejectsWith(unaryCall(cust, 'GetIdentity', {}), 'PERMISSION_DENIED');
    await rejectsWith(unaryCall(cust, 'Approve', { ceremony_id: 'cer-x' }), 'PERMISSION_DENIED');
    cust.close();
    const audit = makeClient(keyshardProto().AuditService, `127.0.0.1:${cluster.layout.plan.ports.audit}`, tls);
    await rejectsWith(unaryCall(audit, 'Query', {}), 'PERMISSION_DENIED');
    const stream = (audit as unknown as { Append(): grpc.ClientDuplexStream<unknown, unknown> }).Append();
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      stream.on('error', resolve);
      stream.on('data', () => {});
      stream.write({ batch: 1, events: [{ id: 'evt-forged', operation: 'forged', principal: 'admin', result: 'ok' }] });
    });
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    audit.close();
  });

  it('admin operations need the admin role, and the denial is audited', async () => {
    const auditor = cluster.client('auditor');
    await rejectsWith(auditor.seal(), 'PERMISSION_DENIED', /admin role/);
    await rejectsWith(auditor.startUnseal(), 'PERMISSION_DENIED');
    await rejectsWith(auditor.encrypt('payments', Buffer.from('x')), 'PERMISSION_DENIED', /may not use the key service/);
    await rejectsWith(auditor.decrypt(ciphertexts[0]!.blob, context), 'PERMISSION_DENIED');
    const component = cluster.client('custodian-1');
    await rejectsWith(component.listKeys(), 'PERMISSION_DENIED');
    component.close();
    auditor.close();
    assert.equal((await client.status()).sealed, false);
    const denied = readFileSync(cluster.auditLogFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"operation":"ceremony.Seal"') && l.includes('"result":"denied"'));
    assert.equal(denied.length, 1);
    assert.match(denied[0]!, /"principal":"auditor"/);
  });

  it('bad input gets a clear status and crashes nothing', async () => {
    const ct = ciphertexts[0]!.blob;
    await rejectsWith(user.encrypt('no-such-key', Buffer.from('x')), 'NOT_FOUND', /no-such-key/);
    await rejectsWith(client.getKey('k_AAAAAAAAAAAAAAAAAAAAAA'), 'NOT_FOUND');
    await rejectsWith(user.decrypt(Buffer.from('garbage that is not a ciphertext'), context), 'INVALID_ARGUMENT', /not a keyshard ciphertext/);
    await rejectsWith(user.decrypt(ct.subarray(0, ct.length - 20), context), 'INVALID_ARGUMENT');
    await rejectsWith(user.decrypt(ct.subarray(0, 10), context), 'INVALID_ARGUMENT', /truncated/);
    await rejectsWith(user.decrypt(Buffer.alloc(0), context), 'INVALID_ARGUMENT', /truncated/);
    await rejectsWith(user.encrypt('payments', Buffer.alloc(64 * 1024 + 1)), 'INVALID_ARGUMENT', /limit is 65536/);
    const big = await user.encrypt('payments', Buffer.alloc(64 * 1024, 1));
    assert.equal((await user.decrypt(big.ciphertext)).plaintext.length, 64 * 1024);
    await rejectsWith(user.createKey(''), 'INVALID_ARGUMENT', /must not be empty/);
    await rejectsWith(user.createKey('x'.repeat(129)), 'INVALID_ARGUMENT', /longer than 128/);
    await rejectsWith(user.createKey('bad name!'), 'INVALID_ARGUMENT');
    await rejectsWith(user.createKey('payments'), 'ALREADY_EXISTS');
    await rejectsWith(client.listKeys(5000), 'INVALID_ARGUMENT', /page_size/);
    const err = await rejectsWith(user.decrypt(ct, { tenant: 'other' }), 'INVALID_ARGUMENT', 'WRONG_CONTEXT');
    for (const pt of plaintexts) assert.ok(!err.message.includes(pt.toString()));
    assert.ok(cluster.process('coordinator-1').running, 'the coordinator is still running');
  });

  it('a custodian refuses a ceremony of another cluster, an expired one, or one whose hash does not match', async () => {
    const asCoordinator = makeClient(keyshardProto().CustodianService, cluster.custodianAddress('custodian-2'), readTls(cluster.layout.certs['coordinator-1']!));
    const recipients = [{ coordinator_id: 'coordinator-1', public_key_pem: 'x', ephemeral_public_key_pem: 'x' }];
    const other = newCeremony({ operation: 'unseal', clusterId: 'c-someoneelse', initiator: 'admin', ttlSeconds: 60, recipients, threshold: 2 });
    await rejectsWith(unaryCall(asCoordinator, 'ProposeCeremony', { ceremony: other }), 'FAILED_PRECONDITION', /another cluster/);
    const expired = newCeremony({ operation: 'unseal', clusterId, initiator: 'admin', ttlSeconds: 60, recipients, threshold: 2, now: Date.now() - 120_000 });
    await rejectsWith(unaryCall(asCoordinator, 'ProposeCeremony', { ceremony: expired }), 'FAILED_PRECONDITION', /expired/);
    const tampered = newCeremony({ operation: 'unseal', clusterId, initiator: 'admin', ttlSeconds: 60, recipients, threshold: 2 });
    tampered.recipients = [{ coordinator_id: 'attacker', public_key_pem: 'x', ephemeral_public_key_pem: 'x' }];
    await rejectsWith(unaryCall(asCoordinator, 'ProposeCeremony', { ceremony: tampered }), 'INVALID_ARGUMENT', /hash does not match/);
    // A share in use cannot be overwritten by a coordinator identity outside a ceremony.
    const replace = { cluster_id: clusterId, encrypted_share: randomBytes(256), x: 1, replace: true };
    await rejectsWith(unaryCall(asCoordinator, 'DeliverShare', replace), 'FAILED_PRECONDITION', /reshare ceremony/);
    asCoordinator.close();
    assert.ok(cluster.process('custodian-2').running);
    await rejectsWith(client.startUnseal(10 ** 6), 'INVALID_ARGUMENT', /ttl_seconds/);
  });

  it('every request is in the audit log, which is hash-chained and holds no secrets', async () => {
    const records = readFileSync(cluster.auditLogFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const encrypts = records.filter((r) => r.event.operation === 'keys.Encrypt' && r.event.result === 'ok');
    assert.ok(encrypts.length >= plaintexts.length + 1);
    assert.ok(encrypts.every((r) => r.event.key_id.startsWith('k_') && r.event.principal === 'app' && r.event.request_id));
    for (const op of ['ceremony.Init', 'ceremony.unseal.created', 'ceremony.unseal.share_accepted', 'ceremony.unseal.completed', 'custodian.ProposeCeremony', 'custodian.DeliverShare'])
      assert.ok(records.some((r) => r.event.operation === op), `audit has ${op}`);
    records.forEach((r, i) => assert.equal(r.index, i));
    // The compiled CLI, as shipped, with the trust roots `keyshard dev` keeps outside the log folder.
    const { stdout } = await run(process.execPath, ['packages/cli/bin/keyshard.js', 'audit', 'verify', cluster.layout.auditDir, '--trust', cluster.trustFile, '--json']);
    const verdict = JSON.parse(stdout) as { ok: boolean; records: number };
    assert.equal(verdict.ok, true);
    assert.equal(verdict.records, records.length);
  });
});
