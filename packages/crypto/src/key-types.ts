/**
 * Key types and what each does, fixed at creation (AWS KMS "key spec" + "key usage"):
 *
 *   aes256-gcm          encrypt  AES-256-GCM, NIST SP 800-38D, 96-bit random nonces
 *   chacha20-poly1305   encrypt  RFC 8439 AEAD, 96-bit random nonces
 *   hmac-sha256         mac      RFC 2104 / FIPS 198-1, 32-byte key, 32-byte tag
 *   ed25519             sign     RFC 8032 (pure Ed25519, 64-byte signatures; messages only)
 *   ecdsa-p256          sign     FIPS 186-5 ECDSA over P-256 with SHA-256, DER signatures
 *   ecdsa-secp256k1     sign     SEC 2 secp256k1 ECDSA with SHA-256, DER, low-S (@noble/curves)
 *
 * Material is what gets wrapped into etcd: raw key bytes for symmetric keys, PKCS#8 DER for
 * the node:crypto asymmetric keys, the 32-byte scalar for secp256k1. Hot paths use node:crypto;
 * noble is used only where node lacks the curve or a pre-hashed-digest ECDSA.
 */
import type { AeadCipher } from './aead.ts';
import { pooledRandomBytes } from './random.ts';
import {
  createHmac, createPrivateKey, createPublicKey, generateKeyPairSync,
  sign as nodeSign, timingSafeEqual, verify as nodeVerify, type KeyObject,
} from 'node:crypto';
import { p256 } from '@noble/curves/nist.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { clip, failedPrecondition, invalidArgument } from '@keyshard/errors';

export const KEY_TYPES = ['aes256-gcm', 'chacha20-poly1305', 'hmac-sha256', 'ed25519', 'ecdsa-p256', 'ecdsa-secp256k1'] as const;
export type KeyType = (typeof KEY_TYPES)[number];
export type KeyUsage = 'encrypt' | 'mac' | 'sign';

export const USAGE: Record<KeyType, KeyUsage> = {
  'aes256-gcm': 'encrypt',
  'chacha20-poly1305': 'encrypt',
  'hmac-sha256': 'mac',
  ed25519: 'sign',
  'ecdsa-p256': 'sign',
  'ecdsa-secp256k1': 'sign',
};

export function parseKeyType(t: string | undefined): KeyType {
  const type = (t || 'aes256-gcm') as KeyType;
  if (!KEY_TYPES.includes(type)) throw invalidArgument(`unsupported key type ${clip(String(t))}; supported: ${KEY_TYPES.join(', ')}`);
  return type;
}

/** A key used for what its type does not do: FAILED_PRECONDITION, reason WRONG_KEY_USAGE. */
const wrongUsage = (message: string) => failedPrecondition(message, { reason: 'WRONG_KEY_USAGE' });

export function requireUsage(type: KeyType, usage: KeyUsage, keyName: string): void {
  if (USAGE[type] !== usage) throw wrongUsage(`key ${keyName} is a ${type} key (usage ${USAGE[type]}), not usable to ${usage}`);
}

/** Fresh key material from the CSPRNG for a key version of this type. */
export function generateMaterial(type: KeyType): Buffer {
  switch (type) {
    case 'aes256-gcm':
    case 'chacha20-poly1305':
    case 'hmac-sha256':
      return pooledRandomBytes(32);
    case 'ed25519':
      return generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'der' });
    case 'ecdsa-p256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'der' });
    case 'ecdsa-secp256k1':
      return Buffer.from(secp256k1.utils.randomSecretKey());
  }
}

/** The AEAD a symmetric encryption key type uses (same framing for both: aead.ts). */
export function aeadOf(type: KeyType): AeadCipher {
  if (type === 'aes256-gcm') return 'aes-256-gcm';
  if (type === 'chacha20-poly1305') return 'chacha20-poly1305';
  throw wrongUsage(`${type} keys do not encrypt`);
}

export function hmacSha256(key: Buffer, message: Buffer): Buffer {
  return createHmac('sha256', key).update(message).digest();
}

export function verifyHmacSha256(key: Buffer, message: Buffer, mac: Buffer): boolean {
  const expected = hmacSha256(key, message);
  return mac.length === expected.length && timingSafeEqual(mac, expected);
}

/**
 * Parsed key objects, per material buffer: parsing PKCS#8 DER costs more than an Ed25519
 * signature. Keyed weakly by the cached material Buffer (services/coordinator keyring), so an
 * entry goes when the keyring drops that buffer (seal, destroy); the key bytes inside a
 * KeyObject live in OpenSSL memory that node frees (not zeroizes) when it is collected.
 */
