/**
 * The envelope helper's behaviour with a stand-in keyshard (a local AES-GCM wrap that binds the
 * context, as keyshard's ciphertext v1 does): round trips of bytes, streams and files, the
 * context required to decrypt, the data key zeroed, bounded segments, and no output file from a
 * modified envelope. The format itself is frozen by envelope.vectors.spec.ts; the real cluster
 * round trip is test/sdk-package.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, existsSync, rmSync, statSync, symlinkSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DEFAULT_SEGMENT_BYTES,
  decryptEnvelope,
  decryptEnvelopeStream,
  decryptFile,
  encodeEnvelopeContext,
  encryptEnvelope,
  encryptEnvelopeStream,
  encryptFile,
  parseEnvelopeHeader,
  type EnvelopeContext,
  type EnvelopeKeyClient,
} from './envelope.ts';

/** A stand-in keyshard: wraps data keys with AES-256-GCM under a master key, the context as AAD. */
function standIn() {
  const master = randomBytes(32);
  const handedOut: Buffer[] = [];
  const seen = { generate: [] as { key: string; length: number; context: EnvelopeContext }[], decrypt: 0 };
  const client: EnvelopeKeyClient = {
    async generateDataKey(key, length, context) {
      seen.generate.push({ key, length, context });
      const plaintext = randomBytes(length);
      const nonce = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', master, nonce);
      c.setAAD(encodeEnvelopeContext(context));
      const ciphertext = Buffer.concat([Buffer.from('ks\x01'), nonce, c.update(plaintext), c.final(), c.getAuthTag()]);
      handedOut.push(plaintext);
      return { plaintext, ciphertext };
    },
    async decrypt(ciphertext, context) {
      seen.decrypt++;
      const d = createDecipheriv('aes-256-gcm', master, ciphertext.subarray(3, 15));
      d.setAAD(encodeEnvelopeContext(context));
      d.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
      let plaintext: Buffer;
      try {
        plaintext = Buffer.concat([d.update(ciphertext.subarray(15, ciphertext.length - 16)), d.final()]);
      } catch {
        throw Object.assign(new Error('ciphertext could not be authenticated: wrong encryption context'), { code: 3 });
      }
      handedOut.push(plaintext);
      return { plaintext };
    },
  };
  return { client, seen, handedOut };
}

const ctx = { tenant: 'acme', object: 'report.pdf' };

async function collect(g: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const b of g) out.push(b);
  return Buffer.concat(out);
}

