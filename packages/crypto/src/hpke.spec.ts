/** The HPKE release layer (RFC 9180 base mode, X25519 / HKDF-SHA256 / AES-256-GCM): round trip and every binding. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { newEphemeralKeyPair, openFromEphemeral, sealToEphemeral, x25519PublicKeyRaw } from './hpke.ts';

const binding = { ceremonyHash: 'a'.repeat(64), coordinatorId: 'coordinator-1', custodianId: 'custodian-1' };

describe('HPKE release layer', () => {
  it('opens what was sealed to the key, under the same binding', async () => {
    const k = newEphemeralKeyPair();
    const blob = randomBytes(384); // an RSA-3072 OAEP ciphertext
    const sealed = await sealToEphemeral(k.publicKeyPem, blob, binding);
    assert.equal(sealed.length, 32 + blob.length + 16);
    assert.deepEqual(await openFromEphemeral(k, sealed, binding), blob);
    assert.deepEqual(x25519PublicKeyRaw(k.publicKeyPem), k.publicKey);
  });

  it('refuses another key, ceremony, recipient, custodian or a flipped bit', async () => {
    const k = newEphemeralKeyPair();
    const sealed = await sealToEphemeral(k.publicKeyPem, Buffer.from('share blob'), binding);
    const refused = /does not open/;
    await assert.rejects(openFromEphemeral(newEphemeralKeyPair(), sealed, binding), refused);
    await assert.rejects(openFromEphemeral(k, sealed, { ...binding, ceremonyHash: 'b'.repeat(64) }), refused);
    await assert.rejects(openFromEphemeral(k, sealed, { ...binding, coordinatorId: 'coordinator-2' }), refused);
    await assert.rejects(openFromEphemeral(k, sealed, { ...binding, custodianId: 'custodian-2' }), refused);
    const flipped = Buffer.from(sealed);
    flipped[40]! ^= 1;
    await assert.rejects(openFromEphemeral(k, flipped, binding), refused);
  });

  it('a zeroized ephemeral private key opens nothing (forward secrecy once a ceremony ends)', async () => {
    const k = newEphemeralKeyPair();
    const sealed = await sealToEphemeral(k.publicKeyPem, Buffer.from('share blob'), binding);
    k.privateKey.fill(0);
    await assert.rejects(openFromEphemeral(k, sealed, binding));
  });

  it('refuses a recipient key that is not X25519', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    await assert.rejects(sealToEphemeral(rsa, Buffer.from('x'), binding), /must be an X25519 public key/);
    await assert.rejects(sealToEphemeral('nope', Buffer.from('x'), binding), /not a valid public key PEM/);
  });
});
