/**
 * Small random values (nonces, ids, symmetric keys) from the CSPRNG in 4 KiB refills rather than
 * one `randomBytes` call each: each call costs several microseconds whatever its size, which
 * showed in CreateKey's profile. Node's randomUUID pools the same way. Every value is still fresh
 * CSPRNG output, handed out once; the pool's copy is zeroed as it is handed out, so the caller's
 * buffer is the only one that holds it (and the caller zeroes it when it is key material).
 */
import { randomFillSync } from 'node:crypto';

const POOL_BYTES = 4096;
/** Larger requests bypass the pool (a refill per value would gain nothing). */
const MAX_POOLED = 256;

const pool = Buffer.alloc(POOL_BYTES);
let offset = POOL_BYTES;

export function pooledRandomBytes(n: number): Buffer {
  if (n > MAX_POOLED) return randomFillSync(Buffer.alloc(n));
  if (offset + n > POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  // Buffer.alloc: a buffer of its own, never a slice of node's shared allocation pool.
  const out = Buffer.alloc(n);
  pool.copy(out, 0, offset, offset + n);
  pool.fill(0, offset, offset + n);
  offset += n;
  return out;
}

/** Zeroes what the pool holds (bytes that would become later keys); called when the service seals. */
export function clearRandomPool(): void {
  pool.fill(0);
  offset = POOL_BYTES;
}
