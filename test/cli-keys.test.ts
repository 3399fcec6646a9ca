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
  /** The CLI as the service principal app, which makes and uses the keys here; `adminEnv`: as the admin. */
  let env: NodeJS.ProcessEnv;
  let adminEnv: NodeJS.ProcessEnv;

  const ks = (args: string[], input = '', as = env) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(process.execPath, [BIN, ...args], { env: as, cwd: REPO_ROOT }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
      child.stdin!.end(input);
    });
  const ok = async (args: string[], input = '', as = env) => {
    const r = await ks(args, input, as);
    assert.equal(r.code, 0, `keyshard ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-cli-keys-'));
    // The leader's own sweep is slowed down, so `key rotate --all-due` finds due keys to rotate.
    cluster = await DevCluster.create({ dir, custodians: 2, threshold: 2, coordinatorOverrides: { rotationSweepSeconds: 3600 } });
    await cluster.start();
    await cluster.bootstrap();
    const [admin, app] = [cluster.layout.certs.admin!, cluster.layout.certs.app!];
    env = { ...process.env, KEYSHARD_ADDR: cluster.coordinatorAddress, KEYSHARD_CA: app.ca, KEYSHARD_CERT: app.cert, KEYSHARD_KEY: app.key };
    adminEnv = { ...env, KEYSHARD_CERT: admin.cert, KEYSHARD_KEY: admin.key };
  });

  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('empty lists say so; --json prints an empty list', async () => {
    assert.equal(await ok(['key', 'list']), 'no keys\n');
    assert.deepEqual(JSON.parse(await ok(['key', 'list', '--json'])), []);
    assert.equal(await ok(['alias', 'list']), 'no aliases\n');
    assert.equal(await ok(['ceremony', 'list']), 'no open ceremonies (--all lists finished ones too)\n');
    assert.deepEqual(JSON.parse(await ok(['ceremony', 'list', '--json'])), []);
  });

  it('refuses malformed durations and numbers on one line naming the flag, exit 2, and creates nothing', async () => {
    for (const [args, flag] of [
      [['key', 'create', 'bad-1', '--rotation-period', 'abc'], '--rotation-period'], // once silently "no rotation"
      [['key', 'create', 'bad-2', '--rotation-period', '1.5d'], '--rotation-period'],
      [['key', 'create', 'bad-3', '--rotation-period', '0'], '--rotation-period'],
      [['key', 'schedule-destroy', 'anything', '--days', 'abc'], '--days'], // once silently 30 days
      [['key', 'rotate', '--all-due', '--concurrency', 'lots'], '--concurrency'],
      [['datakey', '--key', 'anything', '--bytes', '32b'], '--bytes'],
      [['unseal', '--ttl', '1y'], '--ttl'],
    ] as const) {
      const r = await ks([...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^keyshard: option '${flag} <[^']+>' argument '[^']*' is invalid\\. expected [^\n]+\n$`));
      assert.equal(r.stdout, '');
    }
    assert.equal(await ok(['key', 'list']), 'no keys\n', 'nothing was created');
    const unknown = await ks(['key', 'create', 'x', '--rotation-periods', '1d']);
    assert.equal(unknown.code, 2, "commander's own errors exit 2 too");
    assert.match(unknown.stderr, /^keyshard: unknown option '--rotation-periods'.*\n$/);
    const both = await ks(['key', 'schedule-destroy', 'x', '--days', '1', '--seconds', '5']);
    assert.equal(both.code, 2);
    const refused = await ks(['key', 'rotate', 'no-such-key']);
    assert.equal(refused.code, 1, 'the server refused: exit 1');
    assert.match(refused.stderr, /^keyshard: (KEY_)?NOT_FOUND: /);
  });

  it('durations: --rotation-period 1d is a day; rotation-policy sets and turns off a schedule; create --json', async () => {
    const before = Date.now();
    const k = JSON.parse(await ok(['key', 'create', 'daily', '--rotation-period', '1d', '--json'])) as { id: string; name: string; rotation: { period_seconds: string | number; next_rotation_at: string } };
    assert.equal(k.name, 'daily');
    assert.equal(Number(k.rotation.period_seconds), 86_400, '1d was once read as 1 second');
    assert.ok(Date.parse(k.rotation.next_rotation_at) >= before + 86_399_000);
    for (const [v, seconds] of [['90s', 90], ['15m', 900], ['24h', 86_400], ['30d', 2_592_000], ['3600', 3600]] as const) {
      const r = JSON.parse(await ok(['key', 'rotation-policy', 'daily', '--period', v, '--json']));
      assert.equal(Number(r.rotation.period_seconds), seconds, v);
    }
    assert.match(await ok(['key', 'rotation-policy', 'daily', '--period', '30d']), /daily .* rotates every 30d  next rotation \d{4}-/);
    const off = JSON.parse(await ok(['key', 'rotation-policy', 'daily', '--off', '--json']));
    assert.equal(Number(off.rotation.period_seconds), 0);
    assert.equal((await ks(['key', 'rotation-policy', 'daily'])).code, 2, 'neither --period nor --off');
    assert.equal((await ks(['key', 'rotation-policy', 'daily', '--period', '1d', '--off'])).code, 2, 'both');
    const scheduled = JSON.parse(await ok(['key', 'schedule-destroy', 'daily', '--days', '2', '--json']));
    assert.ok(Math.abs(Date.parse(scheduled.destruction_at) - Date.now() - 2 * 86_400_000) < 60_000, '--days 2 is two days');
    await ok(['key', 'cancel-destroy', 'daily']);
  });

  it('labels: set at creation, changed and removed by key update, shown and filtered by key list', async () => {
    await ok(['key', 'create', 'labelled', '--label', 'team=billing', '--label', 'env=prod']);
    assert.deepEqual(JSON.parse(await ok(['key', 'show', 'labelled'])).labels, { team: 'billing', env: 'prod' });
    const updated = JSON.parse(await ok(['key', 'update', 'labelled', '--label', 'env=staging', '--label', 'tier=1', '--remove-label', 'team', '--description', 'for tests', '--json']));
    assert.deepEqual(updated.labels, { env: 'staging', tier: '1' });
    assert.equal(updated.description, 'for tests');
    assert.match(await ok(['key', 'list', '--label', 'env=staging']), /^k_\S+ +labelled .*env=staging,tier=1\n$/);
    assert.equal(await ok(['key', 'list', '--label', 'env=prod']), 'no keys with these labels\n');
    const bad = await ks(['key', 'update', 'labelled', '--label', 'novalue']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--label <name=value>' argument 'novalue' is invalid\. expected --label name=value/);
    assert.equal((await ks(['key', 'update', 'labelled'])).code, 2, 'nothing to change');
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
    // The key's user may not steer a name onto a key it uses; the admin, who cannot use it, may.
    assert.match((await ks(['alias', 'create', 'docs', 'files'])).stderr, /SEPARATION_OF_DUTIES/);
    assert.match(await ok(['alias', 'create', 'docs', 'files'], '', adminEnv), /alias\/docs -> k_/);
    assert.match(await ok(['alias', 'list']), /alias\/docs/);
    assert.ok((await ok(['encrypt', '--key', 'alias/docs'], 'x')).length > 0);
    await ok(['alias', 'delete', 'docs'], '', adminEnv);
    assert.match((await ks(['encrypt', '--key', 'alias/docs'], 'x')).stderr, /KEY_NOT_FOUND/);
    assert.match(await ok(['key', 'disable', 'files']), /disabled/);
    assert.match((await ks(['encrypt', '--key', 'files'], 'x')).stderr, /KEY_DISABLED/);
    assert.match(await ok(['key', 'enable', 'files']), /enabled/);
    assert.match(await ok(['key', 'schedule-destroy', 'files', '--days', '7']), /pending_destruction/);
    assert.match(await ok(['key', 'cancel-destroy', 'files']), /disabled/);
    assert.match(await ok(['key', 'enable', 'files']), /enabled/);
    // Policy: app keeps what it holds and names the admin for encrypt; it may not add a use it lacks.
    assert.match(await ok(['key', 'policy', 'set', 'files', 'encrypt=app,admin', 'decrypt=app', 'admin=app']), /policy of files updated: encrypt=app,admin decrypt=app admin=app/);
    assert.deepEqual(JSON.parse(await ok(['key', 'policy', 'get', 'files'])), { encrypt: ['app', 'admin'], decrypt: ['app'], admin: ['app'] });
    const self = await ks(['key', 'policy', 'set', 'files', 'encrypt=app', 'decrypt=app', 'mac=app', 'admin=app']);
    assert.equal(self.code, 1);
    assert.match(self.stderr, /^keyshard: SEPARATION_OF_DUTIES: separation of duties: app may not grant itself mac on key files/);
    const adminSelf = await ks(['key', 'policy', 'set', 'files', 'encrypt=app', 'decrypt=app,admin'], '', adminEnv);
    assert.match(adminSelf.stderr, /^keyshard: SEPARATION_OF_DUTIES: .*admin may not grant itself decrypt/);
    assert.ok((await ok(['encrypt', '--key', 'files'], 'x', adminEnv)).length > 0, 'the admin encrypts: the policy names it');
    assert.match((await ks(['decrypt'], moved, adminEnv)).stderr, /^keyshard: KEY_POLICY_DENIED: admin may not decrypt with key files: cluster admins/);
    // Who administers the key sees its policy and usage; a user does not.
    assert.equal(JSON.parse(await ok(['key', 'show', 'files'], '', adminEnv)).caller_administers, true);
    await ok(['key', 'policy', 'set', 'files', 'encrypt=app,admin', 'decrypt=app'], '', adminEnv);
    const shown = JSON.parse(await ok(['key', 'show', 'files']));
    assert.deepEqual([shown.caller_administers, shown.policy?.grants ?? {}], [false, {}]);
    assert.match((await ks(['key', 'policy', 'get', 'files'])).stderr, /only its administrators see its policy/);
    assert.match(await ok(['key', 'versions', 'files']), /^v1 .* usage shown to its administrators only/);
    const bad = await ks(['key', 'policy', 'set', 'files', 'nonsense'], '', adminEnv);
    assert.deepEqual([bad.code, /expected op=principal/.test(bad.stderr)], [2, true]);
    assert.equal((await ks(['key', 'create', 'g', '--grant', 'explode=app'])).code, 2);
  });
});
