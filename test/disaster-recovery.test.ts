/**
 * The DR drill (`npm run drill:dr`): lose a whole site — etcd's data, every coordinator's
 * state, two custodians' tokens — and come back with every key, through the CLI as an
 * operator runs it: custodian recovery exports restored into new tokens, the backup restored
 * into a new etcd on a custodian quorum's approval, every ciphertext decrypting and every
 * signature verifying. Also: a tampered backup, a backup of another cluster and a restore into
 * an initialized cluster are refused; a dry run writes nothing; the file holds no key material.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DevCluster, ADMIN, APP, AUDITOR, COORDINATOR, operatorOf, unsealAndWait } from '@keyshard/devcluster';
import { initSoftHsmToken } from '@keyshard/hsm';
import type { Key, KeyshardClient } from '@keyshard/client';
import { connectEtcd, clusterPrefix } from '@keyshard/store';
import { readTls } from '@keyshard/rpc';
import { keyshard, readEnvFile } from './support/cli.ts';

const KEYS = Number(process.env.DRILL_KEYS ?? 1000);
const MESSAGES = Number(process.env.DRILL_MESSAGES ?? 1000);
const SIGNATURES = Number(process.env.DRILL_SIGNATURES ?? 100);
const TYPES = ['aes256-gcm', 'aes256-gcm', 'chacha20-poly1305', 'ed25519', 'ecdsa-p256', 'hmac-sha256'];

/** The cluster's etcd state other than live coordination (replica registrations, elections). */
async function durableState(dev: DevCluster): Promise<Record<string, string>> {
  const etcd = connectEtcd({ endpoints: [dev.etcdEndpoint], tls: readTls(dev.layout.certs[COORDINATOR]!) });
  const prefix = clusterPrefix(dev.layout.plan.clusterName);
  try {
    const all = await etcd.getAll().prefix(prefix).strings();
    return Object.fromEntries(Object.entries(all).map(([k, v]) => [k.slice(prefix.length), v]).filter(([k]) => !/^(coordinators|election)\//.test(k!)));
  } finally {
    etcd.close();
  }
}
const durableKeys = async (dev: DevCluster) => Object.keys(await durableState(dev));
/** Wrapped blobs (KEKs, versions) as stored in etcd: not even these may show in a backup. */
const durableValues = async (dev: DevCluster) =>
  Object.entries(await durableState(dev)).filter(([k]) => /^(keks|versions)\//.test(k)).map(([, v]) => (JSON.parse(v) as { wrapped: string }).wrapped);

/** Every key, page by page, without the fields that change with use (last use). */
async function allKeys(c: KeyshardClient): Promise<Key[]> {
  const out: Key[] = [];
  let token = '';
  do {
    const page = await c.listKeys(500, token);
    out.push(...page.keys.map((k) => ({ ...k, versions: k.versions.map((v) => ({ ...v, last_used_at: '' })) })));
    token = page.next_page_token;
  } while (token);
  return out;
}

/** A custodian's token is lost: the process stops and a new, empty token takes its place. */
async function replaceToken(dev: DevCluster, id: string): Promise<void> {
  await dev.process(id).stop();
  const dir = path.join(dev.layout.dir, 'hsm', id);
  rmSync(path.join(dir, 'tokens'), { recursive: true, force: true });
  mkdirSync(path.join(dir, 'tokens'), { mode: 0o700 });
  // The new token's security officer (dev: the same SO PIN file); dev.start enrolls the coordinators' transport keys into it.
  await initSoftHsmToken({ dir, label: id, pin: readFileSync(dev.layout.pinFile[id]!, 'utf8').trim(), soPin: readFileSync(dev.layout.soPinFile[id]!, 'utf8').trim() });
  await dev.start([id]);
}

function custodianEnv(dev: DevCluster, env: Record<string, string>, id: string): Record<string, string> {
  const cert = dev.layout.certs[operatorOf(id)]!;
  return { ...env, KEYSHARD_CUSTODIAN_ADDR: dev.custodianAddress(id), KEYSHARD_CUSTODIAN_CERT: cert.cert, KEYSHARD_CUSTODIAN_KEY: cert.key };
}

/** Rewrites the coordinators' configured cluster name (a site that calls itself something else) and restarts them. */
async function renameCluster(dev: DevCluster, name: string): Promise<void> {
  for (const id of dev.coordinatorIds) {
    await dev.process(id).stop();
    const file = dev.layout.configFile(id);
    writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), clusterName: name }, null, 2));
  }
  await dev.start();
}

