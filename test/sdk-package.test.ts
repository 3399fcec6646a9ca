/**
 * The SDK as another team gets it: `npm pack` in packages/client (its prepack compiles the
 * client and the workspace packages it bundles, with the protos), the tarball installed into an
 * empty project (`npm init -y`, `npm install <tarball>`: @grpc/* and friends come from the
 * registry, through the local npm cache when it has them), then a plain-node ESM script — no
 * tsx, no repository on its module path — encrypts, decrypts and round trips an envelope and a
 * file against a dev cluster, and a tiny TypeScript consumer type-checks against the installed
 * .d.ts with the repository's tsc. Nothing here is skipped: a missing tool fails the test.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { DevCluster } from '@keyshard/devcluster';

const run = promisify(execFile);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLIENT = path.join(REPO, 'packages/client');

/** The environment of a child that must not inherit this test's loaders (tsx) or conditions. */
function plainEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.NODE_OPTIONS;
  return env;
}

async function sh(cmd: string, args: string[], cwd: string, extra: Record<string, string> = {}): Promise<string> {
  try {
    const { stdout } = await run(cmd, args, { cwd, env: plainEnv(extra), maxBuffer: 64 * 1024 * 1024, timeout: 300_000 });
    return stdout;
  } catch (e) {
    const err = e as Error & { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
  }
}

const CONSUMER_SCRIPT = `
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { KeyshardClient, encryptEnvelope, decryptEnvelope, encryptFile, decryptFile, parseEnvelopeHeader } from '@keyshard/client';

const cfg = JSON.parse(process.env.KEYSHARD_SDK_TEST);
const client = new KeyshardClient({ address: cfg.address, tls: cfg.tls, coordinatorIds: cfg.coordinatorIds });
const refusal = (p) => p.then(() => 'accepted', (e) => String(e.code));
const reasonOf = (p) => p.then(() => 'accepted', (e) => String(e.reason));
try {
  const key = await client.createKey('sdk-package');
  await client.createKey('sdk-package-other');
  const context = { team: 'payments', object: 'invoice-7' };
  const message = Buffer.from('hello from a plain node project');
  const sealed = await client.encrypt('sdk-package', message, context);
  const opened = await client.decrypt(sealed.ciphertext, context);

  const big = randomBytes(300_000);
  const envelope = await encryptEnvelope(client, 'sdk-package', big, { context });
  const back = await decryptEnvelope(client, envelope, { context });
  const tampered = Buffer.from(envelope);
  tampered[tampered.length - 1] ^= 1;

  writeFileSync(cfg.dir + '/plain.bin', big);
  await encryptFile(client, 'sdk-package', cfg.dir + '/plain.bin', cfg.dir + '/plain.kse', { context });
  await decryptFile(client, cfg.dir + '/plain.kse', cfg.dir + '/plain.out', { context });

  console.log(JSON.stringify({
    keyId: key.id,
    decrypted: opened.plaintext.toString(),
    ciphertextKeyId: sealed.key_id,
    wrongContext: await refusal(client.decrypt(sealed.ciphertext, { team: 'payments' })),
    envelopeRoundTrip: back.equals(big),
    envelopeSegmentSize: parseEnvelopeHeader(envelope).segmentSize,
    envelopeWrongContext: await refusal(decryptEnvelope(client, envelope, { context: {} })),
    envelopeTampered: await refusal(decryptEnvelope(client, tampered, { context })),
    envelopeRightKey: (await decryptEnvelope(client, envelope, { context, key: 'sdk-package' })).equals(big),
    envelopeOtherKey: await reasonOf(decryptEnvelope(client, envelope, { context, key: 'sdk-package-other' })),
    fileRoundTrip: readFileSync(cfg.dir + '/plain.out').equals(big),
  }));
} finally {
  client.close();
}
`;

/** Checks the installed .d.ts: each @ts-expect-error must be needed, so types that fell to `any` fail too. */
const CONSUMER_TS = `
import { KeyshardClient, encryptEnvelope, decryptEnvelope, encryptEnvelopeStream, DEFAULT_SEGMENT_BYTES, type EnvelopeOptions } from '@keyshard/client';

export async function demo(): Promise<number> {
  const client = new KeyshardClient({ address: '127.0.0.1:1', tls: { ca: 'ca.pem', cert: 'app.pem', key: 'app-key.pem' } });
  const name: string = (await client.getKey('k')).name;
  const ciphertext: Buffer = (await client.encrypt(name, Buffer.from('x'), { a: 'b' })).ciphertext;
  const envelope: Buffer = await encryptEnvelope(client, name, ciphertext, { context: { a: 'b' }, segmentSize: 4096 });
  const options: EnvelopeOptions = { context: {} };
  const plaintext: Buffer = await decryptEnvelope(client, envelope, options);
  for await (const block of encryptEnvelopeStream(client, name, [plaintext], options)) block satisfies Buffer;
  // @ts-expect-error TLS material is files or buffers (TlsFiles from the bundled @keyshard/rpc)
  new KeyshardClient({ address: '127.0.0.1:1', tls: 42 });
  // @ts-expect-error a context maps strings to strings
  await encryptEnvelope(client, name, plaintext, { context: { a: 1 } });
  // @ts-expect-error decryption needs the expected context
  await decryptEnvelope(client, envelope, {});
  client.close();
  return DEFAULT_SEGMENT_BYTES + plaintext.length;
}
`;

describe('@keyshard/client packed, installed into an empty project, used with plain node', { timeout: 900_000 }, () => {
  let work: string;
  let consumer: string;
  let tarball: string;
  let cluster: DevCluster;

  before(async () => {
    work = mkdtempSync(path.join(tmpdir(), 'keyshard-sdk-package-'));
    const packed = JSON.parse(await sh('npm', ['pack', '--json', '--pack-destination', work], CLIENT)) as { filename: string }[];
    tarball = path.join(work, packed[0]!.filename);
    consumer = path.join(work, 'consumer');
    mkdirSync(consumer);
    await sh('npm', ['init', '-y'], consumer);
    await sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], consumer);
    cluster = await DevCluster.create({ dir: path.join(work, 'cluster'), custodians: 2, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
  });

  after(async () => {
    await cluster?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('the tarball holds the compiled SDK with .d.ts, the protos and its bundled workspace packages, and no TypeScript source', async () => {
    const files = (await sh('tar', ['tzf', tarball], work)).split('\n').filter(Boolean);
    for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/envelope.js', 'dist/envelope.d.ts', 'VECTORS.md', 'package.json',
      'node_modules/@keyshard/rpc/dist/index.js', 'node_modules/@keyshard/rpc/dist/index.d.ts', 'node_modules/@keyshard/errors/dist/index.js',
      'node_modules/@keyshard/rpc/dist/proto/keyshard/v1/keys.proto', 'node_modules/@keyshard/rpc/dist/proto/google/rpc/status.proto'])
      assert.ok(files.includes(`package/${f}`), `${f} is in the tarball`);
    assert.deepEqual(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')), [], 'no .ts source');
    const protos = readdirSync(path.join(REPO, 'proto/keyshard/v1'));
    for (const p of protos) assert.ok(files.includes(`package/node_modules/@keyshard/rpc/dist/proto/keyshard/v1/${p}`), `${p} is packed`);
  });

  it('its package.json: public, conditional exports, and every package it needs either bundled or from the registry', async () => {
    const pkg = JSON.parse(readFileSync(path.join(consumer, 'node_modules/@keyshard/client/package.json'), 'utf8'));
    assert.equal(pkg.private, undefined);
    assert.deepEqual(pkg.exports['.'], { 'keyshard-source': './src/index.ts', types: './dist/index.d.ts', default: './dist/index.js' });
    assert.equal(pkg.types, './dist/index.d.ts');
    assert.ok(pkg.engines?.node);
    // Every @keyshard package the client reaches is bundled; every other dependency of a bundled
    // package is a dependency of the client itself (npm installs no dependencies of bundled ones).
    const bundled = new Set<string>(pkg.bundleDependencies);
    const reach = (deps: Record<string, string> = {}) => {
      for (const [name, range] of Object.entries(deps)) {
        if (name.startsWith('@keyshard/')) {
          assert.ok(bundled.has(name), `${name} is bundled`);
          reach(JSON.parse(readFileSync(path.join(consumer, 'node_modules/@keyshard/client/node_modules', name, 'package.json'), 'utf8')).dependencies);
        } else assert.equal(pkg.dependencies[name], range, `${name}@${range} is a dependency of the client`);
      }
    };
    reach(pkg.dependencies);
    assert.deepEqual(readdirSync(path.join(consumer, 'node_modules/@keyshard')), ['client'], 'no other @keyshard package at the top of node_modules');
  });

  it('a plain-node ESM script encrypts, decrypts, round trips an envelope and a file against the dev cluster', async () => {
    writeFileSync(path.join(consumer, 'use-sdk.mjs'), CONSUMER_SCRIPT);
    const tls = cluster.layout.certs.app!;
    const out = await sh(process.execPath, ['use-sdk.mjs'], consumer, {
      KEYSHARD_SDK_TEST: JSON.stringify({ address: cluster.coordinatorAddress, tls, coordinatorIds: cluster.coordinatorIds, dir: consumer }),
    });
    const r = JSON.parse(out.trim().split('\n').at(-1)!);
    assert.equal(r.decrypted, 'hello from a plain node project');
    assert.equal(r.ciphertextKeyId, r.keyId);
    assert.ok(['3', 'INVALID_ARGUMENT'].includes(r.wrongContext), `another context is refused (${r.wrongContext})`);
    assert.equal(r.envelopeRoundTrip, true);
    assert.equal(r.envelopeSegmentSize, 65536);
    assert.ok(['3', 'INVALID_ARGUMENT'].includes(r.envelopeWrongContext), `the envelope's data key is refused under another context (${r.envelopeWrongContext})`);
    assert.equal(r.envelopeTampered, 'INVALID_ARGUMENT');
    assert.equal(r.envelopeRightKey, true, 'an envelope opens when its data key belongs to the expected key');
    assert.equal(r.envelopeOtherKey, 'WRONG_KEY', 'an envelope whose data key belongs to another key is refused when the caller names the key');
    assert.equal(r.fileRoundTrip, true);
    assert.equal(existsSync(path.join(consumer, 'plain.out.partial')), false);
  });

  it('a TypeScript consumer type-checks against the installed .d.ts (strict, NodeNext, library checks on)', async () => {
    writeFileSync(path.join(consumer, 'consumer.ts'), CONSUMER_TS);
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    await sh(process.execPath, [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--types', 'node', 'consumer.ts'], consumer);
  });
});
