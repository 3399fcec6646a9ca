/**
 * The share-release HPKE layer against the frozen decryption vector in
 * ../vectors/hpke-share-release.json, sealed by ../vectors/generate.py (RFC 9180 base mode
 * written out in Python over pyca/cryptography's X25519 and AES-GCM, first checked against RFC
 * 9180 Appendix A.1.1; no keyshard code, not @hpke/core). Sealing draws a fresh ephemeral key,
 * so the vector is one that must open to its plaintext under its binding, and only under it.
 * Format: ../VECTORS.md, "HPKE share release".
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openFromEphemeral, sealToEphemeral, x25519PublicKeyRaw, type ReleaseBinding } from './hpke.ts';
import { flipped, hex, loadVectors } from './test-vectors.ts';

const v = loadVectors<{
  binding: ReleaseBinding & { ceremony: string };
  recipient_private_key_hex: string; recipient_public_key_hex: string; recipient_public_key_pem: string;
  info_hex: string; aad_hex: string; plaintext_hex: string; sealed_hex: string;
}>('hpke-share-release.json');
const binding: ReleaseBinding = { ceremonyHash: v.binding.ceremonyHash, coordinatorId: v.binding.coordinatorId, custodianId: v.binding.custodianId };
const recipient = () => ({ privateKey: hex(v.recipient_private_key_hex), publicKey: hex(v.recipient_public_key_hex) });
const sealed = hex(v.sealed_hex);

describe('HPKE share release (frozen vector packages/crypto/vectors/hpke-share-release.json)', () => {
  it('the info and aad strings of the binding', () => {
    assert.equal(hex(v.info_hex).toString('utf8'), `keyshard/v1/share-release\0${binding.ceremonyHash}\0${binding.coordinatorId}`);
    assert.equal(hex(v.aad_hex).toString('utf8'), `keyshard/v1/share-release-custodian\0${binding.custodianId}`);
  });

  it('the recipient key PEM is the raw X25519 key; the frozen blob opens to the plaintext', async () => {
    assert.equal(x25519PublicKeyRaw(v.recipient_public_key_pem).toString('hex'), v.recipient_public_key_hex);
    assert.equal((await openFromEphemeral(recipient(), sealed, binding)).toString('hex'), v.plaintext_hex);
  });

  it('it opens under no other ceremony, recipient, custodian or key, nor modified', async () => {
    const refused = /does not open/;
    await assert.rejects(openFromEphemeral(recipient(), sealed, { ...binding, ceremonyHash: 'b'.repeat(64) }), refused);
    await assert.rejects(openFromEphemeral(recipient(), sealed, { ...binding, coordinatorId: 'coordinator-2' }), refused);
    await assert.rejects(openFromEphemeral(recipient(), sealed, { ...binding, custodianId: 'custodian-2' }), refused);
    await assert.rejects(openFromEphemeral({ ...recipient(), privateKey: Buffer.alloc(32, 9) }, sealed, binding), refused);
    await assert.rejects(openFromEphemeral(recipient(), flipped(sealed, 0), binding), refused, 'enc');
    await assert.rejects(openFromEphemeral(recipient(), flipped(sealed, -1), binding), refused, 'tag');
  });

  it('a fresh seal to the vector key has the same layout (enc 32 || ciphertext || tag 16) and opens', async () => {
    const fresh = await sealToEphemeral(v.recipient_public_key_pem, hex(v.plaintext_hex), binding);
    assert.equal(fresh.length, sealed.length);
    assert.notDeepEqual(fresh.subarray(0, 32), sealed.subarray(0, 32), 'a fresh ephemeral key');
    assert.equal((await openFromEphemeral(recipient(), fresh, binding)).toString('hex'), v.plaintext_hex);
  });
});