describe('envelope helper', () => {
  it('round trips bytes of many lengths around the segment size, asking for a 32-byte data key under the context', async () => {
    const { client, seen } = standIn();
    for (const n of [0, 1, 63, 64, 65, 127, 128, 129, 1000]) {
      const plaintext = randomBytes(n);
      const env = await encryptEnvelope(client, 'files', plaintext, { context: ctx, segmentSize: 64 });
      const segments = Math.max(1, Math.ceil(n / 64));
      assert.equal(env.length, parseEnvelopeHeader(env)!.bytes.length + n + 16 * segments, `${n} bytes: ${segments} segments`);
      assert.deepEqual(await decryptEnvelope(client, env, { context: ctx }), plaintext);
    }
    assert.deepEqual(seen.generate.at(-1), { key: 'files', length: 32, context: ctx });
  });

  it('encrypts a string as its UTF-8 bytes', async () => {
    const { client } = standIn();
    const env = await encryptEnvelope(client, 'k', 'grüße', { context: {} });
    assert.equal((await decryptEnvelope(client, env, { context: {} })).toString('utf8'), 'grüße');
  });

  it('decryption needs the exact context: keyshard refuses to unwrap the key under another (none is read from the envelope)', async () => {
    const { client } = standIn();
    const env = await encryptEnvelope(client, 'k', Buffer.from('secret'), { context: ctx });
    assert.ok(!env.includes(Buffer.from('acme')), 'the context is not stored in the envelope');
    await assert.rejects(decryptEnvelope(client, env, { context: { tenant: 'acme' } }), /wrong encryption context/);
    await assert.rejects(decryptEnvelope(client, env, { context: {} }), /wrong encryption context/);
  });

  it('zeroes every data key it received, after encrypting and after decrypting, also when the reader stops early', async () => {
    const { client, handedOut } = standIn();
    const env = await encryptEnvelope(client, 'k', randomBytes(500), { context: ctx, segmentSize: 64 });
    await decryptEnvelope(client, env, { context: ctx });
    const stream = encryptEnvelopeStream(client, 'k', [randomBytes(300)], { context: ctx, segmentSize: 64 });
    await stream.next(); // the header: the data key is in use
    await stream.return(undefined); // the caller stops
    const dec = decryptEnvelopeStream(client, env, { context: ctx });
    await dec.next();
    await dec.return(undefined);
    assert.equal(handedOut.length, 4);
    for (const k of handedOut) assert.ok(k.equals(Buffer.alloc(32)), 'zeroed');
  });

  it('refuses a segment size outside 64 B..16 MiB and a context that is not a map of strings, before asking keyshard', async () => {
    const { client, seen } = standIn();
    for (const segmentSize of [0, 63, 16 * 1024 * 1024 + 1, 1.5])
      await assert.rejects(encryptEnvelope(client, 'k', Buffer.from('x'), { context: {}, segmentSize }), /segmentSize must be/);
    await assert.rejects(encryptEnvelope(client, 'k', Buffer.from('x'), { context: { a: 1 } as never }), /must be a string/);
    assert.equal(seen.generate.length, 0);
  });

  it('refuses a data key that is not 32 bytes', async () => {
    const { client } = standIn();
    const short: EnvelopeKeyClient = { ...client, generateDataKey: (k, _n, c) => client.generateDataKey(k, 16, c) };
    await assert.rejects(encryptEnvelope(short, 'k', Buffer.from('x'), { context: {} }), /16 bytes, not 32/);
  });

  it('streams: a Readable in, segments out as they fill (default 64 KiB), through stream.pipeline both ways', async () => {
    const { client } = standIn();
    const plaintext = randomBytes(3 * DEFAULT_SEGMENT_BYTES + 12_345);
    const sealed: Buffer[] = [];
    await pipeline(
      Readable.from((function* () {
        for (let at = 0; at < plaintext.length; at += 10_000) yield plaintext.subarray(at, at + 10_000);
      })()),
      (src) => encryptEnvelopeStream(client, 'k', src, { context: ctx }),
      new Writable({ write: (b: Buffer, _e, cb) => (sealed.push(b), cb()) }),
    );
    // The header, then 3 full segments and the last: each block is at most one sealed segment.
    assert.deepEqual(sealed.slice(1).map((b) => b.length), [DEFAULT_SEGMENT_BYTES + 16, DEFAULT_SEGMENT_BYTES + 16, DEFAULT_SEGMENT_BYTES + 16, 12_345 + 16]);
    const opened: Buffer[] = [];
    await pipeline(Readable.from(sealed), (src) => decryptEnvelopeStream(client, src, { context: ctx }), new Writable({ write: (b: Buffer, _e, cb) => (opened.push(b), cb()) }));
    assert.ok(opened.every((b) => b.length <= DEFAULT_SEGMENT_BYTES));
    assert.deepEqual(Buffer.concat(opened), plaintext);
  });

  it('files: encryptFile / decryptFile round trip; a modified or cut envelope leaves no output file; a missing input asks keyshard nothing', async () => {
    const { client, seen } = standIn();
    const dir = mkdtempSync(path.join(tmpdir(), 'envelope-'));
    try {
      const plaintext = randomBytes(200_000);
      writeFileSync(path.join(dir, 'in'), plaintext);
      await encryptFile(client, 'k', path.join(dir, 'in'), path.join(dir, 'in.kse'), { context: ctx });
      await decryptFile(client, path.join(dir, 'in.kse'), path.join(dir, 'out'), { context: ctx });
      assert.deepEqual(readFileSync(path.join(dir, 'out')), plaintext);

      const env = readFileSync(path.join(dir, 'in.kse'));
      const modified = Buffer.from(env);
      modified[modified.length - 100]! ^= 1;
      for (const [name, bytes] of [['modified', modified], ['cut', env.subarray(0, env.length - 70_000)]] as const) {
        writeFileSync(path.join(dir, name), bytes);
        await assert.rejects(decryptFile(client, path.join(dir, name), path.join(dir, `${name}.out`), { context: ctx }), /could not be authenticated/);
        assert.equal(existsSync(path.join(dir, `${name}.out`)), false);
        assert.ok(!readdirSync(dir).some((f) => f.includes(`${name}.out`)), 'no temporary file left behind');
      }
      await assert.rejects(encryptFile(client, 'k', path.join(dir, 'missing'), path.join(dir, 'missing.kse'), { context: ctx }), { code: 'ENOENT' });
      assert.ok(!readdirSync(dir).some((f) => f.includes('missing.kse')), 'no temporary file left behind');
      assert.equal(seen.generate.length, 1, 'only the first encryptFile asked for a data key');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('files: decryptFile never writes through a file or symlink planted beside the output; the output is 0600', async () => {
    // The attack: in a shared directory, another user plants `out.partial` -> a file of theirs
    // (or one of the victim's) hoping the plaintext is written through it with its permissions.
    const { client } = standIn();
    const dir = mkdtempSync(path.join(tmpdir(), 'envelope-'));
    try {
      const plaintext = Buffer.from('TOP SECRET PLAINTEXT');
      writeFileSync(path.join(dir, 'in'), plaintext);
      await encryptFile(client, 'k', path.join(dir, 'in'), path.join(dir, 'in.kse'), { context: ctx });
      writeFileSync(path.join(dir, 'victim'), 'untouched', { mode: 0o644 });
      symlinkSync(path.join(dir, 'victim'), path.join(dir, 'out.partial'));
      await decryptFile(client, path.join(dir, 'in.kse'), path.join(dir, 'out'), { context: ctx });
      assert.equal(readFileSync(path.join(dir, 'victim'), 'utf8'), 'untouched');
      assert.ok(lstatSync(path.join(dir, 'out.partial')).isSymbolicLink(), 'the planted link is left alone');
      assert.ok(lstatSync(path.join(dir, 'out')).isFile());
      assert.deepEqual(readFileSync(path.join(dir, 'out')), plaintext);
      assert.equal(statSync(path.join(dir, 'out')).mode & 0o777, 0o600);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses input that is neither bytes nor a stream', async () => {
    const { client } = standIn();
    await assert.rejects(encryptEnvelope(client, 'k', 42 as never, { context: {} }), /must be bytes/);
  });
});
