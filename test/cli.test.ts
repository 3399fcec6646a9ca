/**
 * The README's walk-through, as a user runs it: `keyshard dev` in the foreground, then the
 * CLI from "another shell" with the variables of DIR/env. Then Ctrl-C stops every process,
 * and `keyshard dev` on the same DIR comes back sealed and unseals through a new ceremony.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '@keyshard/devcluster';
import { KEYSHARD_ARGV, NPX_KEYSHARD, keyshard, readEnvFile } from './support/cli.ts';

async function startDev(dir: string, extra: string[] = [], onOutput: (out: string) => void = () => {}): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, [...KEYSHARD_ARGV, 'dev', '--dir', dir, '--custodians', '3', '--threshold', '2', ...extra], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => onOutput((out += d)));
  child.stderr!.on('data', (d) => onOutput((out += d)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`keyshard dev did not come up:\n${out}`)), 120_000);
    const check = () => {
      if (out.includes('is up and unsealed')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => reject(new Error(`keyshard dev exited ${code}:\n${out}`)));
  });
  return { child, output: () => out };
}

async function stopDev(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGINT');
  return exited;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

describe('keyshard CLI and `keyshard dev`', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-cli-'));
  let dev: ChildProcess | undefined;
  after(async () => {
    if (dev) await stopDev(dev);
    rmSync(dir, { recursive: true, force: true });
  });

  it('walks through the README and survives a restart of `keyshard dev`', async () => {
    const first = await startDev(dir);
    dev = first.child;
    assert.match(first.output(), /unseal: approvals 2\/2/);
    const env = readEnvFile(path.join(dir, 'env'));
    for (const v of ['KEYSHARD_ADDR', 'KEYSHARD_CA', 'KEYSHARD_CERT', 'KEYSHARD_KEY', 'KEYSHARD_ETCD_ENDPOINTS', 'KEYSHARD_AUDIT_DIR', 'SOFTHSM2_CONF'])
      assert.ok(env[v], `${v} in DIR/env`);
    // DIR/env is all the audit and custodian commands need: the auditor's identity, custodian-1's operator.
    assert.match(env.KEYSHARD_AUDIT_CERT!, /auditor\.pem$/);
    assert.match(env.KEYSHARD_CUSTODIAN_CERT!, /custodian-1-operator\.pem$/);
    const bare = Object.fromEntries(Object.keys(process.env).filter((k) => k.startsWith('KEYSHARD_')).map((k) => [k, ''])); // nothing from the test's own environment
    const checkpoint = await keyshard(['audit', 'checkpoint', '--json'], { ...bare, ...env });
    assert.equal(checkpoint.code, 0, checkpoint.stderr);
    assert.ok(Number(JSON.parse(checkpoint.stdout).tree_size) > 0);
    const pending = await keyshard(['custodian', 'pending'], { ...bare, ...env });
    assert.equal(pending.code, 0, pending.stderr);
    assert.equal(pending.stdout, 'no ceremonies waiting for this custodian\n');
    const asCustodian2 = readEnvFile(path.join(dir, 'custodian-2.env'));
    const trusted = await keyshard(['custodian', 'trusted-keys', '--json'], { ...bare, ...asCustodian2 });
    assert.equal(trusted.code, 0, trusted.stderr);
    assert.ok((JSON.parse(trusted.stdout) as { keys: { name: string }[] }).keys.some((k) => k.name === 'coordinator-1'), "custodian-2's token, through DIR/custodian-2.env");
    assert.equal((await keyshard(['ceremony', 'list'], env)).stdout, 'no open ceremonies (--all lists finished ones too)\n');

    const status = await keyshard(['status', '--json'], env);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(JSON.parse(status.stdout).sealed, false);
    assert.match((await keyshard(['status'], env)).stdout, /state\s+unsealed/);

    // The admin makes the key for the service principal app (DIR/app.env), which uses it.
    const asApp = { ...env, ...readEnvFile(path.join(dir, 'app.env')) };
    const created = await keyshard(['key', 'create', 'orders', '--grant', 'encrypt=app', '--grant', 'decrypt=app'], env);
    assert.equal(created.code, 0, created.stderr);
    const keyId = created.stdout.trim();
    assert.match(keyId, /^k_[\w-]{22}$/);
    assert.match((await keyshard(['key', 'list'], env)).stdout, new RegExp(`${keyId}\\s+orders`));
    assert.equal(JSON.parse((await keyshard(['key', 'show', 'orders'], env)).stdout).id, keyId);

    assert.match((await keyshard(['encrypt', '--key', 'orders'], env, 'x')).stderr, /^keyshard: KEY_POLICY_DENIED: admin may not encrypt with key orders: cluster admins/);
    const enc = await keyshard(['encrypt', '--key', 'orders', '--context', 'tenant=acme'], asApp, 'card 4111-1111');
    assert.equal(enc.code, 0, enc.stderr);
    assert.match(enc.stdout, /^[A-Za-z0-9+/]+=*\n$/);
    const dec = await keyshard(['decrypt', '--context', 'tenant=acme'], asApp, enc.stdout);
    assert.equal(dec.stdout, 'card 4111-1111');
    const wrong = await keyshard(['decrypt', '--context', 'tenant=other'], asApp, enc.stdout);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /^keyshard: WRONG_CONTEXT: .+\n$/);
    assert.equal(wrong.stderr.split('\n').length, 2, 'one line on stderr');
    const missing = await keyshard(['encrypt', '--key', 'nope'], env, 'x');
    assert.match(missing.stderr, /^keyshard: KEY_NOT_FOUND: key nope not found\n$/);

    assert.equal((await keyshard(['seal'], env)).stdout, 'sealed\n');
    const refused = await keyshard(['encrypt', '--key', 'orders'], env, 'x');
    assert.match(refused.stderr, /^keyshard: SEALED: .*sealed/);
    const unseal = await keyshard(['unseal', '--wait'], env);
    assert.equal(unseal.code, 0, unseal.stderr);
    assert.match(unseal.stderr, /approvals \d\/2/);
    assert.match(unseal.stdout, /^unsealed/);

    // An unseal whose custodians refuse shows each one's reason as it happens, and exits 1: here
    // custodians 2 and 3 no longer trust the coordinator's transport key (their SOs revoked it).
    const soPin = (id: string) => path.join(dir, 'hsm', id, 'so-pin');
    const asOperator = (id: string) => ({ ...env, ...readEnvFile(path.join(dir, `${id}.env`)) });
    for (const id of ['custodian-2', 'custodian-3']) {
      const r = await keyshard(['custodian', 'revoke', '--coordinator', 'coordinator-1', '--so-pin-file', soPin(id)], asOperator(id));
      assert.equal(r.code, 0, r.stderr);
    }
    assert.equal((await keyshard(['seal'], env)).code, 0);
    const refusedUnseal = await keyshard(['unseal', '--wait'], env);
    assert.equal(refusedUnseal.code, 1, refusedUnseal.stderr);
    for (const id of ['custodian-2', 'custodian-3']) assert.match(refusedUnseal.stderr, new RegExp(`^  refused by ${id}: NOT_ENROLLED: `, 'm'));
    assert.match(refusedUnseal.stderr, /\nkeyshard: QUORUM_NOT_MET: unseal ceremony \S+ failed: .+\n$/);
    // --json (still sealed): the ceremony's code and reason instead of {"code":"UNKNOWN","reason":"UNKNOWN"}.
    const refusedJson = await keyshard(['unseal', '--wait', '--json'], env);
    assert.equal(refusedJson.code, 1, refusedJson.stderr);
    const refusal = JSON.parse(refusedJson.stderr.trim().split('\n').at(-1)!);
    assert.deepEqual([refusal.code, refusal.reason], ['FAILED_PRECONDITION', 'QUORUM_NOT_MET'], refusedJson.stderr);
    const transportPub = path.join(dir, 'coordinator-1.pub.pem');
    writeFileSync(transportPub, createPublicKey(createPrivateKey(readFileSync(path.join(dir, 'transport', 'coordinator-1.pem')))).export({ type: 'spki', format: 'pem' }));
    for (const id of ['custodian-2', 'custodian-3'])
      assert.equal((await keyshard(['custodian', 'enroll', '--coordinator', 'coordinator-1', '--transport-public-key', transportPub, '--so-pin-file', soPin(id)], asOperator(id))).code, 0);
    const reunseal = await keyshard(['unseal', '--wait', '--json'], env);
    assert.equal(reunseal.code, 0, reunseal.stderr);
    assert.equal(JSON.parse(reunseal.stdout).state, 'CEREMONY_STATE_COMPLETED');

    // Ctrl-C stops every process it started.
    const ports = JSON.parse(readFileSync(path.join(dir, 'cluster.json'), 'utf8')).ports;
    assert.equal(await stopDev(dev), 0);
    dev = undefined;
    for (const port of [ports.etcdClient, ports.audit, ...ports.coordinators, ...ports.custodians])
      assert.equal(await portOpen(port), false, `port ${port} closed after Ctrl-C`);

    // Same DIR again: back from saved state, sealed, unsealed by a ceremony; old keys work.
    const second = await startDev(dir);
    dev = second.child;
    assert.match(second.output(), /reusing/);
    assert.doesNotMatch(second.output(), /init:/);
    assert.match(second.output(), /unseal: approvals/);
    const again = await keyshard(['decrypt', '--context', 'tenant=acme'], asApp, enc.stdout);
    assert.equal(again.stdout, 'card 4111-1111');
    assert.equal(await stopDev(dev), 0);
    dev = undefined;
  });
});

describe('`keyshard dev --manual`', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-cli-manual-'));
  let dev: ChildProcess | undefined;
  after(async () => {
    if (dev) await stopDev(dev);
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints the exact `keyshard custodian approve` commands while the unseal waits; running them unseals', async () => {
    const approvals: Promise<string>[] = [];
    const started = startDev(dir, ['--manual'], (out) => {
      // Each custodian's operator, in another shell, runs the line printed for it (two of three here).
      const lines = [...out.matchAll(/^ {2}(\. \S+custodian-(\d)\.env && npx keyshard custodian approve cer-\S+)$/gm)];
      if (approvals.length === 0 && lines.length === 3)
        for (const [, line] of lines.slice(0, 2))
          approvals.push(new Promise((resolve, reject) =>
            execFile('bash', ['-c', `set -e\n${NPX_KEYSHARD}\n${line}`], { cwd: REPO_ROOT }, (err, stdout, stderr) => (err ? reject(new Error(`${line}: ${stderr}`)) : resolve(stdout))),
          ));
    });
    const { child, output } = await started;
    dev = child;
    assert.match(output(), /unseal ceremony (cer-\S+) waits for 2 of 3 custodians to approve \(--manual\)/);
    assert.match(output(), /npx keyshard custodian show cer-/);
    assert.equal(approvals.length, 2);
    for (const out of await Promise.all(approvals)) assert.match(out, /^cer-\S+: (approved|released)\n$/);
    assert.match(output(), /unseal: approvals 2\/2[\s\S]*is up and unsealed/);
  });
});
