/**
 * The forward-secret layer of a share release (RFC 9180 HPKE, base mode): the custodian's HSM
 * wraps the share RSA-OAEP to the recipient coordinator's long-term transport key (the only
 * kind of key the token lets it wrap to), and the custodian then seals that blob to the
 * recipient replica's per-ceremony X25519 key.
 *
 * Suite: DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM (RFC 9180 §7: KEM 0x0020,
 * KDF 0x0001, AEAD 0x0002), from @hpke/core + @hpke/dhkem-x25519.
 *
 * Invariants:
 * - The sealed form is `enc (32 bytes) || ciphertext` (RFC 9180 §5.1.1 single-shot Seal).
 * - `info` binds the ceremony hash and the recipient coordinator id; `aad` binds the custodian
 *   that released it. A blob opened for another ceremony, recipient or custodian fails.
 * - Ephemeral private keys are kept as raw 32-byte Buffers so the holder can zeroize them when
 *   the ceremony ends; after that no sealed blob of that ceremony can be opened again, even with
 *   the transport private key and the token.
 * - Errors name the failed check, never key bytes.
 * Frozen decryption vector: packages/crypto/vectors/hpke-share-release.json (packages/crypto/VECTORS.md).
 */
import { generateKeyPairSync, createPublicKey, type KeyObject } from 'node:crypto';
import { Aes256Gcm, CipherSuite, HkdfSha256 } from '@hpke/core';
import { DhkemX25519HkdfSha256 } from '@hpke/dhkem-x25519';
import { failedPrecondition, invalidArgument } from '@keyshard/errors';

const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
const ENC_BYTES = 32; // Nenc of DHKEM(X25519, HKDF-SHA256)
/** SPKI prefix of an X25519 public key (RFC 8410 §4): SEQUENCE { AlgId(1.3.101.110), BIT STRING(32 bytes) }. */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/** A per-ceremony X25519 key pair of a recipient replica. Zeroize `privateKey` when the ceremony ends. */
export interface EphemeralKeyPair {
  publicKeyPem: string;
  privateKey: Buffer;
  publicKey: Buffer;
}

export function newEphemeralKeyPair(): EphemeralKeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privateKey: Buffer.from(jwk.d!, 'base64url'),
    publicKey: Buffer.from(jwk.x!, 'base64url'),
  };
}

/** The raw 32 bytes of an X25519 SPKI PEM; INVALID_ARGUMENT naming `what` otherwise. */
export function x25519PublicKeyRaw(pem: string, what = 'ephemeral public key'): Buffer {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw invalidArgument(`${what} is not a valid public key PEM`);
  }
  if (key.asymmetricKeyType !== 'x25519') throw invalidArgument(`${what} must be an X25519 public key`);
  const der = key.export({ type: 'spki', format: 'der' });
  if (der.length !== X25519_SPKI_PREFIX.length + 32 || !der.subarray(0, X25519_SPKI_PREFIX.length).equals(X25519_SPKI_PREFIX))
    throw invalidArgument(`${what} is not an X25519 SPKI key`);
  return Buffer.from(der.subarray(X25519_SPKI_PREFIX.length));
}

export interface ReleaseBinding {
  ceremonyHash: string;
  coordinatorId: string;
  custodianId: string;
}

const infoOf = (b: ReleaseBinding) => Buffer.from(`keyshard/v1/share-release\0${b.ceremonyHash}\0${b.coordinatorId}`, 'utf8');
const aadOf = (b: ReleaseBinding) => Buffer.from(`keyshard/v1/share-release-custodian\0${b.custodianId}`, 'utf8');

/** HPKE base-mode single-shot Seal (RFC 9180 §6.1) of `plaintext` to an X25519 public key PEM. */
export async function sealToEphemeral(recipientPublicKeyPem: string, plaintext: Buffer, b: ReleaseBinding): Promise<Buffer> {
  const raw = x25519PublicKeyRaw(recipientPublicKeyPem);
  const recipientPublicKey = await suite.kem.deserializePublicKey(raw);
  const { enc, ct } = await suite.seal({ recipientPublicKey, info: infoOf(b) }, plaintext, aadOf(b));
  return Buffer.concat([Buffer.from(enc), Buffer.from(ct)]);
}

/** HPKE base-mode single-shot Open (RFC 9180 §6.1); FAILED_PRECONDITION if it does not open under this key and binding. */
export async function openFromEphemeral(key: { privateKey: Buffer; publicKey: Buffer }, sealed: Buffer, b: ReleaseBinding): Promise<Buffer> {
  if (!Buffer.isBuffer(sealed) || sealed.length <= ENC_BYTES + 16) throw invalidArgument('sealed release is too short');
  const priv = Buffer.from(key.privateKey); // the library may keep a reference: give it a copy we zero after
  try {
    const recipientKey = { privateKey: await suite.kem.deserializePrivateKey(priv), publicKey: await suite.kem.deserializePublicKey(key.publicKey) };
    const pt = await suite.open({ recipientKey, enc: sealed.subarray(0, ENC_BYTES), info: infoOf(b) }, sealed.subarray(ENC_BYTES), aadOf(b));
    return Buffer.from(pt);
  } catch {
    throw failedPrecondition('sealed release does not open under this replica\'s ephemeral key for this ceremony');
  } finally {
    priv.fill(0);
  }
}
