/**
 * AES-256-GCM (NIST SP 800-38D) with random 96-bit nonces (§8.2.2). A key must not be used
 * for more than 2^32 random-nonce encryptions (§8.3); callers count uses per key version.
 * Output layout: nonce (12) || ciphertext || tag (16).
 */
import { createCipheriv, createDecipheriv, randomFillSync } from 'node:crypto';
import { KeyshardError } from '@keyshard/errors';

export const KEY_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;

// Nonces come from the CSPRNG in 4 KiB refills rather than one syscall-backed call each
// (the same pooling node's randomUUID does); every nonce is still fresh CSPRNG output, used once.
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

export function randomNonce(): Buffer {
  if (poolOffset + NONCE_BYTES > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const nonce = Buffer.from(pool.subarray(poolOffset, poolOffset + NONCE_BYTES));
  pool.fill(0, poolOffset, poolOffset + NONCE_BYTES);
  poolOffset += NONCE_BYTES;
  return nonce;
}

export function sealAesGcm(key: Buffer, plaintext: Buffer, aad: Buffer, nonce: Buffer = randomNonce()): Buffer {
  if (key.length !== KEY_BYTES) throw new KeyshardError('INTERNAL', 'AES-256-GCM needs a 32-byte key');
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const head = cipher.update(plaintext);
  const tail = cipher.final();
  return Buffer.concat([nonce, head, tail, cipher.getAuthTag()]);
}

/** Throws INVALID_ARGUMENT on any authentication failure: wrong key, AAD, nonce or a modified byte. */
export function openAesGcm(key: Buffer, sealed: Buffer, aad: Buffer, what = 'ciphertext'): Buffer {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new KeyshardError('INVALID_ARGUMENT', `${what} is truncated`);
  const nonce = sealed.subarray(0, NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const body = sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
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
