/**
 * Canonical, injective encoding of an encryption context (a string map) for use as AAD.
 * Entries are sorted by key's UTF-8 bytes; each string is length-prefixed (u32 BE), so no two
 * different maps encode the same way ({"a":"bc"} vs {"ab":"c"}).
 * Frozen vectors: context_encoding_hex in packages/crypto/vectors/ciphertext-v1.json.
 */
import { invalidArgument } from '@keyshard/errors';

export const MAX_CONTEXT_ENTRIES = 64;
export const MAX_CONTEXT_STRING_BYTES = 1024;

export type EncryptionContext = Record<string, string>;

export function validateContext(ctx: EncryptionContext): void {
  const keys = Object.keys(ctx);
  if (keys.length > MAX_CONTEXT_ENTRIES) throw invalidArgument(`encryption context has more than ${MAX_CONTEXT_ENTRIES} entries`);
  for (const k of keys) {
    if (k.length === 0) throw invalidArgument('encryption context keys must not be empty');
    if (Buffer.byteLength(k) > MAX_CONTEXT_STRING_BYTES || Buffer.byteLength(ctx[k]!) > MAX_CONTEXT_STRING_BYTES)
      throw invalidArgument(`encryption context entries are limited to ${MAX_CONTEXT_STRING_BYTES} bytes`);
  }
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n);
  return b;
}

const EMPTY_CONTEXT = Buffer.alloc(4); // count 0

export function encodeContext(ctx: EncryptionContext): Buffer {
  if (Object.keys(ctx).length === 0) return EMPTY_CONTEXT;
  const entries = Object.entries(ctx).map(([k, v]) => [Buffer.from(k, 'utf8'), Buffer.from(v, 'utf8')] as const);
  entries.sort((a, b) => Buffer.compare(a[0], b[0]));
  const parts: Buffer[] = [u32(entries.length)];
  for (const [k, v] of entries) parts.push(u32(k.length), k, u32(v.length), v);
  return Buffer.concat(parts);
}