const privateKeys = new WeakMap<Buffer, KeyObject>();
const publicKeys = new WeakMap<Buffer, KeyObject>();

function nodePrivateKey(material: Buffer): KeyObject {
  let k = privateKeys.get(material);
  if (!k) {
    k = createPrivateKey({ key: material, format: 'der', type: 'pkcs8' });
    privateKeys.set(material, k);
  }
  return k;
}

export interface SignInput {
  message?: Buffer;
  digest?: Buffer; // SHA-256 digest, for ECDSA keys
}

function checkSignInput(type: KeyType, input: SignInput): void {
  const hasMsg = input.message !== undefined && input.message.length > 0;
  const hasDigest = input.digest !== undefined && input.digest.length > 0;
  if (hasMsg === hasDigest) throw invalidArgument('give exactly one of message or digest');
  if (hasDigest && type === 'ed25519') throw invalidArgument('ed25519 signs messages, not digests (RFC 8032 pure Ed25519)');
  if (hasDigest && input.digest!.length !== 32) throw invalidArgument(`digest must be a 32-byte SHA-256 digest, got ${input.digest!.length} bytes`);
}

export function signWith(type: KeyType, material: Buffer, input: SignInput): Buffer {
  checkSignInput(type, input);
  switch (type) {
    case 'ed25519':
      return nodeSign(null, input.message!, nodePrivateKey(material));
    case 'ecdsa-p256': {
      if (input.message?.length) return nodeSign('sha256', input.message, nodePrivateKey(material));
      const scalar = nodePrivateKey(material).export({ format: 'jwk' }).d!;
      return Buffer.from(p256.sign(input.digest!, Buffer.from(scalar, 'base64url'), { prehash: false, format: 'der' }));
    }
    case 'ecdsa-secp256k1':
      return Buffer.from(
        secp256k1.sign(input.message?.length ? input.message : input.digest!, material, { prehash: !input.digest?.length, format: 'der' }),
      );
    default:
      throw wrongUsage(`${type} keys do not sign`);
  }
}

export function verifyWith(type: KeyType, material: Buffer, input: SignInput, signature: Buffer): boolean {
  checkSignInput(type, input);
  try {
    switch (type) {
      case 'ed25519':
        return nodeVerify(null, input.message!, publicKeyObject(type, material), signature);
      case 'ecdsa-p256':
        if (input.message?.length) return nodeVerify('sha256', input.message, publicKeyObject(type, material), signature);
        return p256.verify(signature, input.digest!, publicKeyBytes(type, material), { prehash: false, format: 'der', lowS: false });
      case 'ecdsa-secp256k1':
        return secp256k1.verify(signature, input.message?.length ? input.message : input.digest!, publicKeyBytes(type, material), {
          prehash: !input.digest?.length,
          format: 'der',
        });
      default:
        throw wrongUsage(`${type} keys do not verify signatures`);
    }
  } catch (e) {
    if (e instanceof Error && 'code' in e && (e as { code: string }).code === 'FAILED_PRECONDITION') throw e;
    return false; // malformed signature encodings verify as false, not as errors
  }
}

function publicKeyBytes(type: KeyType, material: Buffer): Uint8Array {
  if (type === 'ecdsa-secp256k1') return secp256k1.getPublicKey(material, false);
  const jwk = publicKeyObject(type, material).export({ format: 'jwk' });
  return Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
}

function publicKeyObject(type: KeyType, material: Buffer): KeyObject {
  let k = publicKeys.get(material);
  if (!k) {
    k = derivePublicKeyObject(type, material);
    publicKeys.set(material, k);
  }
  return k;
}

function derivePublicKeyObject(type: KeyType, material: Buffer): KeyObject {
  if (type === 'ecdsa-secp256k1') {
    const pub = secp256k1.getPublicKey(material, false);
    return createPublicKey({
      key: { kty: 'EC', crv: 'secp256k1', x: Buffer.from(pub.subarray(1, 33)).toString('base64url'), y: Buffer.from(pub.subarray(33)).toString('base64url') },
      format: 'jwk',
    });
  }
  return createPublicKey(nodePrivateKey(material));
}

/** The public key of a signing key version, as SPKI PEM and as a JWK (RFC 7517 / 8037). */
export function publicKeyOf(type: KeyType, material: Buffer): { pem: string; jwk: Record<string, string> } {
  if (USAGE[type] !== 'sign') throw wrongUsage(`${type} keys have no public key`);
  const key = publicKeyObject(type, material);
  return { pem: key.export({ type: 'spki', format: 'pem' }).toString(), jwk: key.export({ format: 'jwk' }) as Record<string, string> };
}
