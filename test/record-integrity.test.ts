/**
 * Records altered directly in etcd, with the coordinator's OWN etcd credentials (its certificate
 * from the dev layout — what etcd authentication still lets in), are detected by their record
 * MAC (services/coordinator/src/cluster/record-integrity.ts), refused, audited and alerted:
 *  - a key's policy rewritten to grant `app` decrypt on an admin-only key: app still cannot
 *    decrypt (the call fails with the integrity error, not with the grant);
 *  - a disabled key's state set to enabled: the key stays unusable;
 *  - an alias pointed at another key: a call through the alias never reaches that key;
 *  - the seal epoch raised: the replica does not seal (an admin's seal still does, audited).
 * Before record MACs each of these succeeded (issue 14). Putting the original bytes back (a
 * record with a valid MAC) makes the key usable again, as before the alteration.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { APP, AUDITOR, COORDINATOR, DevCluster } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { AuditReader, type StoredAuditEvent } from '@keyshard/audit-client/reader';
import { readTls } from '@keyshard/rpc';
import { connectEtcd, type Etcd3 } from '@keyshard/store';
import { rejectsWith, waitFor } from './support/grpc.ts';

const integrityError = (record: string) => new RegExp(`record ${record.replaceAll('/', '\\/')} failed its integrity check \\(altered outside keyshard\\?\\)`);

describe('records altered in etcd are detected by their MAC, refused, audited and alerted', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  let app: KeyshardClient;
  let etcd: Etcd3;
  let reader: AuditReader;
  let prefix: string;

  const query = async (filter: Parameters<AuditReader['query']>[0]) => {
    const out: StoredAuditEvent[] = [];
    for await (const e of reader.query(filter)) out.push(e);
    return out;
  };
  /** The coordinator's audit record of refusing `record`, and the sink's alert about it. */
  const detected = async (record: string) => {
    const refused = await waitFor(`the refusal of ${record} in the audit log`, async () => {
      const all = await query({ operation: 'integrity.record_refused' });
      return all.find((e) => e.event.details.record === record);
    });
    assert.equal(refused.event.source, COORDINATOR);
    assert.equal(refused.event.result, 'error');
    assert.equal(refused.event.code, 'FAILED_PRECONDITION');
    const alert = await waitFor(`an integrity alert for ${record}`, async () => {
      const all = await query({ operation: 'audit.alert' });
      return all.find((a) => a.event.details.rule === 'integrity' && a.event.details.record === record);
    });
    assert.match(alert.event.details.summary!, /failed its integrity check/);
  };
  const raw = async (key: string) => (await etcd.get(prefix + key).string())!;
  const put = (key: string, value: string) => etcd.put(prefix + key).value(value).exec();
  /** `stored` with `change` applied, keeping whatever MAC it had (an attacker has no key to make one). */
  const altered = (stored: string, change: (r: Record<string, unknown>) => void) => {
    const r = JSON.parse(stored) as Record<string, unknown>;
    change(r);
    return JSON.stringify(r);
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-integrity-'));
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
    admin = cluster.client();
    app = cluster.client(APP);
    prefix = `/keyshard/${cluster.layout.plan.clusterName}/`;
    etcd = connectEtcd({ endpoints: [cluster.etcdEndpoint], tls: readTls(cluster.layout.certs[COORDINATOR]!) });
    const auditor = cluster.layout.certs[AUDITOR]!;
    reader = new AuditReader({ address: `127.0.0.1:${cluster.layout.plan.ports.audit}`, tls: readTls(auditor) });
  });

  after(async () => {
    reader?.close();
    etcd?.close();
    admin?.close();
    app?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a policy rewritten to grant app decrypt on an encrypt-only key: refused with the integrity error; app never decrypts', async () => {
    const key = await admin.createKey('encrypt-only', { policy: { encrypt: [APP] } });
    const { ciphertext } = await app.encrypt(key.id, Buffer.from('for the key owner'));
    await rejectsWith(app.decrypt(ciphertext), 'PERMISSION_DENIED');
    const path = `keys/${key.id}`;
    const original = await raw(path);
    await put(path, altered(original, (r) => (r.policy = { decrypt: [APP], encrypt: [APP] })));
    await rejectsWith(app.decrypt(ciphertext), 'FAILED_PRECONDITION', integrityError(path));
    await rejectsWith(app.encrypt(key.id, Buffer.from('x')), 'FAILED_PRECONDITION', integrityError(path)); // fail closed: nobody uses it
    await detected(path);
    // The same grant with the MAC removed (a record as written before record MACs): refused alike.
    await put(path, altered(original, (r) => {
      r.policy = { decrypt: [APP] };
      delete r.mac;
    }));
    await rejectsWith(app.decrypt(ciphertext), 'FAILED_PRECONDITION', integrityError(path));
    // The original record (its MAC valid) back: usable again, and app is still refused decrypt.
    await put(path, original);
    await waitFor('the key usable again', async () => (await app.encrypt(key.id, Buffer.from('x')).then(() => true, () => undefined)));
    await rejectsWith(app.decrypt(ciphertext), 'PERMISSION_DENIED');
  });

  it('a disabled key set to enabled in etcd stays unusable', async () => {
    const key = await app.createKey('disabled-one');
    await admin.disableKey(key.id);
    await rejectsWith(app.encrypt(key.id, Buffer.from('x')), 'FAILED_PRECONDITION', /not enabled/);
    const path = `keys/${key.id}`;
    await put(path, altered(await raw(path), (r) => (r.state = 'KEY_STATE_ENABLED')));
    await rejectsWith(app.encrypt(key.id, Buffer.from('x')), 'FAILED_PRECONDITION', integrityError(path));
    await rejectsWith(admin.enableKey(key.id), 'FAILED_PRECONDITION', integrityError(path)); // nor is it changed on top of the altered record
    await detected(path);
  });

  it('an alias pointed at another key in etcd does not redirect', async () => {
    const meant = await app.createKey('alias-target');
    const other = await app.createKey('attacker-chosen');
    await admin.createAlias('payments-current', meant.id);
    assert.equal((await app.encrypt('alias/payments-current', Buffer.from('x'))).key_id, meant.id);
    const path = 'aliases/payments-current';
    const stored = await raw(path);
    // In whatever form the alias is stored: a bare key id before record MACs, {keyId, mac} after.
    await put(path, stored.startsWith('{') ? altered(stored, (r) => (r.keyId = other.id)) : other.id);
    await rejectsWith(app.encrypt('alias/payments-current', Buffer.from('x')), 'FAILED_PRECONDITION', integrityError(path));
    await detected(path);
    assert.equal((await app.encrypt(meant.id, Buffer.from('x'))).key_id, meant.id, 'the keys themselves are untouched');
  });

  it('a raised seal epoch does not seal the replica; an admin seal still does, and is audited', async () => {
    const key = await app.createKey('still-open');
    const stored = await etcd.get(`${prefix}seal-epoch`).string();
    const epoch = stored === null ? 0 : stored.startsWith('{') ? (JSON.parse(stored) as { epoch: number }).epoch : Number(stored);
    // As etcdctl would: the next epoch, with the old MAC (or none).
    await put('seal-epoch', stored?.startsWith('{') ? altered(stored, (r) => (r.epoch = epoch + 1)) : String(epoch + 1));
    // Once its refusal is audited the replica has judged the altered record (its watch handler refuses or seals in that same step): it must still be unsealed.
    await detected('seal-epoch');
    assert.equal((await admin.status()).sealed, false, 'one etcd put does not seal the cluster');
    assert.equal((await app.encrypt(key.id, Buffer.from('x'))).key_id, key.id);

    await admin.seal();
    assert.equal((await admin.status()).sealed, true);
    const raised = await waitFor('the seal-epoch rise in the audit log', async () => (await query({ operation: 'cluster.seal_epoch.raised' }))[0]);
    assert.equal(raised.event.source, COORDINATOR);
    assert.ok(Number(raised.event.details.seal_epoch) > epoch + 1, 'raised above the altered value');
    const now = JSON.parse((await etcd.get(`${prefix}seal-epoch`).string())!) as { epoch: number; mac: string };
    assert.equal(now.epoch, Number(raised.event.details.seal_epoch));
    assert.match(now.mac, /^[0-9a-f]{64}$/, 'the seal-epoch record carries a MAC');
  });
});
