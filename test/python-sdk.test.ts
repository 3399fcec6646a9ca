/**
 * The Python SDK (clients/python, package `keyshard`), as a team adopting it would use it:
 * installed offline into a fresh venv with Debian's Python 3.11, python3-grpcio and
 * python3-protobuf, exactly as clients/python/README.md says (its stubs generated from proto/ at
 * build time), its own unit tests (unittest: ciphertext v1 against the frozen vectors, error
 * mapping, identity checks, failover logic), then test/python/sdk_scenarios.py against a real
 * DevCluster with two coordinator replicas: round trip, interop both ways with the TS SDK, typed
 * errors (wrong context, key not found, key disabled, sealed), pinned server identities, and
 * failover of idempotent calls past a stopped replica. Never skips: a missing Debian package
 * fails the test with its name.
 *
 *   node --conditions=keyshard-source --import tsx --test test/python-sdk.test.ts   (after npm run build: the cluster runs dist/)
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { ADMIN, APP, DevCluster, REPO_ROOT } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const SDK_DIR = path.join(REPO_ROOT, 'clients', 'python');
const SCENARIOS = path.join(REPO_ROOT, 'test', 'python', 'sdk_scenarios.py');
const VECTORS = path.join(REPO_ROOT, 'packages', 'crypto', 'vectors', 'ciphertext-v1.json');
const CONTEXT = { tenant: 'py' };

/** Python imports and files the SDK's build, install and tests need, with the Debian package of each. */
const PREREQUISITES: { pkg: string; module?: string; file?: string }[] = [
  { pkg: 'python3-venv', module: 'ensurepip, venv' },
  { pkg: 'python3-setuptools', module: 'setuptools' },
  { pkg: 'python3-wheel', module: 'wheel' },
  { pkg: 'python3-grpcio', module: 'grpc' },
  { pkg: 'python3-protobuf', module: 'google.protobuf' },
  { pkg: 'python3-cryptography', module: 'cryptography.hazmat.primitives.ciphers.aead' },
  { pkg: 'protobuf-compiler', file: '/usr/bin/protoc' },
  { pkg: 'protobuf-compiler-grpc', file: '/usr/bin/grpc_python_plugin' },
];

