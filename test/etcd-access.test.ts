/**
 * etcd for coordinators only (issue 14, Build 3), against a real dev cluster whose etcd runs with
 * authentication on (deploy/etcd-auth.sh, as `keyshard dev` and every integration test start it):
 *  - `etcdctl` with the app, admin, auditor, audit-sink, etcd member, custodian and custodian-operator
 *    certificates of the cluster CA: permission denied on get, put and delete of the cluster prefix
 *    and on a whole-keyspace read; none can grant itself a role, turn auth off or revoke a replica's lease;
 *  - the attack, now refused by etcd: with the `app` certificate, rewriting an admin-only
 *    key's policy record to grant `app` decrypt, and a put to `seal-epoch` (both succeeded
 *    before: etcd trusted every CA certificate); the records are unchanged, `app` still cannot
 *    decrypt, the cluster is still unsealed;
 *  - a coordinator's certificate reads and writes the prefix (its etcd user is its CN) but nothing
 *    outside it, and cannot manage users or defragment (those need the etcd root role);
 *  - the etcd operator's certificate (etcd-root) can, and is given to no keyshard process;
 *  - the setup is idempotent: a reused dev dir (a new DevCluster, 3 etcd members) runs it again.
 * Every refusal is asserted as etcd's own "permission denied", so a connection failure would not pass.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ADMIN, APP, AUDITOR, COORDINATOR, DevCluster, ETCD_ROOT, operatorOf } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { clusterPrefix, paths } from '@keyshard/store';
import { rejectsWith } from './support/grpc.ts';

/** etcd's refusal of a key-value call (the user lacks a role on the key, or is no etcd user at all). */
const DENIED = /etcdserver: permission denied/;
/** etcd's refusal of an admin call: a user without the root role, or a CN that is no etcd user. */
const NOT_ADMIN = /permission denied|user name not found|auth: user not found/;