describe('disaster-recovery drill', { timeout: 1_200_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-dr-'));
  let dev: DevCluster;
  let env: Record<string, string>;
  const backupFile = path.join(dir, 'site.ksbackup');
  const recovery = generateKeyPairSync('rsa', { modulusLength: 3072 });
  const recoveryPublic = path.join(dir, 'recovery.pub.pem');
  const recoveryPrivate = path.join(dir, 'recovery.pem');
  const LOST = ['custodian-1', 'custodian-2'];

  before(async () => {
    dev = await DevCluster.create({ dir: path.join(dir, 'site'), custodians: 3, threshold: 2, coordinators: 1 });
    await dev.start();
    await dev.bootstrap();
    env = readEnvFile(dev.envFile);
    writeFileSync(recoveryPublic, recovery.publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(recoveryPrivate, recovery.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  });
  after(async () => {
    await dev?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('loses the site and two custodian tokens, and comes back with every key', async () => {
    const started = Date.now();
    const report = (what: string) => process.stdout.write(`# drill ${((Date.now() - started) / 1000).toFixed(1)} s: ${what}\n`);
    // The service principal app makes and uses the keys; the admin administers them (aliases, the listing compared after).
    const client = dev.client(APP, { timeoutMs: 60_000 });
    const admin = dev.client(ADMIN, { timeoutMs: 60_000 });
    const keys: { id: string; name: string; type: string }[] = [];
    for (let i = 0; i < KEYS; i += 50)
      keys.push(
        ...(await Promise.all(
          Array.from({ length: Math.min(50, KEYS - i) }, async (_, j) => {
            const type = TYPES[(i + j) % TYPES.length]!;
            const k = await client.createKey(`drill-${i + j}`, { type });
            return { id: k.id, name: k.name, type };
          }),
        )),
      );
    const aead = keys.filter((k) => k.type === 'aes256-gcm' || k.type === 'chacha20-poly1305');
    const signers = keys.filter((k) => k.type === 'ed25519' || k.type === 'ecdsa-p256');
    for (const k of aead.slice(0, 20)) await client.rotateKey(k.id);
    await admin.createAlias('drill-primary', aead[0]!.id);
    const messages = [];
    for (let i = 0; i < MESSAGES; i += 100)
      messages.push(
        ...(await Promise.all(
          Array.from({ length: Math.min(100, MESSAGES - i) }, async (_, j) => {
            const k = aead[(i + j) % aead.length]!;
            const plaintext = Buffer.from(`message ${i + j} under ${k.id}`);
            const context = { n: String(i + j) };
            return { plaintext, context, ciphertext: (await client.encrypt(k.id, plaintext, context)).ciphertext };
          }),
        )),
      );
    const signatures = await Promise.all(
      Array.from({ length: SIGNATURES }, async (_, i) => {
        const k = signers[i % signers.length]!;
        const message = Buffer.from(`document ${i}`);
        return { key: k.id, message, signature: (await client.sign(k.id, { message })).signature };
      }),
    );
    const keysBefore = await allKeys(admin);
    client.close();
    admin.close();
    report(`${KEYS} keys, ${MESSAGES} ciphertexts, ${SIGNATURES} signatures`);

    // Before the disaster: recovery exports of the custodians about to be lost, and a backup.
    for (const id of LOST) {
      // The share may only be wrapped to a key the token's SO trusts: the officer enrolls the recovery key first.
      const unenrolled = await keyshard(['custodian', 'backup', '--custodian-id', id, '--recovery-public-key', recoveryPublic, '--out', path.join(dir, `${id}.refused`), '--ttl', '20'], env);
      if (id === LOST[0]) assert.notEqual(unenrolled.code, 0, 'no export to a recovery key the token does not trust');
      const enrolled = await keyshard(['custodian', 'enroll', '--recovery-public-key', recoveryPublic, '--so-pin-file', dev.layout.soPinFile[id]!], custodianEnv(dev, env, id));
      assert.equal(enrolled.code, 0, enrolled.stderr);
      const exp = await keyshard(['custodian', 'backup', '--custodian-id', id, '--recovery-public-key', recoveryPublic, '--out', path.join(dir, `${id}.export`)], env);
      assert.equal(exp.code, 0, exp.stderr);
      assert.match(exp.stderr, /approvals [23]\/2/);
    }
    const backup = await keyshard(['backup', 'create', '--out', backupFile], env);
    assert.equal(backup.code, 0, backup.stderr);
    assert.match(backup.stderr, /backing up .*\(100%\)/);
    const offline = await keyshard(['backup', 'verify', backupFile], env);
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(offline.stderr, /signature ok/);
    const online = await keyshard(['backup', 'verify', backupFile, '--against-cluster'], env);
    assert.equal(online.code, 0, online.stderr);
    assert.match(online.stdout, new RegExp(`every entry decrypts: \\d+ KEKs, ${KEYS} keys`));
    report('recovery exports and backup taken and verified');

    // The backup file shows nothing: no key id or name, no wrapped blob, no plaintext.
    const file = readFileSync(backupFile);
    const etcdValues = await durableValues(dev);
    for (const needle of [...keys.slice(0, 200).flatMap((k) => [k.id, k.name]), ...etcdValues.slice(0, 300), ...messages.slice(0, 200).map((m) => m.plaintext.toString())])
      assert.equal(file.includes(Buffer.from(needle)), false, `the backup file shows ${needle.slice(0, 40)}`);
    for (const id of LOST) assert.equal(readFileSync(path.join(dir, `${id}.export`), 'utf8').includes('PRIVATE'), false);

    // A tampered copy is refused offline.
    const tampered = path.join(dir, 'tampered.ksbackup');
    const bad = Buffer.from(file);
    bad[Math.floor(bad.length / 2)]! ^= 0x40;
    writeFileSync(tampered, bad);
    const refusedOffline = await keyshard(['backup', 'verify', tampered], env);
    assert.notEqual(refusedOffline.code, 0);
    assert.match(refusedOffline.stderr, /signature does not verify|modified/);

    // The disaster: etcd's data, the coordinator's state, two custodians' tokens.
    for (const id of dev.coordinatorIds) await dev.process(id).stop();
    await dev.process('etcd').stop();
    rmSync(dev.layout.etcdDir, { recursive: true, force: true });
    rmSync(path.join(dev.layout.dir, 'spool'), { recursive: true, force: true });
    // The coordinator host too: the new one makes a new transport key, which the custodians' SOs enroll (dev.start).
    rmSync(path.join(dev.layout.dir, 'transport'), { recursive: true, force: true });
    for (const id of LOST) await replaceToken(dev, id);
    await dev.start();
    const fresh = dev.client();
    assert.equal((await fresh.status()).initialized, false);
    for (const id of LOST) {
      const op = dev.operatorClient(id);
      assert.deepEqual((await op.identity()).holds_shares_for, [], `${id}'s new token is empty`);
      op.close();
    }
    report('site lost');

    // Custodian recovery into the new tokens.
    for (const id of LOST) {
      const r = await keyshard(['custodian', 'restore', '--in', path.join(dir, `${id}.export`), '--recovery-private-key', recoveryPrivate], custodianEnv(dev, env, id));
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /holds its share of cluster/);
      const again = await keyshard(['custodian', 'restore', '--in', path.join(dir, `${id}.export`), '--recovery-private-key', recoveryPrivate], custodianEnv(dev, env, id));
      assert.match(again.stderr, /FAILED_PRECONDITION: .*already holds/);
    }
    report('custodians restored from their recovery exports');

    // Refusals, each saying why, each leaving the target empty.
    const tamperedRestore = await keyshard(['restore', tampered], env);
    assert.notEqual(tamperedRestore.code, 0);
    assert.match(tamperedRestore.stderr, /INVALID_BACKUP: .*(failed authentication|modified)/);
    assert.deepEqual(await durableKeys(dev), [], 'a refused restore leaves nothing behind');
    await renameCluster(dev, 'other-site');
    const otherCluster = await keyshard(['restore', backupFile], env);
    assert.match(otherCluster.stderr, /WRONG_CLUSTER: the backup is of cluster dev .*this is cluster other-site: pass --force-cluster-id/);
    const forced = await keyshard(['restore', backupFile, '--force-cluster-id', '--dry-run'], env);
    assert.equal(forced.code, 0, forced.stderr);
    await renameCluster(dev, 'dev');

    // Fewer than t custodians answering: the ceremony runs out, nothing is reconstructed or written.
    await dev.process('custodian-3').stop();
    await dev.process('custodian-2').stop();
    const short = await keyshard(['restore', backupFile, '--ttl', '10'], env);
    assert.notEqual(short.code, 0);
    assert.match(short.stderr, /recover ceremony .* expired: 1\/2 shares \(custodian-1\)/);
    assert.match(short.stderr, /CEREMONY_EXPIRED: recover ceremony .* expired before a quorum of the backup's custodians approved/);
    assert.deepEqual(await durableKeys(dev), []);
    await dev.start(['custodian-2']);

    // The two restored custodians alone make the quorum: the intact one is down.
    const dry = await keyshard(['restore', backupFile, '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stderr, /dry run ok/);
    assert.deepEqual(await durableKeys(dev), [], 'a dry run writes nothing');
    const restored = await keyshard(['restore', backupFile], env);
    assert.equal(restored.code, 0, restored.stderr);
    assert.match(restored.stderr, /recover ceremony .* completed: 2\/2 shares \((custodian-1, custodian-2|custodian-2, custodian-1)\)/);
    assert.match(restored.stderr, new RegExp(`restored cluster .*: ${KEYS} keys`));
    await dev.start(['custodian-3']);
    report('restored');
    const again = await keyshard(['restore', backupFile, '--dry-run'], env);
    assert.match(again.stderr, /ALREADY_INITIALIZED: cluster dev is initialized: a restore needs a fresh/);

    const after = dev.client(ADMIN, { timeoutMs: 60_000 });
    const user = dev.client(APP, { timeoutMs: 60_000 });
    try {
      assert.equal((await after.status()).sealed, false);
      assert.deepEqual(await allKeys(after), keysBefore, 'ids, versions, states, policies, aliases and schedules are kept');
      for (const m of messages) assert.deepEqual((await user.decrypt(m.ciphertext, m.context)).plaintext, m.plaintext);
      for (const sig of signatures) assert.equal((await user.verify(sig.key, { message: sig.message }, sig.signature)).valid, true);
      assert.equal((await user.encrypt('alias/drill-primary', Buffer.from('x'))).key_id, aead[0]!.id);
      report(`all ${MESSAGES} ciphertexts decrypt, all ${SIGNATURES} signatures verify`);
      // The restored custodians keep counting: a seal, then an unseal they approve.
      await after.seal();
      await dev.process('custodian-3').stop();
      await unsealAndWait(after);
      await dev.start(['custodian-3']);
      assert.equal((await after.status()).sealed, false);
    } finally {
      after.close();
      user.close();
      fresh.close();
    }
    // The restore is on the audit record, with the recover ceremony's every step.
    const auditor = dev.layout.certs[AUDITOR]!;
    const auditEnv = { ...env, KEYSHARD_AUDIT_CERT: auditor.cert, KEYSHARD_AUDIT_KEY: auditor.key };
    for (const op of ['ceremony.recover.created', 'ceremony.recover.share_accepted', 'ceremony.recover.completing', 'restore.committing', 'restore.completed']) {
      const audit = await keyshard(['audit', 'query', '--operation', op, '--json'], auditEnv);
      assert.equal(audit.code, 0, audit.stderr);
      assert.match(audit.stdout, new RegExp(op.replace(/\./g, '\\.')), `${op} is audited`);
    }
    report('done');
  });
});

describe('scheduled backups', { timeout: 180_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-sched-'));
  const backups = path.join(dir, 'backups');
  let dev: DevCluster;
  after(async () => {
    await dev?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the leader writes a backup every interval, keeps the newest `retain`, and each verifies', async () => {
    dev = await DevCluster.create({ dir: path.join(dir, 'site'), custodians: 3, threshold: 2, coordinatorOverrides: { backups: { dir: backups, intervalSeconds: 1, retain: 2 } } });
    await dev.start();
    await dev.bootstrap();
    const env = readEnvFile(dev.envFile);
    const client = dev.client();
    await client.createKey('scheduled');
    client.close();
    const log = () => readFileSync(dev.process(COORDINATOR).logFile, 'utf8');
    const deadline = Date.now() + 60_000;
    while ((log().match(/scheduled backup written/g) ?? []).length < 4) {
      assert.ok(Date.now() < deadline, 'four scheduled backups within a minute');
      await new Promise((r) => setTimeout(r, 250));
    }
    // Backups keep coming every second: take copies of the two kept before checking them.
    const kept = path.join(dir, 'kept');
    mkdirSync(kept);
    let files: string[] = [];
    for (;;) {
      files = readdirSync(backups).filter((f) => f.endsWith('.ksbackup'));
      assert.ok(files.length <= 2, `retain 2: ${files.join(', ')}`);
      try {
        for (const f of files) copyFileSync(path.join(backups, f), path.join(kept, f));
        if (files.length === 2) break;
      } catch {
        /* deleted by the retention meanwhile: list again */
      }
    }
    for (const f of files) {
      const v = await keyshard(['backup', 'verify', path.join(kept, f), '--against-cluster'], env);
      assert.equal(v.code, 0, v.stderr);
      assert.match(v.stdout, /every entry decrypts: 1 KEKs, 1 keys, 1 key versions/);
    }
  });
});
