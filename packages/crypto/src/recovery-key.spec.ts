import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { KeyshardError } from '@keyshard/errors';
import { MAX_TRANSPORT_KEY_BITS, MIN_RECOVERY_KEY_BITS, MIN_TRANSPORT_KEY_BITS, parseRecoveryPublicKey, parseTransportPublicKey, recoveryKeyFingerprint } from './rsa-oaep.ts';

const rsa3072 = generateKeyPairSync('rsa', { modulusLength: 3072 });
const pub3072 = rsa3072.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const b64Body = (pem: string) => pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');

function refused(input: unknown, why: RegExp, secret?: string) {
  assert.throws(() => parseRecoveryPublicKey(input), (e) => {
    assert.ok(e instanceof KeyshardError, String(e));
    assert.equal(e.reason, 'INVALID_ARGUMENT');
    assert.match(e.message, why);
    if (secret) {
      assert.ok(!e.message.includes('PRIVATE KEY'));
      for (let i = 0; i + 24 <= secret.length; i += 24) assert.ok(!e.message.includes(secret.slice(i, i + 24)), 'the refusal quotes the key');
    }
    return true;
  });
}

describe('parseRecoveryPublicKey (issue 17 item 5)', () => {
  it('accepts an RSA-3072 public key, re-encoded as SPKI PEM, with its fingerprint', () => {
    assert.equal(MIN_RECOVERY_KEY_BITS, 3072);
    const r = parseRecoveryPublicKey(pub3072);
    assert.equal(r.bits, 3072);
    assert.equal(r.publicKeyPem, pub3072);
    assert.equal(r.fingerprint, createHash('sha256').update(rsa3072.publicKey.export({ type: 'spki', format: 'der' })).digest('hex'));
    assert.equal(r.fingerprint, recoveryKeyFingerprint(pub3072));
    // PKCS#1 public PEM is the same key, normalised to SPKI.
    const pkcs1 = rsa3072.publicKey.export({ type: 'pkcs1', format: 'pem' }).toString();
    assert.deepEqual(parseRecoveryPublicKey(pkcs1), r);
  });

  it('refuses the RSA private key (PKCS#8 and PKCS#1), without quoting it', () => {
    const pkcs8 = rsa3072.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const pkcs1 = rsa3072.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
    refused(pkcs8, /private key/, b64Body(pkcs8));
    refused(pkcs1, /private key/, b64Body(pkcs1));
    // Even with the armour changed, what parses as a private key is refused.
    const relabelled = pkcs8.replaceAll('PRIVATE KEY', 'PUBLIC KEY');
    assert.throws(() => parseRecoveryPublicKey(relabelled), (e) => e instanceof KeyshardError && e.reason === 'INVALID_ARGUMENT' && !e.message.includes(b64Body(pkcs8).slice(0, 24)));
    assert.throws(() => recoveryKeyFingerprint(pkcs8), (e) => e instanceof KeyshardError && e.reason === 'INVALID_ARGUMENT');
  });

  it('refuses an EC public key', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    refused(ec, /must be an RSA public key/);
    const ed = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
    refused(ed, /must be an RSA public key/);
  });

  it('refuses an RSA-2048 public key', () => {
    const pub2048 = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    refused(pub2048, /at least 3072 bits \(got 2048\)/);
    // still nameable (keys enrolled before the floor can be revoked)
    assert.match(recoveryKeyFingerprint(pub2048), /^[0-9a-f]{64}$/);
  });

  it('refuses garbage, empty, non-strings and oversized input', () => {
    refused('not a key', /not a public key PEM/);
    refused('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n', /not a public key PEM/);
    refused('', /required/);
    refused(undefined, /required/);
    refused(42, /required/);
    refused(`${pub3072}${'x'.repeat(20_000)}`, /too long/);
  });
});

describe('parseTransportPublicKey (issue 17 item 6: transport-key enrollment takes a public key only)', () => {
  const rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const transportRefused = (input: unknown, why: RegExp, secret?: string) =>
    assert.throws(() => parseTransportPublicKey(input), (e) => {
      assert.ok(e instanceof KeyshardError, String(e));
      assert.equal(e.reason, 'INVALID_ARGUMENT');
      assert.match(e.message, why);
      if (secret) for (let i = 0; i + 24 <= secret.length; i += 24) assert.ok(!e.message.includes(secret.slice(i, i + 24)), 'the refusal quotes the key');
      return true;
    });

  it('accepts RSA public keys of 2048..8192 bits (SPKI or PKCS#1), re-encoded as SPKI', () => {
    assert.deepEqual([MIN_TRANSPORT_KEY_BITS, MAX_TRANSPORT_KEY_BITS], [2048, 8192]);
    const spki = rsa2048.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    assert.equal(parseTransportPublicKey(spki).publicKeyPem, spki);
    assert.equal(parseTransportPublicKey(rsa2048.publicKey.export({ type: 'pkcs1', format: 'pem' }).toString()).publicKeyPem, spki);
    assert.equal(parseTransportPublicKey(pub3072).bits, 3072);
  });

  it('refuses the private key (PKCS#8, PKCS#1, relabelled), EC, small keys and garbage, quoting none of it', () => {
    for (const type of ['pkcs8', 'pkcs1'] as const) {
      const pem = rsa2048.privateKey.export({ type, format: 'pem' }).toString();
      transportRefused(pem, /the transport key is a private key/, b64Body(pem));
      transportRefused(pem.replaceAll('PRIVATE KEY', 'PUBLIC KEY'), /private key|not a public key/, b64Body(pem));
    }
    transportRefused(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString(), /must be an RSA public key/);
    transportRefused(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString(), /at least 2048 bits \(got 1024\)/);
    transportRefused('not a key', /not a public key PEM/);
    transportRefused('', /is required/);
  });
});