describe('etcd: only coordinators read or write the cluster prefix', { timeout: 180_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  let app: KeyshardClient;
  let prefix: string;
  let keyId: string;
  let ciphertext: Buffer;
  /** Every certificate the dev PKI issues that is neither a coordinator's nor the etcd operator's. */
  let strangers: string[];

  const etcdctl = (principal: string, ...args: string[]) => cluster.etcdctl(args, principal);
  const read = async (key: string) => (await etcdctl(COORDINATOR, 'get', key, '--print-value-only')).replace(/\n$/, '');

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-etcd-access-'));
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2, coordinators: 2, etcdMembers: 3 });
    await cluster.start();
    await cluster.bootstrap();
    admin = cluster.client(ADMIN);
    app = cluster.client(APP);
    prefix = clusterPrefix(cluster.layout.plan.clusterName);
    // An encrypt-only key: app may encrypt with it, nobody may decrypt (the admin administers it, it does not use it).
    keyId = (await admin.createKey('encrypt-only', { policy: { encrypt: [APP] } })).id;
    ciphertext = (await app.encrypt(keyId, Buffer.from('for nobody'))).ciphertext;
    strangers = [APP, ADMIN, AUDITOR, 'audit-sink', 'etcd', ...cluster.custodianIds, ...cluster.custodianIds.map(operatorOf)];
  });

  after(async () => {
    admin?.close();
    app?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the app certificate cannot rewrite a key policy to grant itself decrypt (the issue\'s attack)', async () => {
    const key = `${prefix}${paths.key(keyId)}`;
    const before = await read(key);
    const record = JSON.parse(before) as { policy: Record<string, string[]> };
    assert.deepEqual(record.policy.decrypt ?? [], [], 'the key starts encrypt-only');
    await rejectsWith(app.decrypt(ciphertext), 'PERMISSION_DENIED');
    const forged = JSON.stringify({ ...record, policy: { ...record.policy, decrypt: [APP] } });
    await assert.rejects(etcdctl(APP, 'put', key, forged), DENIED);
    assert.equal(await read(key), before, 'the policy record is unchanged');
    await rejectsWith(app.decrypt(ciphertext), 'PERMISSION_DENIED');
    assert.equal((await app.encrypt(keyId, Buffer.from('x'))).key_id, keyId, 'the key still serves');
  });

  it('the app certificate cannot seal the cluster through seal-epoch', async () => {
    const key = `${prefix}${paths.sealEpoch}`;
    const before = await read(key);
    await assert.rejects(etcdctl(APP, 'put', key, String(Number(before || 0) + 1)), DENIED);
    await assert.rejects(etcdctl(APP, 'del', key), DENIED);
    assert.equal(await read(key), before, 'seal-epoch is unchanged');
    for (const id of cluster.coordinatorIds) {
      const c = cluster.client(ADMIN, { coordinator: id });
      try {
        assert.equal((await c.status()).sealed, false, `${id} is still unsealed`);
      } finally {
        c.close();
      }
    }
  });

  it('every non-coordinator certificate is denied get, put and delete on the prefix and a whole-keyspace read', async () => {
    const key = `${prefix}${paths.key(keyId)}`;
    for (const who of strangers) {
      if (who === 'etcd') {
        // The member's certificate is server-only (no clientAuth, @keyshard/pki 'server' profile):
        // etcd refuses it in the TLS handshake, before any permission is looked at.
        await assert.rejects(etcdctl(who, 'get', key), /context deadline exceeded|bad certificate|unsupported certificate/, 'etcd: get of a key record');
        continue;
      }
      await assert.rejects(etcdctl(who, 'get', key), DENIED, `${who}: get of a key record`);
      await assert.rejects(etcdctl(who, 'get', prefix, '--prefix', '--keys-only'), DENIED, `${who}: read of the prefix`);
      await assert.rejects(etcdctl(who, 'get', '', '--prefix', '--keys-only'), DENIED, `${who}: whole-keyspace read`);
      await assert.rejects(etcdctl(who, 'put', `${prefix}aliases/${who}`, keyId), DENIED, `${who}: put`);
      await assert.rejects(etcdctl(who, 'del', prefix, '--prefix'), DENIED, `${who}: delete of the prefix`);
      await assert.rejects(etcdctl(who, 'watch', prefix, '--prefix'), /watch was canceled .*permission denied/, `${who}: watch of the prefix`);
    }
    assert.notEqual(await read(key), '', 'the record is still there');
  });

  it('nobody but the etcd operator can grant roles, turn auth off or defragment; a replica\'s lease is not revocable by others', async () => {
    for (const who of [APP, ADMIN, COORDINATOR]) {
      await assert.rejects(etcdctl(who, 'user', 'grant-role', APP, `keyshard-${cluster.layout.plan.clusterName}`), NOT_ADMIN, `${who}: grant-role`);
      await assert.rejects(etcdctl(who, 'role', 'grant-permission', `keyshard-${cluster.layout.plan.clusterName}`, '--prefix=true', 'readwrite', '/'), NOT_ADMIN, `${who}: widen the role`);
      await assert.rejects(etcdctl(who, 'auth', 'disable'), NOT_ADMIN, `${who}: auth disable`);
      await assert.rejects(etcdctl(who, 'defrag'), NOT_ADMIN, `${who}: defrag`);
    }
    // The replica registration's lease (replica-store.ts): revoking it would drop the registration.
    // The lease id is an int64 in JSON: read as digits, not through a double.
    const reg = await etcdctl(COORDINATOR, 'get', `${prefix}${paths.coordinator(COORDINATOR)}`, '-w', 'json');
    const lease = BigInt(/"lease":(\d+)/.exec(reg)?.[1] ?? '0').toString(16);
    assert.notEqual(lease, '0', 'the registration is bound to a lease');
    for (const who of [APP, ADMIN, 'custodian-1']) await assert.rejects(etcdctl(who, 'lease', 'revoke', lease), DENIED, `${who}: lease revoke`);
    assert.match(await etcdctl(COORDINATOR, 'lease', 'timetolive', lease), /remaining\(\d+s\)/, 'the lease is alive');
    // The operator's certificate has the root role (positive control for the refusals above).
    assert.match(await etcdctl(ETCD_ROOT, 'defrag'), /Finished defragmenting/);
    assert.match(await etcdctl(ETCD_ROOT, 'role', 'get', `keyshard-${cluster.layout.plan.clusterName}`), new RegExp(`prefix ${prefix}`));
  });

  it('each coordinator certificate reads and writes the prefix, and nothing outside it', async () => {
    for (const id of cluster.coordinatorIds) {
      const probe = `${prefix}etcd-access-probe/${id}`;
      await etcdctl(id, 'put', probe, 'x');
      assert.equal(await etcdctl(id, 'get', probe, '--print-value-only'), 'x\n');
      await etcdctl(id, 'del', probe);
      assert.match(await etcdctl(id, 'get', prefix, '--prefix', '--keys-only'), new RegExp(`${prefix}cluster`));
      await assert.rejects(etcdctl(id, 'get', '', '--prefix', '--keys-only'), DENIED, `${id}: whole keyspace`);
      await assert.rejects(etcdctl(id, 'put', '/keyshard/other-cluster/cluster', 'x'), DENIED, `${id}: another cluster's prefix`);
      await assert.rejects(etcdctl(id, 'put', '/keyshard/devx', 'x'), DENIED, `${id}: a key that merely starts like the prefix`);
    }
  });

  it('the coordinators still see etcd: Status lists the members, reachable', async () => {
    const s = await admin.status();
    assert.equal(s.etcd?.reachable, true, s.etcd?.error);
    assert.ok((s.etcd?.members.length ?? 0) >= 1);
    assert.ok(s.etcd!.members.some((m) => m.leader), 'the leader is known (maintenance Status works without the root role)');
  });

  it('a reused dev dir sets etcd auth up again (idempotent, 3 members): same grants, coordinators work, app still denied', async () => {
    const role = `keyshard-${cluster.layout.plan.clusterName}`;
    const grants = await etcdctl(ETCD_ROOT, 'role', 'get', role);
    admin.close();
    app.close();
    await cluster.stop();
    cluster = await DevCluster.create({ dir }); // a new object on the same state: deploy/etcd-auth.sh runs again, auth already on
    await cluster.start();
    await cluster.bootstrap();
    admin = cluster.client(ADMIN);
    app = cluster.client(APP);
    assert.equal(await etcdctl(ETCD_ROOT, 'role', 'get', role), grants, 'the role is unchanged');
    assert.match(await etcdctl(ETCD_ROOT, 'user', 'list'), new RegExp(`^${['coordinator-1', 'coordinator-2', ETCD_ROOT, 'root'].join('\\n')}\\n$`));
    assert.equal((await app.encrypt(keyId, Buffer.from('x'))).key_id, keyId, 'the key still serves');
    await rejectsWith(app.decrypt(ciphertext), 'PERMISSION_DENIED');
    await assert.rejects(etcdctl(APP, 'put', `${prefix}${paths.sealEpoch}`, '99'), DENIED);
  });

  it('no keyshard process is configured with the etcd operator\'s certificate', () => {
    const root = cluster.layout.certs[ETCD_ROOT]!;
    const configDir = path.dirname(cluster.layout.configFile('x'));
    for (const f of readdirSync(configDir)) {
      const text = readFileSync(path.join(configDir, f), 'utf8');
      assert.ok(!text.includes(root.cert) && !text.includes(root.key), `${f} does not name ${ETCD_ROOT}`);
      const cfg = JSON.parse(text) as { etcd?: { tls?: { cert: string } }; coordinatorId?: string };
      if (cfg.etcd) assert.equal(cfg.etcd.tls?.cert, cluster.layout.certs[cfg.coordinatorId!]!.cert, `${f}: etcd client certificate is the replica's own`);
    }
  });
});
