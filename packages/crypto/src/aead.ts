/**
 * AEAD with random 96-bit nonces and 128-bit tags, output nonce (12) || ciphertext || tag (16):
 *  - AES-256-GCM, NIST SP 800-38D (§8.2.2 random IVs). §8.3 limits a key to 2^32 random-nonce
 *    encryptions: key versions must be rotated well before (counting is the keyring's job);
 *  - ChaCha20-Poly1305, RFC 8439 §2.8.
 */
import { createCipheriv, createDecipheriv, type CipherGCM, type DecipherGCM } from 'node:crypto';
import { KeyshardError } from '@keyshard/errors';
import { pooledRandomBytes } from './random.ts';

export const KEY_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;

export function randomNonce(): Buffer {
  return pooledRandomBytes(NONCE_BYTES);
}

export type AeadCipher = 'aes-256-gcm' | 'chacha20-poly1305';

export function sealAesGcm(key: Buffer, plaintext: Buffer, aad: Buffer, nonce: Buffer = randomNonce()): Buffer {
  return sealAead('aes-256-gcm', key, plaintext, aad, nonce);
}

export function openAesGcm(key: Buffer, sealed: Buffer, aad: Buffer, what = 'ciphertext'): Buffer {
  return openAead('aes-256-gcm', key, sealed, aad, what);
}

/** `prefix` (e.g. a ciphertext header) is prepended in the same copy as the output. */
export function sealAead(alg: AeadCipher, key: Buffer, plaintext: Buffer, aad: Buffer, nonce: Buffer = randomNonce(), prefix?: Buffer): Buffer {
  if (key.length !== KEY_BYTES) throw new KeyshardError('INTERNAL', `${alg} needs a 32-byte key`);
  // Both AEADs share the GCM-style API (setAAD / getAuthTag) in node:crypto.
  const cipher = createCipheriv(alg, key, nonce, { authTagLength: TAG_BYTES } as never) as unknown as CipherGCM;
  cipher.setAAD(aad);
  const head = cipher.update(plaintext);
  const tail = cipher.final();
  const tag = cipher.getAuthTag();
  return prefix ? Buffer.concat([prefix, nonce, head, tail, tag]) : Buffer.concat([nonce, head, tail, tag]);
}

/** Throws INVALID_ARGUMENT on any authentication failure: wrong key, AAD, nonce or a modified byte. */
export function openAead(alg: AeadCipher, key: Buffer, sealed: Buffer, aad: Buffer, what = 'ciphertext'): Buffer {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new KeyshardError('INVALID_ARGUMENT', `${what} is truncated`);
  const nonce = sealed.subarray(0, NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const body = sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv(alg, key, nonce, { authTagLength: TAG_BYTES } as never) as unknown as DecipherGCM;
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  const head = decipher.update(body);
  try {
    return Buffer.concat([head, decipher.final()]);
  } catch {
    head.fill(0);
    throw new KeyshardError(
      'INVALID_ARGUMENT',
      `${what} could not be authenticated: wrong key, wrong encryption context, or modified data`,
    );
  }
}

/** Overwrites buffers that held key material. */
export function zeroize(...buffers: (Buffer | Uint8Array | undefined)[]): void {
  for (const b of buffers) b?.fill(0);
}
