/**
 * Quorum ceremonies that need approvals but no share (issue "Quorum governance"): destroy-key,
 * against real custodians whose operators approve by hand (threshold 2 of 3):
 *  - refused before the key's waiting period has passed;
 *  - t − 1 approvals never destroy; an open ceremony can be cancelled; one of a kind at a time;
 *  - parameters changed in etcd after approvals: refused (the stored ceremony fails its record
 *    MAC; the approved ceremony hash is checked behind it), nothing destroyed;
 *  - expired: refused, and custodians refuse to approve it;
 *  - approved by a quorum through `keyshard key destroy --wait`: the versions' material is gone
 *    from etcd (compacted by the coordinator; defragmented by the etcd operator, since that
 *    needs etcd's root role, which coordinators lack: then not even the data files hold it), any use answers
 *    FAILED_PRECONDITION "destroyed", the tombstone keeps the metadata; every step audited.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ADMIN, APP, DevCluster, REPO_ROOT, COORDINATOR } from '@keyshard/devcluster';
import type { Ceremony, KeyshardClient } from '@keyshard/client';
import { readTls } from '@keyshard/rpc';
import { clusterNamespace, connectEtcd, paths, type Etcd3, type Namespace } from '@keyshard/store';
import { observeFor, rejectsWith, waitFor, waitUntilPast } from './support/grpc.ts';

const BIN = path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js');

describe('destroy-key through a quorum ceremony', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  /** The keys' user: it makes and uses them; the admin schedules their destruction and runs the ceremonies. */
  let app: KeyshardClient;
  let etcd: Etcd3;
  let ns: Namespace;

  const approve = async (custodian: string, id: string) => {
    await waitFor(`${id} at ${custodian}`, async () => ((await cluster.operatorClient(custodian).pending()).ceremonies.some((c) => c.id === id) ? true : undefined));
    await cluster.operatorClient(custodian).approve(id);
  };
  const ceremony = (id: string) => admin.getCeremony(id);
  const pendingDestruction = async (name: string) => {
    const k = await app.createKey(name);
    const ct = await app.encrypt(k.id, Buffer.from(`secret of ${name}`));
    await waitUntilPast(`the end of ${name}'s waiting period`, (await admin.scheduleKeyDestruction(k.id, 1)).destruction_at);
    return { k, ct };
  };
  const audited = (id: string) => readFileSync(cluster.auditLogFile, 'utf8').split('\n').filter((l) => l.includes(id)).map((l) => JSON.parse(l).event.operation as string);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-governance-'));
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2, approvalPolicy: 'manual', coordinatorOverrides: { custodianPollMs: 100 } });
    await cluster.start();
    admin = cluster.client();
    app = cluster.client(APP);
    await admin.init(3, 2);
    const unsealing = cluster.bootstrap();
    const c = await waitFor('the unseal ceremony', async () => (await admin.status()).ceremony ?? undefined);
    for (const id of ['custodian-1', 'custodian-2']) await approve(id, c.id);
    await unsealing;
    etcd = connectEtcd({ endpoints: [cluster.etcdEndpoint], tls: readTls(cluster.layout.certs[COORDINATOR]!) });
    ns = clusterNamespace(etcd, cluster.layout.plan.clusterName);
  });

  after(async () => {
    admin?.close();
    app?.close();
    etcd?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is refused for a key not pending destruction or still in its waiting period', async () => {
    const k = await admin.createKey('young');
    await rejectsWith(admin.startCeremony('destroy-key', { key: k.id }), 'FAILED_PRECONDITION', 'WRONG_KEY_STATE');
    await admin.scheduleKeyDestruction(k.id, 3600);
    await rejectsWith(admin.startCeremony('destroy-key', { key: k.id }), 'FAILED_PRECONDITION', 'WAITING_PERIOD');
    await rejectsWith(admin.startCeremony('destroy-key', { key: 'alias/nothing' }), 'NOT_FOUND', 'KEY_NOT_FOUND');
    await rejectsWith(admin.startCeremony('destroy-everything', {}), 'INVALID_ARGUMENT', /unknown ceremony operation/);
    await rejectsWith(cluster.client('app').startCeremony('destroy-key', { key: k.id }), 'PERMISSION_DENIED', 'NOT_AUTHORIZED');
  });

  it('t − 1 approvals never destroy; one open at a time; an admin cancels it', async () => {
    const { k, ct } = await pendingDestruction('half-approved');
    const c = await admin.startCeremony('destroy-key', { key: k.id });
    assert.equal(c.parameters.key_id, k.id);
    assert.deepEqual(c.recipients, [], 'an approval-only ceremony releases no share');
    await rejectsWith(admin.startCeremony('destroy-key', { key: k.id }), 'FAILED_PRECONDITION', 'CEREMONY_IN_PROGRESS');
    await approve('custodian-3', c.id);
    await waitFor('one approval recorded', async () => ((await ceremony(c.id)).approved_by.length === 1 ? true : undefined));
    // Watched for 1 s (10 of the coordinator's 100 ms custodian polls) after the approval was recorded.
    await observeFor('a destroy-key ceremony with one approval of two', 1_000, async () => {
      assert.equal((await ceremony(c.id)).state, 'CEREMONY_STATE_OPEN');
      assert.equal((await admin.getKey(k.id)).state, 'KEY_STATE_PENDING_DESTRUCTION', 'one approval of two destroys nothing');
    });
    const listed = await admin.listCeremonies();
    assert.ok(listed.ceremonies.some((x) => x.id === c.id));
    const cancelled = await admin.cancelCeremony(c.id);
    assert.equal(cancelled.state, 'CEREMONY_STATE_CANCELLED');
    await approve('custodian-1', c.id); // a late approval of a cancelled ceremony changes nothing
    await observeFor('the key after a late approval of its cancelled destroy-key ceremony (5 custodian polls)', 500, async () => {
      assert.equal((await admin.getKey(k.id)).state, 'KEY_STATE_PENDING_DESTRUCTION');
    });
    await admin.cancelKeyDestruction(k.id);
    await admin.enableKey(k.id);
    assert.equal((await app.decrypt(ct.ciphertext)).plaintext.toString(), 'secret of half-approved');
    assert.ok(audited(c.id).includes('ceremony.destroy-key.cancelled'));
  });

  it('parameters changed in etcd after an approval: refused, nothing destroyed', async () => {
    const { k } = await pendingDestruction('tampered');
    const victim = await admin.createKey('victim');
    const c = await admin.startCeremony('destroy-key', { key: k.id });
    await approve('custodian-1', c.id);
    await waitFor('one approval recorded', async () => ((await ceremony(c.id)).approved_by.length === 1 ? true : undefined));
    // Someone with write access to etcd points the approved ceremony at another key.
    const stored = JSON.parse((await ns.get(paths.ceremony(c.id)).string())!) as Ceremony;
    stored.parameters = { ...stored.parameters, key_id: victim.id, key_name: victim.name };
    await ns.put(paths.ceremony(c.id)).value(JSON.stringify(stored));
    await approve('custodian-2', c.id);
    const done = await waitFor('the ceremony to end', async () => {
      const x = await ceremony(c.id);
      return x.state !== 'CEREMONY_STATE_OPEN' ? x : undefined;
    });
    assert.equal(done.state, 'CEREMONY_STATE_FAILED');
    assert.equal(done.error, `record ceremonies/${c.id} failed its integrity check (altered outside keyshard?)`);
    assert.equal((await admin.getKey(victim.id)).state, 'KEY_STATE_ENABLED');
    assert.equal((await admin.getKey(k.id)).state, 'KEY_STATE_PENDING_DESTRUCTION');
  });

  it('expired: refused by the coordinator and by the custodians', async () => {
    const { k } = await pendingDestruction('too-late');
    const c = await admin.startCeremony('destroy-key', { key: k.id }, 10);
    await approve('custodian-1', c.id);
    const done = await waitFor('expiry', async () => {
      const x = await ceremony(c.id);
      return x.state !== 'CEREMONY_STATE_OPEN' ? x : undefined;
    }, 20_000);
    assert.equal(done.state, 'CEREMONY_STATE_EXPIRED');
    await rejectsWith(cluster.operatorClient('custodian-2').approve(c.id), 'FAILED_PRECONDITION', 'CEREMONY_EXPIRED');
    assert.equal((await admin.getKey(k.id)).state, 'KEY_STATE_PENDING_DESTRUCTION');
  });

  it('a quorum destroys it through `keyshard key destroy --wait`: material gone from etcd and its files', async () => {
    const { k, ct } = await pendingDestruction('doomed');
    const wrapped = (await ns.get(paths.version(k.id, 1)).string())!;
    const materialB64 = (JSON.parse(wrapped) as { wrapped: string }).wrapped;
    const revisionBefore = (await ns.get(paths.version(k.id, 1)).exec()).header.revision;
    const certs = cluster.layout.certs[ADMIN]!;
    const env = { ...process.env, KEYSHARD_ADDR: cluster.coordinatorAddress, KEYSHARD_CA: certs.ca, KEYSHARD_CERT: certs.cert, KEYSHARD_KEY: certs.key };
    const cli = new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [BIN, 'key', 'destroy', 'doomed', '--wait'], { env, cwd: REPO_ROOT }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      ),
    );
    const open = await waitFor('the ceremony', async () => (await admin.listCeremonies()).ceremonies.find((x) => x.operation === 'destroy-key'));
    for (const id of ['custodian-2', 'custodian-3']) await approve(id, open.id);
    const r = await cli;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /approvals 2\/2/);
    assert.match(r.stdout, /destroyed doomed \(approved by custodian-[23], custodian-[23]\)/);

    const tomb = await admin.getKey(k.id);
    assert.equal(tomb.state, 'KEY_STATE_DESTROYED');
    assert.equal(tomb.versions.length, 1, 'the tombstone keeps the metadata');
    await rejectsWith(app.decrypt(ct.ciphertext), 'FAILED_PRECONDITION', 'KEY_DESTROYED');
    await rejectsWith(app.encrypt(k.id, Buffer.from('x')), 'FAILED_PRECONDITION', 'KEY_DESTROYED');
    assert.equal((await ns.getAll().prefix(paths.versionsPrefix(k.id)).keys()).length, 0);
    await assert.rejects(ns.get(paths.version(k.id, 1)).revision(revisionBefore).string(), /compacted/i, 'no old revision keeps it');
    // The coordinator could compact but not defragment (etcd root role only): it says so in the
    // completed event, and the etcd operator's step (deploy/systemd/etcd.md) finishes the job.
    const completed = readFileSync(cluster.auditLogFile, 'utf8').split('\n').filter((l) => l.includes(open.id)).map((l) => JSON.parse(l).event)
      .find((e) => e.operation === 'ceremony.destroy-key.completed');
    assert.match(completed?.details?.defragmented ?? '', /^no: etcd refused defragment .*root role/);
    assert.match(await cluster.etcdctl(['defrag', '--cluster']), /Finished defragmenting/);
    // Not even the backend database file still holds it (etcd's WAL keeps it until its segments are purged).
    const backend = path.join(cluster.layout.etcdDir, 'member', 'snap', 'db');
    assert.ok(!readFileSync(backend).includes(Buffer.from(materialB64)), 'the backend database no longer holds the wrapped material');
    const ops = audited(open.id);
    for (const op of ['ceremony.destroy-key.created', 'ceremony.destroy-key.approved', 'ceremony.destroy-key.executing', 'ceremony.destroy-key.completed'])
      assert.ok(ops.includes(op), `${op} audited`);
  });
});
