/** Signatures and MACs checked by independent implementations (plain node:crypto, openssl). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, createHmac, createPublicKey, verify, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  KEY_TYPES, USAGE, aeadOf, generateMaterial, hmacSha256, publicKeyOf, signWith, verifyHmacSha256, verifyWith,
} from './key-types.ts';
import { openAead, sealAead } from './aead.ts';

const msg = Buffer.from('the quick brown fox');
const digest = createHash('sha256').update(msg).digest();

test('every signing type verifies with plain node:crypto, and rejects a changed message', () => {
  for (const type of ['ed25519', 'ecdsa-p256', 'ecdsa-secp256k1'] as const) {
    const m = generateMaterial(type);
    const { pem, jwk } = publicKeyOf(type, m);
    const sig = signWith(type, m, { message: msg });
    const alg = type === 'ed25519' ? null : 'sha256';
    assert.ok(verify(alg, msg, createPublicKey(pem), sig), `${type} PEM`);
    assert.ok(verify(alg, msg, createPublicKey({ key: jwk as never, format: 'jwk' }), sig), `${type} JWK`);
    assert.ok(!verify(alg, Buffer.from('other'), createPublicKey(pem), sig));
    assert.ok(verifyWith(type, m, { message: msg }, sig));
    assert.ok(!verifyWith(type, m, { message: msg }, Buffer.from('not a signature')));
  }
});

test('ECDSA over a pre-hashed digest verifies with openssl pkeyutl', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ks-kt-'));
  try {
    for (const type of ['ecdsa-p256', 'ecdsa-secp256k1'] as const) {
      const m = generateMaterial(type);
      const sig = signWith(type, m, { digest });
      writeFileSync(path.join(dir, 'pub.pem'), publicKeyOf(type, m).pem);
      writeFileSync(path.join(dir, 'digest.bin'), digest);
      writeFileSync(path.join(dir, 'sig.der'), sig);
      const out = execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', 'pub.pem', '-in', 'digest.bin', '-sigfile', 'sig.der'], { cwd: dir }).toString();
      assert.match(out, /Signature Verified Successfully/, type);
      assert.ok(verifyWith(type, m, { digest }, sig));
      assert.ok(verifyWith(type, m, { message: msg }, signWith(type, m, { message: msg })));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sign input is validated', () => {
  const m = generateMaterial('ed25519');
  assert.throws(() => signWith('ed25519', m, { digest }), /ed25519 signs messages/);
  assert.throws(() => signWith('ecdsa-p256', generateMaterial('ecdsa-p256'), { digest: Buffer.alloc(31) }), /32-byte/);
  assert.throws(() => signWith('ecdsa-p256', generateMaterial('ecdsa-p256'), {}), /exactly one/);
  assert.throws(() => signWith('aes256-gcm', randomBytes(32), { message: msg }), { code: 'FAILED_PRECONDITION' });
});

test('HMAC-SHA256 equals node:crypto and verifies in constant time', () => {
  const k = generateMaterial('hmac-sha256');
  assert.deepEqual(hmacSha256(k, msg), createHmac('sha256', k).update(msg).digest());
  assert.ok(verifyHmacSha256(k, msg, hmacSha256(k, msg)));
  assert.ok(!verifyHmacSha256(k, msg, Buffer.alloc(32)));
  assert.ok(!verifyHmacSha256(k, msg, Buffer.alloc(3)));
});

test('ChaCha20-Poly1305 round trip; AAD and bytes are authenticated', () => {
  const k = generateMaterial('chacha20-poly1305');
  const alg = aeadOf('chacha20-poly1305');
  const sealed = sealAead(alg, k, msg, Buffer.from('aad'));
  assert.deepEqual(openAead(alg, k, sealed, Buffer.from('aad')), msg);
  assert.throws(() => openAead(alg, k, sealed, Buffer.from('other')), { code: 'INVALID_ARGUMENT' });
  const bad = Buffer.from(sealed);
  bad[14]! ^= 1;
  assert.throws(() => openAead(alg, k, bad, Buffer.from('aad')), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => aeadOf('ed25519'), { code: 'FAILED_PRECONDITION' });
});

// RFC 8439 §2.8.2 test vector.
test('ChaCha20-Poly1305 matches the RFC 8439 vector', () => {
  const key = Buffer.from('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f', 'hex');
  const nonce = Buffer.from('070000004041424344454647', 'hex');
  const aad = Buffer.from('50515253c0c1c2c3c4c5c6c7', 'hex');
  const pt = Buffer.from("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
  const sealed = sealAead('chacha20-poly1305', key, pt, aad, nonce);
  assert.equal(sealed.subarray(sealed.length - 16).toString('hex'), '1ae10b594f09e26a7e902ecbd0600691');
  assert.equal(sealed.subarray(12, 12 + 16).toString('hex'), 'd31a8d34648e60db7b86afbc53ef7ec2');
});

test('every type has a usage', () => {
  for (const t of KEY_TYPES) assert.ok(USAGE[t]);
});
