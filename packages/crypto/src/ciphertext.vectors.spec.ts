/**
 * Ciphertext format v1 against the frozen vectors in ../vectors/ciphertext-v1.json, computed by
 * ../vectors/generate.py (Python: the header and context encoding written out, AES-256-GCM and
 * ChaCha20-Poly1305 from pyca/cryptography, no keyshard code). keyshard's nonces are random, so
 * each case names its nonce: sealing with it must give the frozen bytes, and the frozen bytes
 * must open. The Python SDK (clients/python, keyshard.ciphertext) opens the same vectors.
 * Format: ../VECTORS.md, "Ciphertext v1".
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sealAead, type AeadCipher } from './aead.ts';
import { dataAad, decryptWithVersion, encodeHeader, encryptWithVersion, parseCiphertext } from './ciphertext.ts';
import { encodeContext, type EncryptionContext } from './context.ts';
import { hex, loadVectors } from './test-vectors.ts';

interface Case {
  name: string; algorithm: AeadCipher; key_hex: string; key_id: string; key_version: number; context: EncryptionContext;
  plaintext_hex: string; nonce_hex: string; header_hex: string; context_encoding_hex: string; aad_hex: string; ciphertext_hex: string; ciphertext_b64: string;
}
const vectors = loadVectors<{
  cases: Case[];
  invalid: { name: string; ciphertext_hex: string; error: string }[];
  authentication_failures: { name: string; case: string; context: EncryptionContext; ciphertext_hex?: string }[];
}>('ciphertext-v1.json');

describe('ciphertext v1 (frozen vectors packages/crypto/vectors/ciphertext-v1.json)', () => {
  for (const v of vectors.cases)
    it(`${v.name}: header, context encoding, AAD and sealed bytes; parses and opens`, () => {
      const key = hex(v.key_hex);
      const header = encodeHeader({ keyId: v.key_id, keyVersion: v.key_version });
      assert.equal(header.toString('hex'), v.header_hex);
      assert.equal(encodeContext(v.context).toString('hex'), v.context_encoding_hex);
      assert.equal(dataAad(header, v.context).toString('hex'), v.aad_hex);
      // encryptWithVersion is sealAead with a random nonce; with the vector's nonce it gives the vector.
      assert.equal(sealAead(v.algorithm, key, hex(v.plaintext_hex), dataAad(header, v.context), hex(v.nonce_hex), header).toString('hex'), v.ciphertext_hex);
      assert.equal(Buffer.from(v.ciphertext_b64, 'base64').toString('hex'), v.ciphertext_hex);

      const parsed = parseCiphertext(hex(v.ciphertext_hex));
      assert.equal(parsed.keyId, v.key_id);
      assert.equal(parsed.keyVersion, v.key_version);
      assert.equal(parsed.header.toString('hex'), v.header_hex);
      assert.equal(parsed.sealed.subarray(0, 12).toString('hex'), v.nonce_hex);
      assert.equal(decryptWithVersion(key, parsed, v.context, v.algorithm).toString('hex'), v.plaintext_hex);
      const fresh = encryptWithVersion(key, { keyId: v.key_id, keyVersion: v.key_version }, hex(v.plaintext_hex), v.context, v.algorithm);
      const freshNonce = fresh.subarray(header.length, header.length + 12);
      assert.deepEqual(fresh, sealAead(v.algorithm, key, hex(v.plaintext_hex), hex(v.aad_hex), freshNonce, header), 'encryptWithVersion = the same layout with a fresh nonce');
    });

  for (const v of vectors.invalid)
    it(`refuses: ${v.name}`, () => {
      assert.throws(() => parseCiphertext(hex(v.ciphertext_hex)), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && e.message.includes(v.error));
    });

  for (const v of vectors.authentication_failures)
    it(`does not authenticate: ${v.name}`, () => {
      const c = vectors.cases.find((x) => x.name === v.case)!;
      const parsed = parseCiphertext(hex(v.ciphertext_hex ?? c.ciphertext_hex));
      assert.throws(() => decryptWithVersion(hex(c.key_hex), parsed, v.context, c.algorithm), { code: 'INVALID_ARGUMENT' });
    });
});
