/**
 * The sealed-cluster lifecycle against real etcd, SoftHSM tokens and service processes:
 * init 3-of-5, unseal with exactly 3 while 2 are down, seal and unseal with a different 3,
 * restart everything, and a corrupted share named while the unseal completes without it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { APP, DevCluster, unsealAndWait } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { rejectsWith } from './support/grpc.ts';

describe('sealed cluster lifecycle', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let client: KeyshardClient;
  /** The service principal that makes and uses the key (the admin, `client`, runs the ceremonies). */
  let user: KeyshardClient;
  const secret = Buffer.from(`lifecycle secret ${randomBytes(8).toString('hex')}`);
  const context = { tenant: 'acme', purpose: 'invoices' };
  let ciphertext: Buffer;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-lifecycle-'));
    cluster = await DevCluster.create({ dir, custodians: 5, threshold: 3 });
    await cluster.start();
    client = cluster.client();
    user = cluster.client(APP);
  });

  after(async () => {
    client?.close();
    user?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts sealed and uninitialized; invalid n or t are refused', async () => {
    const s = await client.status();
    assert.equal(s.initialized, false);
    assert.equal(s.sealed, true);
    await rejectsWith(client.init(5, 1), 'INVALID_ARGUMENT', /threshold must be at least 2/);
    await rejectsWith(client.init(5, 6), 'INVALID_ARGUMENT', /at least the threshold/);
    await rejectsWith(client.init(6, 3), 'INVALID_ARGUMENT', /exceeds the 5 configured custodians/);
    await rejectsWith(user.createKey('early'), 'FAILED_PRECONDITION', 'UNINITIALIZED'); // sealed, but there is nothing to unseal yet
  });

  it('init with n = 5, t = 3 leaves the cluster sealed', async () => {
    const r = await client.init(5, 3);
    assert.equal(r.shares, 5);
    assert.equal(r.threshold, 3);
    assert.deepEqual(r.custodian_ids, cluster.custodianIds);
    const s = await client.status();
    assert.equal(s.initialized, true);
    assert.equal(s.sealed, true);
    await rejectsWith(client.init(5, 3), 'FAILED_PRECONDITION', 'ALREADY_INITIALIZED');
  });

  it('unseals with exactly 3 custodians while 2 are stopped', async () => {
    await cluster.process('custodian-4').stop();
    await cluster.process('custodian-5').stop();
    const s = await client.status();
    assert.deepEqual(s.custodians.map((c) => c.reachable), [true, true, true, false, false]);
    const c = await unsealAndWait(client);
    assert.deepEqual([...c.approved_by].sort(), ['custodian-1', 'custodian-2', 'custodian-3']);
    assert.equal((await client.status()).sealed, false);
  });

  it('encrypts and decrypts; another context fails', async () => {
    const key = await user.createKey('invoices');
    const enc = await user.encrypt('invoices', secret, context);
    assert.equal(enc.key_id, key.id);
    assert.equal(enc.key_version, 1);
    ciphertext = enc.ciphertext;
    const dec = await user.decrypt(ciphertext, { purpose: 'invoices', tenant: 'acme' });
    assert.deepEqual(dec.plaintext, secret);
    await rejectsWith(user.decrypt(ciphertext, { tenant: 'acme' }), 'INVALID_ARGUMENT', /encryption context/);
    await rejectsWith(user.decrypt(ciphertext, {}), 'INVALID_ARGUMENT');
    const byId = await user.decrypt(ciphertext, context);
    assert.equal(byId.key_id, key.id);
  });

  it('seal refuses encryption; a different 3 unseal and the old ciphertext decrypts', async () => {
    await client.seal();
    await rejectsWith(user.encrypt('invoices', secret, context), 'FAILED_PRECONDITION', 'SEALED');
    await rejectsWith(user.decrypt(ciphertext, context), 'FAILED_PRECONDITION', 'SEALED');
    await rejectsWith(client.getKey('invoices'), 'FAILED_PRECONDITION', 'SEALED');
    await cluster.start(['custodian-4', 'custodian-5']);
    await cluster.process('custodian-1').stop();
    await cluster.process('custodian-2').stop();
    const c = await unsealAndWait(client);
    assert.deepEqual([...c.approved_by].sort(), ['custodian-3', 'custodian-4', 'custodian-5']);
    assert.deepEqual((await user.decrypt(ciphertext, context)).plaintext, secret);
  });

  it('every process restarted: state survives and unseal works again', async () => {
    client.close();
    user.close();
    await cluster.stop();
    await cluster.start();
    client = cluster.client();
    user = cluster.client(APP);
    const s = await client.status();
    assert.equal(s.initialized, true);
    assert.equal(s.sealed, true);
    await unsealAndWait(client);
    assert.deepEqual((await user.decrypt(ciphertext, context)).plaintext, secret);
    const { keys } = await client.listKeys();
    assert.deepEqual(keys.map((k) => k.name), ['invoices']);
  });

  it('a corrupted share is named and unseal completes with another custodian', async () => {
    await client.seal();
    const { cluster_id: clusterId } = await client.status();
    // Tamper with custodian-1's token directly, as an attacker with the PIN could.
    await cluster.process('custodian-1').stop();
    process.env.SOFTHSM2_CONF = cluster.layout.softhsmConf['custodian-1'];
    const { overwriteShareForTest } = await import('../packages/hsm/src/testing.ts');
    const forged = Buffer.from(randomBytes(33));
    forged[32] = 7;
    overwriteShareForTest(
      { modulePath: '/usr/lib/softhsm/libsofthsm2.so', tokenLabel: 'custodian-1', pin: readFileSync(cluster.layout.pinFile['custodian-1']!, 'utf8').trim(), oaepHash: 'sha1' },
      clusterId,
      forged,
    );
    await cluster.start(['custodian-1']);
    // Only custodians 1 (corrupted), 2 and 3 are up: the ceremony must wait for a third valid share.
    await cluster.process('custodian-4').stop();
    await cluster.process('custodian-5').stop();
    let c = await client.startUnseal();
    const deadline = Date.now() + 30_000;
    while (c.failures.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      c = await client.getCeremony(c.id);
    }
    assert.equal(c.state, 'CEREMONY_STATE_OPEN');
    assert.deepEqual(c.failures.map((f) => f.custodian_id), ['custodian-1']);
    assert.match(c.failures[0]!.reason, /custodian-1/);
    const status = await client.status();
    assert.deepEqual(status.ceremony?.failures.map((f) => f.custodian_id), ['custodian-1']);
    await cluster.start(['custodian-4']);
    while (c.state === 'CEREMONY_STATE_OPEN' && Date.now() < deadline + 30_000) {
      await new Promise((r) => setTimeout(r, 200));
      c = await client.getCeremony(c.id);
    }
    assert.equal(c.state, 'CEREMONY_STATE_COMPLETED', c.error);
    assert.deepEqual([...c.approved_by].sort(), ['custodian-2', 'custodian-3', 'custodian-4']);
    assert.deepEqual((await user.decrypt(ciphertext, context)).plaintext, secret);
    const audit = readFileSync(cluster.auditLogFile, 'utf8');
    const rejected = audit.split('\n').filter((l) => l.includes('ceremony.unseal.share_rejected'));
    assert.equal(rejected.length, 1);
    assert.match(rejected[0]!, /"custodian":"custodian-1"/);
  });
});
