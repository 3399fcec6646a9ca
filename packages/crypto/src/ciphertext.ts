/**
 * The self-describing ciphertext clients hold (format v1):
 *
 *   magic "ks" (2) | format 0x01 (1) | key-id length L (1) | key id (L, ASCII) |
 *   key version (u32 BE) | nonce (12) | ciphertext | tag (16)
 *
 * AAD = header (magic .. key version) || canonical encryption context, so neither the key
 * reference nor the context can be changed without failing authentication (SP 800-38D).
 * Frozen vectors: packages/crypto/vectors/ciphertext-v1.json (layout in packages/crypto/VECTORS.md).
 */
import { KeyshardError, invalidArgument } from '@keyshard/errors';
import { NONCE_BYTES, TAG_BYTES, openAead, sealAead, type AeadCipher } from './aead.ts';
import { encodeContext, type EncryptionContext } from './context.ts';

const MAGIC = Buffer.from('ks', 'ascii');
export const FORMAT_V1 = 1;
const KEY_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

export interface CiphertextHeader {
  keyId: string;
  keyVersion: number;
}

// Headers are the same for every message of a key version: made once, reused (read-only).
const headerCache = new Map<string, Buffer>();

function cachedHeader(h: CiphertextHeader): Buffer {
  const id = `${h.keyId}/${h.keyVersion}`;
  let header = headerCache.get(id);
  if (!header) {
    if (headerCache.size >= 10_000) headerCache.clear();
    header = encodeHeader(h);
    headerCache.set(id, header);
  }
  return header;
}

export function encodeHeader(h: CiphertextHeader): Buffer {
  if (!KEY_ID_RE.test(h.keyId)) throw invalidArgument('key id is not valid');
  const id = Buffer.from(h.keyId, 'ascii');
  const head = Buffer.alloc(MAGIC.length + 2 + id.length + 4);
  MAGIC.copy(head, 0);
  head[2] = FORMAT_V1;
  head[3] = id.length;
  id.copy(head, 4);
  head.writeUInt32BE(h.keyVersion, 4 + id.length);
  return head;
}

export interface ParsedCiphertext extends CiphertextHeader {
  header: Buffer;
  sealed: Buffer; // nonce || ct || tag
}

/** What parseCiphertext throws: INVALID_ARGUMENT, reason INVALID_CIPHERTEXT. */
const malformed = (message: string) => invalidArgument(message, { reason: 'INVALID_CIPHERTEXT' });

export function parseCiphertext(blob: Buffer): ParsedCiphertext {
  if (blob.length < 4) throw malformed('ciphertext is truncated');
  if (blob[0] !== MAGIC[0] || blob[1] !== MAGIC[1]) throw malformed('not a keyshard ciphertext');
  if (blob[2] !== FORMAT_V1) throw malformed(`unsupported ciphertext format ${blob[2]}`);
  const idLen = blob[3]!;
  const headerLen = 4 + idLen + 4;
  if (idLen === 0 || blob.length < headerLen + NONCE_BYTES + TAG_BYTES) throw malformed('ciphertext is truncated');
  const keyId = blob.subarray(4, 4 + idLen).toString('ascii');
  if (!KEY_ID_RE.test(keyId)) throw malformed('ciphertext names an invalid key id');
  const keyVersion = blob.readUInt32BE(4 + idLen);
  if (keyVersion === 0) throw malformed('ciphertext names key version 0');
  return { keyId, keyVersion, header: blob.subarray(0, headerLen), sealed: blob.subarray(headerLen) };
}

export function dataAad(header: Buffer, context: EncryptionContext): Buffer {
  return Buffer.concat([header, encodeContext(context)]);
}

export function encryptWithVersion(
  material: Buffer,
  h: CiphertextHeader,
  plaintext: Buffer,
  context: EncryptionContext,
  alg: AeadCipher = 'aes-256-gcm',
): Buffer {
  const header = cachedHeader(h);
  return sealAead(alg, material, plaintext, dataAad(header, context), undefined, header);
}

/**
 * Throws INVALID_ARGUMENT, reason WRONG_CONTEXT, when the tag does not verify: with the key
 * named by the header, that means another encryption context than at encryption (or modified
 * data, which AEAD cannot tell apart). parseCiphertext has checked the framing before.
 */
export function decryptWithVersion(
  material: Buffer,
  parsed: ParsedCiphertext,
  context: EncryptionContext,
  alg: AeadCipher = 'aes-256-gcm',
): Buffer {
  try {
    return openAead(alg, material, parsed.sealed, dataAad(parsed.header, context));
  } catch (e) {
    if (e instanceof KeyshardError && e.code === 'INVALID_ARGUMENT') throw invalidArgument(e.message, { reason: 'WRONG_CONTEXT', metadata: { key_id: parsed.keyId, version: String(parsed.keyVersion) } });
    throw e;
  }
}