/** Fails (never skips) naming the Debian packages to install when something is missing. */
async function checkPrerequisites(): Promise<void> {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: apt-get install python3 ${PREREQUISITES.map((p) => p.pkg).join(' ')}`);
  const missing: string[] = [];
  for (const p of PREREQUISITES) {
    if (p.file && !existsSync(p.file)) missing.push(p.pkg);
    if (p.module) await run(PYTHON, ['-c', `import ${p.module}`]).catch(() => missing.push(p.pkg));
  }
  if (missing.length) throw new Error(`the Python SDK test needs the Debian packages ${missing.join(', ')}: apt-get install ${missing.join(' ')}`);
}

/** A clean environment for Python: no KEYSHARD_* of the caller, no bytecode in the work tree, no package index. */
function pythonEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KEYSHARD_') && !k.startsWith('PIP_') && k !== 'PYTHONPATH'));
  // PIP_NO_INDEX: the install must work offline (the documented command, run with no package index at all).
  return { ...env, PYTHONDONTWRITEBYTECODE: '1', PIP_NO_INDEX: '1', PIP_DISABLE_PIP_VERSION_CHECK: '1', ...extra };
}

async function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<string> {
  try {
    const { stdout } = await run(cmd, args, { cwd: opts.cwd ?? REPO_ROOT, env: opts.env ?? pythonEnv(), timeout: opts.timeout ?? 120_000, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    throw new Error(`${path.basename(cmd)} ${args.join(' ')} failed (exit ${err.code}):\n${err.stderr?.trim() || err.stdout?.trim() || String(e)}`);
  }
}

/** The documented install: a venv that sees Debian's grpcio/protobuf, then pip install ./clients/python. */
async function makeVenv(dir: string, pipArgs: string[] = []): Promise<string> {
  await sh(PYTHON, ['-m', 'venv', '--system-site-packages', dir]);
  await sh(path.join(dir, 'bin', 'pip'), ['install', ...pipArgs, './clients/python']);
  return path.join(dir, 'bin', 'python');
}

/** One venv with the SDK installed the documented way, shared by every test of this file. */
let installation: Promise<{ dir: string; python: string }> | undefined;
function installed(): Promise<{ dir: string; python: string }> {
  installation ??= (async () => {
    await checkPrerequisites();
    const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-pysdk-'));
    return { dir, python: await makeVenv(path.join(dir, 'venv')) };
  })();
  return installation;
}

after(async () => {
  const i = await installation?.catch(() => undefined);
  if (i) rmSync(i.dir, { recursive: true, force: true });
});

describe('Python SDK: install (offline, Debian packages only) and unit tests', () => {
  test('pip install ./clients/python into a --system-site-packages venv, and the generated stubs are in the package only', { timeout: 180_000 }, async () => {
    const { dir, python } = await installed();
    const out = JSON.parse(
      await sh(python, ['-c', [
        'import json, keyshard, keyshard.v1.keys_pb2_grpc as g, keyshard._rpc.status_pb2 as s',
        'print(json.dumps({"file": keyshard.__file__, "stub": g.KeyServiceStub.__name__, "status": s.Status.DESCRIPTOR.full_name, "safety": keyshard.METHOD_SAFETY}))',
      ].join('\n')], { cwd: dir }),
    ) as { file: string; stub: string; status: string; safety: Record<string, Record<string, string>> };
    assert.ok(out.file.startsWith(path.join(dir, 'venv')), `imported from the venv: ${out.file}`);
    assert.equal(out.stub, 'KeyServiceStub');
    assert.equal(out.status, 'google.rpc.Status');
    // From the protos: idempotency_level (Decrypt, Seal) or a request_token field (CreateKey, StartCeremony); CancelCeremony has neither.
    const s = out.safety;
    assert.deepEqual(
      [s.KeyService!.Decrypt, s.KeyService!.CreateKey, s.CeremonyService!.StartCeremony, s.CeremonyService!.Seal, s.CeremonyService!.CancelCeremony],
      ['idempotent', 'idempotent', 'idempotent', 'idempotent', 'once'],
      'idempotency from the protos\' idempotency_level and request_token fields',
    );
    // The stubs are build output, never committed.
    const tracked = (await sh('git', ['ls-files', '--', 'clients/python'])).split('\n').filter(Boolean);
    assert.ok(tracked.includes('clients/python/setup.py'), tracked.join(' '));
    assert.deepEqual(tracked.filter((f) => /_pb2(_grpc)?\.py$/.test(f)), []);
  });

  test('also installs with --no-build-isolation (the system setuptools used directly)', { timeout: 180_000 }, async () => {
    const { dir } = await installed();
    const python = await makeVenv(path.join(dir, 'venv-nbi'), ['--no-build-isolation']);
    assert.equal((await sh(python, ['-c', 'import keyshard; print(keyshard.Client.__name__)'], { cwd: dir })).trim(), 'Client');
  });

  test('the SDK unit tests (python -m unittest) pass', { timeout: 180_000 }, async () => {
    const { python } = await installed();
    // From clients/python, so `tests` imports; `keyshard` resolves to the installed package (the source is under src/).
    const env = pythonEnv({ KEYSHARD_CIPHERTEXT_VECTORS: VECTORS });
    try {
      await run(python, ['-m', 'unittest', 'discover', '-s', 'tests', '-t', '.'], { cwd: SDK_DIR, env, timeout: 150_000 });
    } catch (e) {
      const err = e as { stderr?: string };
      assert.fail(`unittest failed:\n${err.stderr ?? String(e)}`);
    }
  });
});

interface PyError {
  class: string | null;
  code: string;
  reason: string | null;
  metadata: Record<string, string>;
  details: string;
  request_id: string | null;
}

describe('Python SDK against a dev cluster (two coordinator replicas)', { timeout: 300_000 }, () => {
  let python: string;
  let cluster: DevCluster | undefined;
  let ts: KeyshardClient | undefined;
  let keyName: string;
  let keyId: string;

  /** Runs a scenario with the connection in the CLI's environment variables; resolves with its JSON. */
  async function py<T = Record<string, unknown>>(scenario: string, args: Record<string, unknown>, addresses?: string[]): Promise<T> {
    const tls = cluster!.layout.certs[APP]!; // a service principal: it makes and uses keys
    const env = pythonEnv({
      KEYSHARD_ADDR: (addresses ?? cluster!.coordinatorIds.map((id) => cluster!.coordinatorAddressOf(id))).join(','),
      KEYSHARD_CA: tls.ca,
      KEYSHARD_CERT: tls.cert,
      KEYSHARD_KEY: tls.key,
    });
    const out = await sh(python, [SCENARIOS, scenario, JSON.stringify(args)], { env, timeout: 60_000 }).catch((e: Error) => {
      const json = /\{"error".*\}/.exec(e.message)?.[0];
      if (json) return json;
      throw e;
    });
    const parsed = JSON.parse(out) as T & { error?: PyError };
    if (parsed.error) throw new Error(`${scenario}: unexpected ${JSON.stringify(parsed.error)}`);
    return parsed;
  }

  before(async () => {
    let dir: string;
    ({ dir, python } = await installed());
    cluster = await DevCluster.create({ dir: path.join(dir, 'cluster'), custodians: 3, threshold: 2, coordinators: 2 });
    await cluster.start();
    await cluster.bootstrap();
    ts = cluster.client(APP);
    keyName = `py-${randomBytes(4).toString('hex')}`;
    keyId = (await ts.createKey(keyName)).id;
  }, { timeout: 240_000 });

  after(async () => {
    ts?.close();
    await cluster?.stop();
  });

  test('encrypt and decrypt round trip over mutual TLS, coordinators pinned by name', async () => {
    const plain = randomBytes(40);
    const out = await py<{ matched: boolean; key_id: string; key_version: number; plaintext_b64: string; ciphertext_b64: string; header: unknown; servers: Record<string, { cn: string; pinned: boolean }> }>(
      'roundtrip', { key: keyName, plaintext_b64: plain.toString('base64'), context: CONTEXT });
    assert.equal(out.matched, true);
    assert.equal(out.key_id, keyId);
    assert.deepEqual(Buffer.from(out.plaintext_b64, 'base64'), plain);
    assert.deepEqual(out.header, { key_id: keyId, key_version: 1 }, 'keyshard.ciphertext parses the header itself');
    assert.equal(Buffer.from(out.ciphertext_b64, 'base64').subarray(0, 2).toString(), 'ks');
    const servers = Object.values(out.servers);
    assert.ok(servers.length >= 1);
    for (const s of servers) {
      assert.match(s.cn, /^coordinator-\d+$/);
      assert.equal(s.pinned, true, 'dev certificates carry DNS:<CN>: gRPC verifies the replica on every handshake');
    }
  });

  test('interop with the TS SDK in both directions', async () => {
    const tsPlain = Buffer.concat([Buffer.from('from typescript \u00e9\u2713 '), randomBytes(32)]);
    const enc = await ts!.encrypt(keyName, tsPlain, CONTEXT);
    const fromPy = await py<{ plaintext_b64: string; key_id: string; key_version: number; header: unknown }>(
      'decrypt', { ciphertext_b64: enc.ciphertext.toString('base64'), context: CONTEXT });
    assert.deepEqual(Buffer.from(fromPy.plaintext_b64, 'base64'), tsPlain);
    assert.equal(fromPy.key_id, enc.key_id);
    assert.deepEqual(fromPy.header, { key_id: enc.key_id, key_version: enc.key_version });

    const pyPlain = randomBytes(48);
    const rt = await py<{ ciphertext_b64: string; key_version: number }>('roundtrip', { key: keyName, plaintext_b64: pyPlain.toString('base64'), context: CONTEXT });
    const dec = await ts!.decrypt(Buffer.from(rt.ciphertext_b64, 'base64'), CONTEXT);
    assert.deepEqual(dec.plaintext, pyPlain);
    assert.equal(dec.key_id, keyId);
  });

  test('a wrong or missing context raises WrongContextError', async () => {
    const ct = (await ts!.encrypt(keyName, Buffer.from('secret'), CONTEXT)).ciphertext.toString('base64');
    for (const wrong of [{ tenant: 'not-py' }, {}, { ...CONTEXT, extra: 'x' }]) {
      const e = await py<PyError>('wrong-context', { ciphertext_b64: ct, context: wrong });
      assert.equal(e.class, 'WrongContextError', `context ${JSON.stringify(wrong)}: ${JSON.stringify(e)}`);
      assert.equal(e.reason, 'WRONG_CONTEXT');
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.ok(e.request_id, 'the request id the audit log records the call under');
    }
  });

  test('the common KeyService calls, and typed errors for a missing and a disabled key', async () => {
    const prefix = `pyl-${randomBytes(3).toString('hex')}`;
    const out = await py<Record<string, any>>('lifecycle', { prefix });
    assert.deepEqual(out.created, { name: `${prefix}-aes`, type: 'aes256-gcm', state: 'KEY_STATE_ENABLED', primary_version: 1, labels: { team: 'py' }, rotation_period: 86400 });
    assert.equal(out.get_by_name_is_same_id, true);
    assert.equal(out.listed, true, 'list_keys pages through every key');
    assert.deepEqual(out.data_key, { length: 32, opens: true });
    assert.equal(out.data_key_without_plaintext, 0);
    assert.equal(out.rotated_primary_version, 2);
    assert.equal(out.encrypts_with_version, 2);
    assert.equal(out.disabled_encrypt.class, 'KeyDisabledError', JSON.stringify(out.disabled_encrypt));
    assert.equal(out.disabled_encrypt.reason, 'KEY_DISABLED');
    assert.equal(out.enabled_state, 'KEY_STATE_ENABLED');
    assert.equal(out.encrypt_after_enable, true);
    assert.equal(out.missing_key.class, 'KeyNotFoundError', JSON.stringify(out.missing_key));
    assert.equal(out.missing_key.code, 'NOT_FOUND');
    assert.equal(out.duplicate_create.code, 'ALREADY_EXISTS');
    assert.deepEqual(out.verify, [true, false]);
    assert.equal(out.public_key_pem, true);
    assert.deepEqual(out.verify_mac, [true, false]);
    assert.equal(out.status.initialized, true);
    assert.equal(out.status.sealed, false);
    assert.match(out.status.coordinator_id, /^coordinator-\d+$/);
  });

  test('a server that is not an expected coordinator is refused (UnavailableError), before anything is sent', async () => {
    const custodian = cluster!.custodianAddress(cluster!.custodianIds[0]!);
    const e = await py<PyError>('identity', { timeout: 5 }, [custodian]);
    assert.equal(e.class, 'UnavailableError', JSON.stringify(e));
    assert.match(e.details, new RegExp(`server identity check failed at ${custodian}: expected a coordinator replica .*presented CN '${cluster!.custodianIds[0]}'`));
    const wrongIds = await py<PyError>('identity', { timeout: 5, client: { coordinator_ids: ['coordinator-9'] } }, [cluster!.coordinatorAddress]);
    assert.equal(wrongIds.class, 'UnavailableError');
    assert.match(wrongIds.details, /expected a coordinator replica \(CN 'coordinator-9'.*presented CN 'coordinator-1'/);
  });

  test('failover: the first replica stopped, idempotent calls (and a create never sent) succeed within their deadline', async () => {
    const stoppedId = cluster!.coordinatorIds[1]!;
    await cluster!.process(stoppedId).stop();
    const created = `py-fo-${randomBytes(3).toString('hex')}`;
    const out = await py<{ encrypt: string; decrypt: boolean; get_key: string; status_coordinator: string; create_key: string; seconds: number; servers: Record<string, unknown> }>(
      'failover', { key: keyName, create: created, timeout: 8 }, [cluster!.coordinatorAddressOf(stoppedId), cluster!.coordinatorAddress]);
    assert.equal(out.encrypt, keyId);
    assert.equal(out.decrypt, true);
    assert.equal(out.get_key, keyId);
    assert.equal(out.status_coordinator, cluster!.coordinatorIds[0]);
    assert.equal(out.create_key, created, 'a connection that never came up proves CreateKey was not sent: it moved on');
    assert.ok(out.seconds < 8, `well within the deadline: ${out.seconds} s`);
    assert.deepEqual(Object.keys(out.servers), [cluster!.coordinatorAddress], 'only the live replica was connected');
    assert.equal((await ts!.getKey(created)).name, created);
  });
  test('sealed: SealedError (reason SEALED) from a sealed cluster, also after failing over past a stopped replica', async () => {
    // Seal seals every replica (the second is stopped by the test before).
    const admin = cluster!.client(ADMIN); // sealing is the admin's
    try {
      assert.equal((await admin.seal()).sealed, true);
    } finally {
      admin.close();
    }
    const alone = await py<{ encrypt: PyError; status_sealed: boolean }>('sealed', { key: keyName }, [cluster!.coordinatorAddress]);
    assert.equal(alone.status_sealed, true);
    assert.equal(alone.encrypt.class, 'SealedError', JSON.stringify(alone.encrypt));
    assert.equal(alone.encrypt.reason, 'SEALED');
    assert.equal(alone.encrypt.code, 'FAILED_PRECONDITION');
    const both = await py<{ encrypt: PyError }>('sealed', { key: keyName }, [cluster!.coordinatorAddressOf(cluster!.coordinatorIds[1]!), cluster!.coordinatorAddress]);
    assert.equal(both.encrypt.class, 'SealedError', JSON.stringify(both.encrypt));
  });
});
