/**
 * The envelope format against the frozen vectors in ../vectors/envelope.json, written by
 * ../vectors/generate.py (Python: layout, STREAM nonces and context encoding written out from
 * ../VECTORS.md, AES-256-GCM from pyca/cryptography, no keyshard code). The data key is fixed
 * and the wrapped key opaque; a stand-in client plays keyshard. Each frozen envelope must be
 * made byte for byte by the SDK (given the vector's nonce prefix), open in any chunking, and
 * every refusal vector must be refused with its reason.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { InvalidCiphertextError } from './errors.ts';
import {
  decryptEnvelope,
  decryptEnvelopeStream,
  encodeEnvelopeContext,
  envelopeAad,
  openEnvelope,
  parseEnvelopeHeader,
  sealEnvelope,
  segmentNonce,
  type EnvelopeContext,
  type EnvelopeKeyClient,
} from './envelope.ts';

interface Case {
  name: string;
  context: EnvelopeContext;
  context_encoding_hex: string;
  segment_size: number;
  nonce_prefix_hex: string;
  plaintext_hex?: string;
  plaintext_pattern?: { length: number };
  header_hex: string;
  aad_hex: string;
  segments: { index: number; last: boolean; nonce_hex: string; plaintext_length: number; sealed_length: number }[];
  envelope_sha256: string;
  envelope_b64: string;
}
interface Vectors {
  data_key_hex: string;
  wrapped_key_hex: string;
  cases: Case[];
  refusals: {
    structural: { name: string; envelope_hex: string; message: string; before_unwrapping: boolean }[];
    authentication: { name: string; envelope_hex: string; context: EnvelopeContext; message: string }[];
  };
}

const v = JSON.parse(readFileSync(new URL('../vectors/envelope.json', import.meta.url), 'utf8')) as Vectors;
const hex = (s: string) => Buffer.from(s, 'hex');
const dataKey = hex(v.data_key_hex);
const wrappedKey = hex(v.wrapped_key_hex);

const plaintextOf = (c: Case) => (c.plaintext_hex !== undefined ? hex(c.plaintext_hex) : Buffer.from(Array.from({ length: c.plaintext_pattern!.length }, (_, i) => i % 251)));

/** keyshard's part: hands out the vectors' data key for their wrapped key, under any context. */
function standIn() {
  const calls = { decrypt: 0 };
  const client: EnvelopeKeyClient = {
    async generateDataKey() {
      throw new Error('not used');
    },
    async decrypt(ciphertext) {
      calls.decrypt++;
      assert.deepEqual(ciphertext, wrappedKey, 'the wrapped key is sent to keyshard as it is in the header');
      return { plaintext: Buffer.from(dataKey) };
    },
  };
  return { client, calls };
}

function* pieces(b: Buffer, step: number): Generator<Buffer> {
  for (let at = 0; at < b.length; at += step) yield b.subarray(at, at + step);
}

async function collect(g: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const b of g) out.push(b);
  return Buffer.concat(out);
}

describe('envelope (frozen vectors packages/client/vectors/envelope.json)', () => {
  for (const c of v.cases) {
    const envelope = Buffer.from(c.envelope_b64, 'base64');
    const plaintext = plaintextOf(c);

    it(`${c.name}: header fields, AAD and nonces are those of the vector`, () => {
      assert.equal(createHash('sha256').update(envelope).digest('hex'), c.envelope_sha256);
      assert.equal(encodeEnvelopeContext(c.context).toString('hex'), c.context_encoding_hex);
      const h = parseEnvelopeHeader(envelope)!;
      assert.equal(h.bytes.toString('hex'), c.header_hex);
      assert.equal(h.version, 1);
      assert.equal(h.algorithm, 1);
      assert.equal(h.segmentSize, c.segment_size);
      assert.equal(h.noncePrefix.toString('hex'), c.nonce_prefix_hex);
      assert.deepEqual(h.wrappedKey, wrappedKey);
      assert.equal(envelopeAad(h.bytes, c.context).toString('hex'), c.aad_hex);
      for (const s of c.segments) assert.equal(segmentNonce(h.noncePrefix, s.index, s.last).toString('hex'), s.nonce_hex);
      assert.equal(h.bytes.length + c.segments.reduce((n, s) => n + s.sealed_length, 0), envelope.length);
    });

    it(`${c.name}: the SDK makes the same bytes (in any chunking of the input)`, async () => {
      for (const step of [1, 63, 64, 65, 1000, Math.max(1, plaintext.length)]) {
        const made = await collect(sealEnvelope(dataKey, wrappedKey, c.context, pieces(plaintext, step), c.segment_size, hex(c.nonce_prefix_hex)));
        assert.deepEqual(made, envelope, `input in pieces of ${step}`);
      }
    });

    it(`${c.name}: opens with the wrapped key unwrapped by keyshard, in any chunking`, async () => {
      for (const step of [1, 17, 80, 81, 4096, envelope.length]) {
        const { client, calls } = standIn();
        const out = await decryptEnvelope(client, pieces(envelope, step), { context: c.context });
        assert.deepEqual(out, plaintext, `envelope in pieces of ${step}`);
        assert.equal(calls.decrypt, 1);
      }
    });
  }

  describe('refusals: structure', () => {
    for (const r of v.refusals.structural) {
      it(r.name, async () => {
        const { client, calls } = standIn();
        await assert.rejects(decryptEnvelope(client, hex(r.envelope_hex), { context: {} }), (e: Error & { code?: string }) => {
          assert.ok(e instanceof InvalidCiphertextError, 'an InvalidCiphertextError (reason INVALID_CIPHERTEXT)');
          assert.equal(e.code, 'INVALID_ARGUMENT');
          assert.match(e.message, new RegExp(r.message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
          return true;
        });
        assert.equal(calls.decrypt, r.before_unwrapping ? 0 : 1, r.before_unwrapping ? 'refused before asking keyshard' : 'refused after the header');
      });
    }
  });

  describe('refusals: authentication (tampering, truncation, reordering, another context)', () => {
    for (const r of v.refusals.authentication) {
      it(r.name, async () => {
        const envelope = hex(r.envelope_hex);
        // Locally, with the data key in hand: the context is bound by the segments' AAD too.
        const h = parseEnvelopeHeader(envelope)!;
        const opened: Buffer[] = [];
        await assert.rejects(
          (async () => {
            for await (const b of openEnvelope(dataKey, h, r.context, envelope.subarray(h.bytes.length))) opened.push(b);
          })(),
          (e: Error & { code?: string }) => {
            assert.ok(e instanceof InvalidCiphertextError, 'an InvalidCiphertextError (reason INVALID_CIPHERTEXT)');
            assert.equal(e.code, 'INVALID_ARGUMENT');
            assert.ok(e.message.includes(r.message), `${e.message} names ${r.message}`);
            return true;
          },
        );
        // Through the SDK's decryption, in small pieces: refused, and no plaintext is returned.
        const { client } = standIn();
        await assert.rejects(decryptEnvelope(client, pieces(envelope, 7), { context: r.context }), /could not be authenticated|empty last segment/);
        await assert.rejects(collect(decryptEnvelopeStream(client, envelope, { context: r.context })));
      });
    }
  });
});
