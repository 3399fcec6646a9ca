/** The key-lifecycle CLI commands against a real cluster, as an operator types them. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createPublicKey, verify as nodeVerify } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DevCluster, REPO_ROOT } from '@keyshard/devcluster';
import { waitUntilPast } from './support/grpc.ts';

const BIN = path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js');

describe('keyshard key lifecycle CLI', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let env: NodeJS.ProcessEnv;

  const ks = (args: string[], input = '') =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(process.execPath, [BIN, ...args], { env, cwd: REPO_ROOT }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
      child.stdin!.end(input);
    });
  const ok = async (args: string[], input = '') => {
    const r = await ks(args, input);
    assert.equal(r.code, 0, `keyshard ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-cli-keys-'));
    // The leader's own sweep is slowed down, so `key rotate --all-due` finds due keys to rotate.
    cluster = await DevCluster.create({ dir, custodians: 2, threshold: 2, coordinatorOverrides: { rotationSweepSeconds: 3600 } });
    await cluster.start();
    await cluster.bootstrap();
    const admin = cluster.layout.certs.admin!;
    env = { ...process.env, KEYSHARD_ADDR: cluster.coordinatorAddress, KEYSHARD_CA: admin.ca, KEYSHARD_CERT: admin.cert, KEYSHARD_KEY: admin.key };
  });

  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sign / verify / public key, and mac', async () => {
    await ok(['key', 'create', 'signer', '--type', 'ed25519']);
    const sig = (await ok(['sign', '--key', 'signer'], 'release 1.2.3')).trim();
    const pem = await ok(['key', 'public', 'signer']);
    assert.ok(nodeVerify(null, Buffer.from('release 1.2.3'), createPublicKey(pem), Buffer.from(sig, 'base64')), 'independent check');
    assert.equal(await ok(['verify', '--key', 'signer', '--signature', sig], 'release 1.2.3'), 'valid\n');
    const bad = await ks(['verify', '--key', 'signer', '--signature', sig], 'release 6.6.6');
    assert.equal(bad.stdout, 'invalid\n');
    assert.equal(bad.code, 1);
    assert.equal(JSON.parse(await ok(['key', 'public', 'signer', '--format', 'jwk'])).crv, 'Ed25519');
    await ok(['key', 'create', 'tagger', '--type', 'hmac-sha256']);
    const tag = (await ok(['mac', '--key', 'tagger'], 'hello')).trim();
    assert.equal(await ok(['mac', '--key', 'tagger', '--verify', tag], 'hello'), 'valid\n');
    const wrongUse = await ks(['encrypt', '--key', 'signer'], 'x');
    assert.match(wrongUse.stderr, /^keyshard: WRONG_KEY_USAGE: .*usage sign/);
  });

  it('key rotate --all-due rotates every due key once, with progress; versions show use', async () => {
    for (const name of ['due-1', 'due-2', 'due-3']) await ok(['key', 'create', name, '--rotation-period', '1']);
    await ok(['key', 'create', 'no-schedule']);
    await ok(['encrypt', '--key', 'due-1'], 'counted');
    // Due, as `--all-due` judges it: each key's next_rotation_at has passed.
    const listed = JSON.parse(await ok(['key', 'list', '--json'])) as { name: string; rotation: { next_rotation_at: string } }[];
    for (const name of ['due-1', 'due-2', 'due-3']) await waitUntilPast(`${name} due`, listed.find((k) => k.name === name)!.rotation.next_rotation_at);
    const r = await ks(['key', 'rotate', '--all-due']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /rotating due keys 3\/3 \(100%\)/);
    assert.match(r.stderr, /^3 rotated, 0 already rotated by the schedule, of 3 due$/m);
    for (const name of ['due-1', 'due-2', 'due-3']) assert.match(await ok(['key', 'versions', name]), /\nv2 .*primary/);
    assert.doesNotMatch(await ok(['key', 'versions', 'no-schedule']), /v2/);
    const v1 = (await ok(['key', 'versions', 'due-1'])).split('\n')[0]!;
    assert.match(v1, /^v1 .* encryptions ≤[1-9]\d* +last used \d{4}-/, 'the encryption is counted and its time kept');
    const usage = await ks(['key', 'rotate']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /give either a key or --all-due/);
  });

  it('rotate, versions, re-encrypt, data keys, aliases, states and policy', async () => {
    await ok(['key', 'create', 'files']);
    const ct1 = await ok(['encrypt', '--key', 'files', '--context', 'f=1'], 'secret');
    assert.match(await ok(['key', 'rotate', 'files']), /v2/);
    assert.match(await ok(['key', 'versions', 'files']), /v1 .*\nv2 .*primary/);
    const moved = await ok(['reencrypt', '--context', 'f=1'], ct1);
    assert.equal(await ok(['decrypt', '--context', 'f=1'], moved), 'secret');
    const dk = JSON.parse(await ok(['datakey', '--key', 'files', '--bytes', '32']));
    assert.equal(Buffer.from(dk.plaintext, 'base64').length, 32);
    await ok(['decrypt'], dk.ciphertext); // the wrapped copy decrypts (bytes compared in keys.test.ts)
    assert.match(await ok(['alias', 'create', 'docs', 'files']), /alias\/docs -> k_/);
    assert.match(await ok(['alias', 'list']), /alias\/docs/);
    assert.ok((await ok(['encrypt', '--key', 'alias/docs'], 'x')).length > 0);
    await ok(['alias', 'delete', 'docs']);
    assert.match((await ks(['encrypt', '--key', 'alias/docs'], 'x')).stderr, /KEY_NOT_FOUND/);
    assert.match(await ok(['key', 'disable', 'files']), /disabled/);
    assert.match((await ks(['encrypt', '--key', 'files'], 'x')).stderr, /KEY_DISABLED/);
    assert.match(await ok(['key', 'enable', 'files']), /enabled/);
    assert.match(await ok(['key', 'schedule-destroy', 'files', '--days', '7']), /pending_destruction/);
    assert.match(await ok(['key', 'cancel-destroy', 'files']), /disabled/);
    await ok(['key', 'policy', 'set', 'files', 'encrypt=app,admin', 'decrypt=admin']);
    assert.deepEqual(JSON.parse(await ok(['key', 'policy', 'get', 'files'])), { encrypt: ['app', 'admin'], decrypt: ['admin'] });
    assert.match((await ks(['key', 'policy', 'set', 'files', 'nonsense'])).stderr, /expected op=principal/);
  });
});
