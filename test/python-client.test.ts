/**
 * A real non-TypeScript client: test/python/keyshard_client.py (grpcio, stubs generated from
 * proto/ at test time by protoc + grpc_python_plugin, mutual TLS) against a DevCluster, and
 * interop in both directions with the TS SDK; and, with no server, the Python client's own
 * ciphertext v1 parser and AES-GCM / ChaCha20-Poly1305 open (pyca/cryptography) against the frozen
 * vectors packages/crypto/vectors/ciphertext-v1.json. Needs the Debian packages python3-grpcio,
 * python3-cryptography, protobuf-compiler and protobuf-compiler-grpc; without them the test
 * fails, it never skips.
 *
 *   node --import tsx --test test/python-client.test.ts
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DevCluster, ADMIN } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';

const run = promisify(execFile);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PYTHON = '/usr/bin/python3';
const PROTOC = '/usr/bin/protoc';
const GRPC_PLUGIN = '/usr/bin/grpc_python_plugin';
const SCRIPT = path.join(REPO, 'test', 'python', 'keyshard_client.py');
const PACKAGES = 'python3-grpcio, python3-cryptography, protobuf-compiler and protobuf-compiler-grpc';
const CIPHERTEXT_VECTORS = path.join(REPO, 'packages', 'crypto', 'vectors', 'ciphertext-v1.json');
const CONTEXT = { tenant: 'py' };

/** Fails (never skips) with a message naming the Debian packages when a prerequisite is missing. */
async function checkPrerequisites(): Promise<void> {
  const missing: string[] = [];
  if (!existsSync(PYTHON)) missing.push(`${PYTHON} (python3)`);
  if (!existsSync(PROTOC)) missing.push(`${PROTOC} (protobuf-compiler)`);
  if (!existsSync(GRPC_PLUGIN)) missing.push(`${GRPC_PLUGIN} (protobuf-compiler-grpc)`);
  if (existsSync(PYTHON)) {
    try {
      await run(PYTHON, ['-c', 'import grpc, google.protobuf']);
    } catch (e) {
      missing.push(`python module grpc (python3-grpcio): ${((e as { stderr?: string }).stderr ?? String(e)).trim().split('\n').pop()}`);
    }
    try {
      await run(PYTHON, ['-c', 'import cryptography.hazmat.primitives.ciphers.aead']);
    } catch (e) {
      missing.push(`python module cryptography (python3-cryptography): ${((e as { stderr?: string }).stderr ?? String(e)).trim().split('\n').pop()}`);
    }
  }
  if (missing.length)
    throw new Error(`Python client test prerequisites missing: ${missing.join('; ')}. Install the Debian packages ${PACKAGES} (apt-get install ${PACKAGES.replace(/,| and/g, '')}).`);
}

describe('Python client opens the frozen ciphertext vectors (no server)', () => {
  interface Vectors {
    cases: { name: string; key_id: string; key_version: number; plaintext_hex: string }[];
    invalid: { name: string; error: string }[];
    authentication_failures: { name: string }[];
  }

  test('every vector ciphertext opens to its plaintext; every bad one is refused', async () => {
    await checkPrerequisites();
    const vectors = JSON.parse(readFileSync(CIPHERTEXT_VECTORS, 'utf8')) as Vectors;
    const { stdout } = await run(PYTHON, [SCRIPT, 'open-vectors', '--vectors', CIPHERTEXT_VECTORS], { cwd: REPO, timeout: 30_000 });
    const out = JSON.parse(stdout) as { opened: { name: string; key_id: string; key_version: number; plaintext_b64: string }[]; refused: { name: string; error: string | null }[] };
    assert.deepEqual(
      out.opened,
      vectors.cases.map((c) => ({ name: c.name, key_id: c.key_id, key_version: c.key_version, plaintext_b64: Buffer.from(c.plaintext_hex, 'hex').toString('base64') })),
    );
    assert.deepEqual(out.refused.map((r) => r.name), [...vectors.invalid, ...vectors.authentication_failures].map((v) => v.name));
    for (const r of out.refused) assert.ok(r.error, `refused: ${r.name}`);
    for (const v of vectors.invalid) assert.equal(out.refused.find((r) => r.name === v.name)!.error, v.error, 'the same reason as keyshard gives');
  });
});

