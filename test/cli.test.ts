/**
 * The README's walk-through, as a user runs it: `keyshard dev` in the foreground, then the
 * CLI from "another shell" with the variables of DIR/env. Then Ctrl-C stops every process,
 * and `keyshard dev` on the same DIR comes back sealed and unseals through a new ceremony.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '@keyshard/devcluster';
import { BIN, keyshard, readEnvFile } from './support/cli.ts';

async function startDev(dir: string): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, [BIN, 'dev', '--dir', dir, '--custodians', '3', '--threshold', '2'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`keyshard dev did not come up:\n${out}`)), 90_000);
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

    const status = await keyshard(['status', '--json'], env);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(JSON.parse(status.stdout).sealed, false);
    assert.match((await keyshard(['status'], env)).stdout, /state\s+unsealed/);

    const created = await keyshard(['key', 'create', 'orders'], env);
    assert.equal(created.code, 0, created.stderr);
    const keyId = created.stdout.trim();
    assert.match(keyId, /^k_[\w-]{22}$/);
    assert.match((await keyshard(['key', 'list'], env)).stdout, new RegExp(`${keyId}\\s+orders`));
    assert.equal(JSON.parse((await keyshard(['key', 'show', 'orders'], env)).stdout).id, keyId);

    const enc = await keyshard(['encrypt', '--key', 'orders', '--context', 'tenant=acme'], env, 'card 4111-1111');
    assert.equal(enc.code, 0, enc.stderr);
    assert.match(enc.stdout, /^[A-Za-z0-9+/]+=*\n$/);
    const dec = await keyshard(['decrypt', '--context', 'tenant=acme'], env, enc.stdout);
    assert.equal(dec.stdout, 'card 4111-1111');
    const wrong = await keyshard(['decrypt', '--context', 'tenant=other'], env, enc.stdout);
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
    const again = await keyshard(['decrypt', '--context', 'tenant=acme'], env, enc.stdout);
    assert.equal(again.stdout, 'card 4111-1111');
  });
});
