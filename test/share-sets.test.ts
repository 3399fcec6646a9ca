/**
 * Share-set ceremonies end to end (issue "Quorum governance"), real etcd, SoftHSM and processes:
 * six configured custodians, the first five holding 3-of-5 shares, auto-approving.
 *  - SIGKILL of the coordinator at each step of reshare and of rotate-root: afterwards the
 *    cluster unseals with one complete share set and every earlier ciphertext decrypts;
 *  - reshare 3-of-5 -> 2-of-3 including the sixth custodian (CLI): old custodians' share
 *    objects are gone (pkcs11-tool), the new set alone unseals;
 *  - rotate-root (CLI): a new root (new key check value), KEKs re-wrapped, ciphertexts decrypt;
 *  - destroy-cluster (CLI): no token holds a share; unsealing is impossible.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ADMIN, APP, COORDINATOR, DevCluster, REPO_ROOT } from '@keyshard/devcluster';
import { SOFTHSM_MODULE } from '@keyshard/hsm';
import type { KeyshardClient } from '@keyshard/client';
import { rejectsWith } from './support/grpc.ts';

const BIN = path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js');
const run = promisify(execFile);

describe('reshare, rotate-root and destroy-cluster', { timeout: 600_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  let app: KeyshardClient;
  const secrets: { ciphertext: Buffer; plaintext: string }[] = [];

  const ks = async (args: string[]) => {
    const certs = cluster.layout.certs[ADMIN]!;
    const env = { ...process.env, KEYSHARD_ADDR: cluster.coordinatorAddress, KEYSHARD_CA: certs.ca, KEYSHARD_CERT: certs.cert, KEYSHARD_KEY: certs.key };
    return run(process.execPath, [BIN, ...args], { env, cwd: REPO_ROOT });
  };
  /** Share objects (labels) in a custodian's token, read with pkcs11-tool. */
  const shareLabels = async (id: string) => {
    const env = { ...process.env, SOFTHSM2_CONF: cluster.layout.softhsmConf[id] };
    const pin = readFileSync(cluster.layout.pinFile[id]!, 'utf8').trim();
    const { stdout } = await run('pkcs11-tool', ['--module', SOFTHSM_MODULE, '--token-label', id, '--login', '--pin', pin, '--list-objects', '--type', 'secrkey'], { env });
    return [...stdout.matchAll(/label:\s+(keyshard-share:\S+)/g)].map((m) => m[1]!);
  };
  const restartCoordinator = async (crashAt?: string) => {
    const file = cluster.layout.configFile(COORDINATOR);
    const cfg = JSON.parse(readFileSync(file, 'utf8'));
    cfg.faultInjection = crashAt ? { crashAt } : {};
    writeFileSync(file, JSON.stringify(cfg, null, 2));
    await cluster.process(COORDINATOR).stop();
    await cluster.start([COORDINATOR]);
    await cluster.bootstrap();
  };
  const allDecrypt = async () => {
    for (const s of secrets) assert.equal((await app.decrypt(s.ciphertext)).plaintext.toString(), s.plaintext);
  };
  const remember = async (label: string) => {
    const plaintext = `secret before ${label}`;
    secrets.push({ ciphertext: (await app.encrypt('k', Buffer.from(plaintext))).ciphertext, plaintext });
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-sharesets-'));
    // Short registration TTL: a SIGKILLed coordinator's registration (and so its open ceremony) lapses quickly.
    cluster = await DevCluster.create({ dir, custodians: 6, threshold: 3, coordinatorOverrides: { custodianPollMs: 100, registrationTtlSeconds: 2 } });
    await cluster.start();
    admin = cluster.client();
    app = cluster.client(APP); // makes and uses the key; the admin runs the ceremonies
    await admin.init(5, 3); // custodian-6 holds nothing yet
    await cluster.bootstrap();
    await app.createKey('k');
    await remember('start');
  });

  after(async () => {
    admin?.close();
    app?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const kind of ['reshare', 'rotate-root'] as const)
    for (const step of ['reserved', 'delivered', 'switched', 'retired'])
      it(`${kind}: SIGKILL after "${step}" leaves a cluster that unseals and decrypts everything`, async () => {
        await restartCoordinator(`${kind}:${step}`);
        await remember(`${kind}:${step}`);
        const exited = new Promise<void>((resolve) => cluster.process(COORDINATOR).child!.once('exit', () => resolve()));
        await admin.startCeremony(kind, kind === 'reshare' ? { threshold: '3' } : {});
        await exited; // the fault injection killed it at that step
        await restartCoordinator();
        const s = await admin.status();
        assert.equal(s.sealed, false, 'unsealed again through a ceremony');
        await allDecrypt();
      });

  it('reshare 3-of-5 -> 2-of-3 with a new custodian: old shares destroyed, the new set alone unseals', async () => {
    const before = await admin.status();
    const out = await ks(['reshare', '--threshold', '2', '--custodians', 'custodian-1,custodian-2,custodian-6', '--wait']);
    assert.match(out.stdout, /reshared: 2 of custodian-1,custodian-2,custodian-6/);
    assert.match(out.stderr, /approvals [3-5]\/3/); // every auto-approving holder of the old set counts
    const after = await admin.status();
    assert.equal(after.threshold, 2);
    assert.equal(after.shares, 3);
    assert.equal(after.cluster_id, before.cluster_id);
    for (const id of ['custodian-3', 'custodian-4', 'custodian-5']) assert.deepEqual(await shareLabels(id), [], `${id} holds no share any more`);
    for (const id of ['custodian-1', 'custodian-2', 'custodian-6']) assert.equal((await shareLabels(id)).length, 1, `${id} holds exactly the new share`);
    // Only the new set exists: with the old custodians stopped, two of the new three unseal.
    for (const id of ['custodian-3', 'custodian-4', 'custodian-5', 'custodian-2']) await cluster.process(id).stop();
    await ks(['seal']);
    await cluster.bootstrap();
    await allDecrypt();
    await cluster.start();
  });

  it('rotate-root: a new root key (new key check value); every ciphertext still decrypts after unseal', async () => {
    const out = await ks(['rotate-root', '--wait']);
    assert.match(out.stdout, /root key rotated: share set \d+/);
    await ks(['seal']);
    await cluster.bootstrap();
    await allDecrypt();
  });

  it('destroy-cluster: no token holds a share; unsealing is impossible', async () => {
    const out = await ks(['destroy-cluster', '--wait']);
    assert.match(out.stdout, /cluster c-\S+ destroyed/);
    for (const id of cluster.custodianIds) assert.deepEqual(await shareLabels(id), [], `${id} holds no share`);
    const s = await admin.status();
    assert.equal(s.sealed, true);
    assert.equal(s.initialized, false);
    await rejectsWith(admin.startUnseal(), 'FAILED_PRECONDITION', 'UNINITIALIZED');
    await rejectsWith(app.encrypt('k', Buffer.from('x')), 'FAILED_PRECONDITION', 'UNINITIALIZED'); // not "sealed": nothing could unseal it
  });
});