describe('Python gRPC client (grpcio, mutual TLS)', () => {
  let dir: string;
  let cluster: DevCluster | undefined;
  let client: KeyshardClient | undefined;
  let stubsDir: string;
  let keyName: string;
  let keyId: string;

  /** Runs the Python client; resolves with its JSON output, or rejects with its stderr. */
  async function py(mode: string, extra: string[]): Promise<Record<string, unknown>> {
    const tls = cluster!.layout.certs[ADMIN]!;
    const args = [
      SCRIPT, mode,
      '--address', cluster!.coordinatorAddress,
      '--ca', tls.ca, '--cert', tls.cert, '--key', tls.key,
      '--stubs-dir', stubsDir,
      ...extra,
    ];
    try {
      const { stdout } = await run(PYTHON, args, { cwd: REPO, timeout: 30_000 });
      return JSON.parse(stdout) as Record<string, unknown>;
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      throw new Error(`keyshard_client.py ${mode} failed (exit ${err.code}): ${err.stderr?.trim() || err.stdout?.trim() || String(e)}`);
    }
  }

  before(async () => {
    await checkPrerequisites();
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-pyclient-'));
    // Stubs are generated at test time, here once for all runs of the script; never committed.
    stubsDir = path.join(dir, 'pystubs');
    mkdirSync(stubsDir);
    const protos = readdirSync(path.join(REPO, 'proto', 'keyshard', 'v1'))
      .filter((f) => f.endsWith('.proto'))
      .map((f) => path.join('proto', 'keyshard', 'v1', f));
    await run(PROTOC, [
      '-I', 'proto', `--python_out=${stubsDir}`, `--grpc_python_out=${stubsDir}`,
      `--plugin=protoc-gen-grpc_python=${GRPC_PLUGIN}`, ...protos,
    ], { cwd: REPO });
    assert.ok(existsSync(path.join(stubsDir, 'keyshard', 'v1', 'keys_pb2_grpc.py')), 'protoc generated keys_pb2_grpc.py');

    cluster = await DevCluster.create({ dir: path.join(dir, 'cluster'), custodians: 3, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
    client = cluster.client();
    keyName = `py-interop-${randomBytes(4).toString('hex')}`;
    const key = await client.createKey(keyName);
    keyId = key.id;
    assert.ok(keyId, 'CreateKey returned a key id');
  }, { timeout: 60_000 });

  after(async () => {
    client?.close();
    try {
      await cluster?.stop();
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });

  test('Python encrypts and decrypts: round trip over mutual TLS', async () => {
    const out = await py('roundtrip', ['--key-name', keyName, '--plaintext', 'hello from python', '--context', JSON.stringify(CONTEXT)]);
    assert.equal(out.matched, true, JSON.stringify(out));
    assert.equal(out.key_id, keyId);
    assert.equal(out.key_version, 1);
    assert.deepEqual(out.header, { key_id: keyId, key_version: 1 }, 'Python parses the ciphertext header itself');
    assert.equal(Buffer.from(out.plaintext_b64 as string, 'base64').toString(), 'hello from python');
    const ct = Buffer.from(out.ciphertext_b64 as string, 'base64');
    assert.equal(ct.subarray(0, 2).toString(), 'ks', 'a self-describing keyshard ciphertext');
  });

  test('Python verifies the server certificate name (TLS is real)', async () => {
    await assert.rejects(
      py('roundtrip', ['--key-name', keyName, '--plaintext', 'x', '--target-name-override', 'not-the-server.example']),
      /UNAVAILABLE/,
    );
  });

  test('Python pins the coordinator by name: dev server certificates carry DNS:<their CN>', async () => {
    const pinned = await py('roundtrip', ['--key-name', keyName, '--plaintext', 'x', '--target-name-override', 'coordinator-1']);
    assert.equal(pinned.matched, true, JSON.stringify(pinned));
    // Another component of the same CA at the address does not carry that name: refused at the handshake.
    await assert.rejects(
      py('roundtrip', ['--key-name', keyName, '--plaintext', 'x', '--target-name-override', 'coordinator-1', '--address', cluster!.custodianAddress('custodian-1')]),
      /UNAVAILABLE/,
    );
  });

  test('TS SDK ciphertext decrypts in Python, Python ciphertext decrypts in the TS SDK', async () => {
    // TS -> Python, binary plaintext so no text encoding can hide a mismatch.
    const tsPlain = Buffer.concat([Buffer.from('from typescript \u00e9\u2713 '), randomBytes(32)]);
    const enc = await client!.encrypt(keyName, tsPlain, CONTEXT);
    const fromPy = await py('decrypt', ['--ciphertext-b64', enc.ciphertext.toString('base64'), '--context', JSON.stringify(CONTEXT)]);
    assert.deepEqual(Buffer.from(fromPy.plaintext_b64 as string, 'base64'), tsPlain);
    assert.equal(fromPy.key_id, enc.key_id);
    assert.equal(fromPy.key_version, enc.key_version);
    assert.deepEqual(fromPy.header, { key_id: enc.key_id, key_version: enc.key_version });

    const text = await py('decrypt', [
      '--ciphertext-b64', (await client!.encrypt(keyName, Buffer.from('plain text \u00fc'), CONTEXT)).ciphertext.toString('base64'),
      '--context', JSON.stringify(CONTEXT),
    ]);
    assert.equal(text.plaintext, 'plain text \u00fc');

    // Python -> TS.
    const pyPlain = randomBytes(48);
    const rt = await py('roundtrip', ['--key-name', keyName, '--plaintext-b64', pyPlain.toString('base64'), '--context', JSON.stringify(CONTEXT)]);
    assert.equal(rt.matched, true);
    const dec = await client!.decrypt(Buffer.from(rt.ciphertext_b64 as string, 'base64'), CONTEXT);
    assert.deepEqual(dec.plaintext, pyPlain);
    assert.equal(dec.key_id, keyId);
    assert.equal(dec.key_version, rt.key_version);
  });

  test('Python Decrypt with the wrong context gets INVALID_ARGUMENT', async () => {
    // A ciphertext Python makes itself...
    const own = await py('wrong-context', [
      '--key-name', keyName, '--plaintext', 'secret', '--context', JSON.stringify(CONTEXT), '--wrong-context', JSON.stringify({ tenant: 'not-py' }),
    ]);
    assert.equal(own.code, 'INVALID_ARGUMENT', JSON.stringify(own));
    // ...and one from the TS SDK, with the context missing entirely and with an extra entry.
    const ct = (await client!.encrypt(keyName, Buffer.from('secret'), CONTEXT)).ciphertext.toString('base64');
    for (const wrong of [{}, { ...CONTEXT, extra: 'x' }]) {
      const out = await py('wrong-context', ['--ciphertext-b64', ct, '--context', JSON.stringify(CONTEXT), '--wrong-context', JSON.stringify(wrong)]);
      assert.equal(out.code, 'INVALID_ARGUMENT', `context ${JSON.stringify(wrong)}: ${JSON.stringify(out)}`);
    }
  });
});
