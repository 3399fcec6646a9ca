/**
 * Envelope encryption for payloads too large (or too many) to send to keyshard: keyshard makes
 * a fresh 256-bit data key (GenerateDataKey, bound to the caller's encryption context), the data
 * is encrypted here with AES-256-GCM (NIST SP 800-38D, node:crypto), and the data key travels
 * wrapped — a keyshard ciphertext v1 that only keyshard can open, under the same context — in
 * the envelope's header. Decryption sends the wrapped key to keyshard's Decrypt with the context
 * the caller expects (a context is never read from the envelope) and opens the data locally.
 *
 * Segmented, for streams and files in bounded memory: the STREAM construction of Hoang,
 * Reyhanitabar, Rogaway and Vizár ("Online Authenticated-Encryption and its Nonce-Reuse
 * Misuse-Resistance", CRYPTO 2015) as Tink's AES-GCM-HKDF streaming AEAD lays it out: segment i
 * is sealed under the nonce  random 7-byte prefix || u32 i || last-segment flag, so a segment
 * cannot be moved, dropped, duplicated or the stream cut short (the segment before the cut was
 * sealed as not-last); every segment's AAD is SHA-256(header || context encoding), so segments
 * cannot move between envelopes and the context is bound locally as well as by keyshard.
 *
 *   "KSEN" | 0x01 version | 0x01 AES-256-GCM | u32 segment size S | nonce prefix (7)
 *   | u16 L | wrapped data key (L) | segments: AES-256-GCM(ciphertext || tag) of S bytes each,
 *   the last one of 1..S bytes (0 only when the whole plaintext is empty)
 *
 * The format, with its limits and the reader's refusals: ../VECTORS.md; frozen vectors
 * ../vectors/envelope.json from an independent generator (../vectors/generate.py).
 *
 * Streaming decryption hands out each segment's plaintext once that segment authenticates; a
 * stream cut short or modified further on fails later, at that point. Treat the output as
 * valid only once the stream ended without an error (decryptFile writes to a temporary file
 * and renames it into place only then).
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, type CipherGCM, type DecipherGCM } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { InternalError, InvalidArgumentError, InvalidCiphertextError, type KeyshardError } from './errors.ts';

export const ENVELOPE_MAGIC = Buffer.from('KSEN', 'latin1');
export const ENVELOPE_VERSION = 1;
/** Algorithm byte 1: AES-256-GCM, 32-byte data key, 96-bit nonces, 128-bit tags. */
export const ENVELOPE_AES_256_GCM = 1;
/** magic (4) + version (1) + algorithm (1) + segment size (4) + nonce prefix (7) + wrapped key length (2). */
export const ENVELOPE_FIXED_HEADER_BYTES = 19;
export const ENVELOPE_NONCE_PREFIX_BYTES = 7;
export const ENVELOPE_TAG_BYTES = 16;
/** Plaintext bytes per segment unless the caller chooses: 64 KiB (as age's STREAM). */
export const DEFAULT_SEGMENT_BYTES = 64 * 1024;
export const MIN_SEGMENT_BYTES = 64;
/** A reader buffers one segment: this bounds its memory whatever an envelope's header says. */
export const MAX_SEGMENT_BYTES = 16 * 1024 * 1024;
/** keyshard's ciphertext v1 of a 32-byte data key is about 90 bytes; anything past 1 KiB is refused. */
export const MAX_WRAPPED_KEY_BYTES = 1024;
const DATA_KEY_BYTES = 32;
const MAX_SEGMENT_INDEX = 0xffffffff; // the counter is a u32

/** An encryption context: what keyshard binds as AAD of the wrapped key (and this format as AAD of every segment). */
export type EnvelopeContext = Record<string, string>;

/** What the envelope functions need of a client: KeyshardClient has both. */
export interface EnvelopeKeyClient {
  generateDataKey(key: string, length: number, context: EnvelopeContext, o?: EnvelopeCallOptions): Promise<{ plaintext: Buffer; ciphertext: Buffer }>;
  decrypt(ciphertext: Buffer, context: EnvelopeContext, o?: EnvelopeCallOptions & { key?: string }): Promise<{ plaintext: Buffer }>;
}

/** Options of the keyshard call (GenerateDataKey or Decrypt), as the client's CallOptions. */
export interface EnvelopeCallOptions {
  timeoutMs?: number;
  deadline?: number | Date;
  requestId?: string;
}

export interface EnvelopeOptions {
  /** The encryption context: required to decrypt, exactly (use {} for none). */
  context: EnvelopeContext;
  /** Options of the one keyshard call the function makes. */
  call?: EnvelopeCallOptions;
  /**
   * Decrypting: the key (name, id or alias) the wrapped data key must belong to. keyshard refuses
   * another key's ciphertext (DecryptRequest.key), so an envelope someone else built cannot make
   * this caller unwrap a ciphertext of some other key it may decrypt. Recommended.
   */
  key?: string;
}

export interface EncryptEnvelopeOptions extends EnvelopeOptions {
  /** Plaintext bytes per segment, MIN_SEGMENT_BYTES..MAX_SEGMENT_BYTES (default 64 KiB). */
  segmentSize?: number;
}

/** Bytes, or a stream of them: a node Readable, an async generator, an array of Buffers. */
export type ByteSource = AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>;
/** What the functions take: bytes, a string (encrypted as UTF-8), or a stream of either. */
export type EnvelopeInput = Uint8Array | string | ByteSource;

/** The parsed header of an envelope. */
export interface EnvelopeHeader {
  version: number;
  algorithm: number;
  segmentSize: number;
  noncePrefix: Buffer;
  /** keyshard ciphertext v1 of the data key (opaque here; it names the key id and version). */
  wrappedKey: Buffer;
  /** The header's bytes as they appear in the envelope (authenticated by every segment). */
  bytes: Buffer;
}

/**
 * Refusals of malformed or unauthentic envelopes: InvalidCiphertextError (INVALID_ARGUMENT,
 * reason INVALID_CIPHERTEXT), as keyshard refuses a bad ciphertext. A wrong context is refused
 * by keyshard itself when it unwraps the data key (WrongContextError).
 */
function invalid(message: string): KeyshardError {
  return new InvalidCiphertextError({ code: status.INVALID_ARGUMENT, reason: 'INVALID_CIPHERTEXT', message: `not a valid keyshard envelope: ${message}` });
}

/** A bad argument of the caller's (InvalidArgumentError), refused before keyshard is asked. */
function badArgument(message: string): KeyshardError {
  return new InvalidArgumentError({ code: status.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT', message });
}

/** Something that cannot happen with a working keyshard (InternalError). */
function internal(message: string): KeyshardError {
  return new InternalError({ code: status.INTERNAL, reason: 'INTERNAL', message });
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * The encryption context's encoding (packages/crypto/VECTORS.md, "Encryption context encoding"):
 * u32 count, then per entry sorted by the key's UTF-8 bytes, u32 len || key || u32 len || value.
 */
export function encodeEnvelopeContext(context: EnvelopeContext): Buffer {
  if (context === null || typeof context !== 'object' || Array.isArray(context)) throw badArgument('context must be an object of strings');
  const entries = Object.entries(context).map(([k, v]) => {
    if (typeof v !== 'string') throw badArgument(`context value of ${JSON.stringify(k)} must be a string`);
    return [Buffer.from(k, 'utf8'), Buffer.from(v, 'utf8')] as const;
  });
  entries.sort((a, b) => Buffer.compare(a[0], b[0]));
  const parts: Buffer[] = [u32(entries.length)];
  for (const [k, v] of entries) parts.push(u32(k.length), k, u32(v.length), v);
  return Buffer.concat(parts);
}

function checkSegmentSize(s: number): number {
  if (!Number.isInteger(s) || s < MIN_SEGMENT_BYTES || s > MAX_SEGMENT_BYTES)
    throw badArgument(`segmentSize must be an integer from ${MIN_SEGMENT_BYTES} to ${MAX_SEGMENT_BYTES}`);
  return s;
}

/** The header's bytes. */
export function encodeEnvelopeHeader(segmentSize: number, noncePrefix: Buffer, wrappedKey: Buffer): Buffer {
  checkSegmentSize(segmentSize);
  if (noncePrefix.length !== ENVELOPE_NONCE_PREFIX_BYTES) throw internal('nonce prefix must be 7 bytes');
  if (wrappedKey.length < 1 || wrappedKey.length > MAX_WRAPPED_KEY_BYTES) throw internal(`wrapped data key of ${wrappedKey.length} bytes`);
  const fixed = Buffer.alloc(ENVELOPE_FIXED_HEADER_BYTES);
  ENVELOPE_MAGIC.copy(fixed, 0);
  fixed[4] = ENVELOPE_VERSION;
  fixed[5] = ENVELOPE_AES_256_GCM;
  fixed.writeUInt32BE(segmentSize, 6);
  noncePrefix.copy(fixed, 10);
  fixed.writeUInt16BE(wrappedKey.length, 17);
  return Buffer.concat([fixed, wrappedKey]);
}

/**
 * Parses the header at the start of `bytes`. Returns undefined while more bytes are needed (a
 * stream), or the header; throws INVALID_ARGUMENT on anything but this format within its limits.
 */
export function parseEnvelopeHeader(bytes: Buffer): EnvelopeHeader | undefined {
  const have = (n: number) => bytes.length >= n;
  if (!have(4)) return undefined;
  if (!bytes.subarray(0, 4).equals(ENVELOPE_MAGIC)) throw invalid('bad magic');
  if (!have(5)) return undefined;
  if (bytes[4] !== ENVELOPE_VERSION) throw invalid(`unknown version ${bytes[4]}`);
  if (!have(6)) return undefined;
  if (bytes[5] !== ENVELOPE_AES_256_GCM) throw invalid(`unknown algorithm ${bytes[5]}`);
  if (!have(10)) return undefined;
  const segmentSize = bytes.readUInt32BE(6);
  if (segmentSize < MIN_SEGMENT_BYTES || segmentSize > MAX_SEGMENT_BYTES) throw invalid(`segment size ${segmentSize} outside ${MIN_SEGMENT_BYTES}..${MAX_SEGMENT_BYTES}`);
  if (!have(ENVELOPE_FIXED_HEADER_BYTES)) return undefined;
  const wrappedLength = bytes.readUInt16BE(17);
  if (wrappedLength < 1 || wrappedLength > MAX_WRAPPED_KEY_BYTES) throw invalid(`wrapped data key length ${wrappedLength} outside 1..${MAX_WRAPPED_KEY_BYTES}`);
  const end = ENVELOPE_FIXED_HEADER_BYTES + wrappedLength;
  if (!have(end)) return undefined;
  const header = Buffer.from(bytes.subarray(0, end)); // a copy: the caller's buffer may be reused
  return {
    version: header[4]!,
    algorithm: header[5]!,
    segmentSize,
    noncePrefix: header.subarray(10, 17),
    wrappedKey: header.subarray(ENVELOPE_FIXED_HEADER_BYTES, end),
    bytes: header,
  };
}

/** Every segment's AAD: SHA-256(header bytes || context encoding). The header is self-delimiting. */
export function envelopeAad(headerBytes: Buffer, context: EnvelopeContext): Buffer {
  return createHash('sha256').update(headerBytes).update(encodeEnvelopeContext(context)).digest();
}

/** Segment i's nonce: prefix (7) || u32 BE i || 0x01 on the last segment, else 0x00. */
export function segmentNonce(prefix: Buffer, index: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  prefix.copy(n, 0);
  n.writeUInt32BE(index, 7);
  n[11] = last ? 1 : 0;
  return n;
}

/** A FIFO of byte chunks: push what arrives, take exact lengths out (one copy per take). */
class ByteQueue {
  #chunks: Buffer[] = [];
  #length = 0;
  get length(): number {
    return this.#length;
  }
  push(chunk: Uint8Array | string): void {
    const b = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (b.length === 0) return;
    this.#chunks.push(b);
    this.#length += b.length;
  }
  take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const head = this.#chunks[0]!;
      const k = Math.min(head.length, n - at);
      head.copy(out, at, 0, k);
      at += k;
      if (k === head.length) this.#chunks.shift();
      else this.#chunks[0] = head.subarray(k);
    }
    this.#length -= n;
    return out;
  }
  /** The first n bytes without removing them (n ≤ length); joins only the chunks that hold them. */
  peek(n: number): Buffer {
    let k = 0;
    for (let have = 0; have < n; k++) have += this.#chunks[k]!.length;
    if (k > 1) this.#chunks.splice(0, k, Buffer.concat(this.#chunks.slice(0, k)));
    return (this.#chunks[0] ?? Buffer.alloc(0)).subarray(0, n);
  }
  /** Everything left, as the chunks it is held in (no copy); the queue is then empty. */
  drain(): Buffer[] {
    const out = this.#chunks;
    this.#chunks = [];
    this.#length = 0;
    return out;
  }
}

async function* chunksOf(source: EnvelopeInput): AsyncGenerator<Uint8Array | string> {
  if (source instanceof Uint8Array || typeof source === 'string') {
    yield source;
    return;
  }
  if (source === null || typeof source !== 'object' || !(Symbol.asyncIterator in source || Symbol.iterator in source))
    throw badArgument('the input must be bytes, or an (async) iterable of Buffers such as a readable stream');
  yield* source as AsyncIterable<Uint8Array | string>;
}

function sealSegment(key: Buffer, nonce: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: ENVELOPE_TAG_BYTES }) as CipherGCM;
  c.setAAD(aad);
  const body = c.update(plaintext);
  const tail = c.final();
  return Buffer.concat([body, tail, c.getAuthTag()]);
}

function openSegment(key: Buffer, nonce: Buffer, sealed: Buffer, aad: Buffer, index: number, last: boolean): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: ENVELOPE_TAG_BYTES }) as DecipherGCM;
  d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - ENVELOPE_TAG_BYTES));
  const body = d.update(sealed.subarray(0, sealed.length - ENVELOPE_TAG_BYTES));
  try {
    return Buffer.concat([body, d.final()]);
  } catch {
    body.fill(0);
    throw invalid(
      last
        ? `segment ${index} (the last one read) could not be authenticated: wrong context, modified data, or the envelope was cut short`
        : `segment ${index} could not be authenticated: wrong context, modified, reordered or misplaced data`,
    );
  }
}

/**
 * The local layer, with the data key and randomness given: what encryptEnvelopeStream does once
 * keyshard has made the data key. For the frozen vectors; applications use the functions below.
 * Does not zero `dataKey` (its owner does).
 */
export async function* sealEnvelope(
  dataKey: Buffer,
  wrappedKey: Buffer,
  context: EnvelopeContext,
  source: EnvelopeInput,
  segmentSize: number,
  noncePrefix: Buffer,
): AsyncGenerator<Buffer> {
  if (dataKey.length !== DATA_KEY_BYTES) throw internal(`the data key has ${dataKey.length} bytes, not ${DATA_KEY_BYTES}`);
  const header = encodeEnvelopeHeader(segmentSize, noncePrefix, wrappedKey);
  const aad = envelopeAad(header, context);
  yield header;
  const queue = new ByteQueue();
  let index = 0;
  const seal = (plain: Buffer, last: boolean) => {
    if (index > MAX_SEGMENT_INDEX) throw badArgument(`an envelope holds at most 2^32 segments of ${segmentSize} bytes`);
    return sealSegment(dataKey, segmentNonce(noncePrefix, index++, last), plain, aad);
  };
  // A segment is sealed once a byte after it has arrived: only then is it known not to be the last.
  for await (const chunk of chunksOf(source)) {
    queue.push(chunk);
    while (queue.length > segmentSize) yield seal(queue.take(segmentSize), false);
  }
  yield seal(queue.take(queue.length), true);
}

/**
 * The local layer of decryption with the data key given (see sealEnvelope): `body` is what
 * follows the header. Yields the plaintext of each segment once it authenticates; memory holds
 * one sealed segment (plus the chunk being read). Does not zero `dataKey`.
 */
export async function* openEnvelope(dataKey: Buffer, header: EnvelopeHeader, context: EnvelopeContext, body: EnvelopeInput): AsyncGenerator<Buffer> {
  if (dataKey.length !== DATA_KEY_BYTES) throw invalid(`the wrapped data key holds ${dataKey.length} bytes, not ${DATA_KEY_BYTES}`);
  const aad = envelopeAad(header.bytes, context);
  const sealedSegment = header.segmentSize + ENVELOPE_TAG_BYTES;
  const queue = new ByteQueue();
  let index = 0;
  const open = (sealed: Buffer, last: boolean) => {
    if (index > MAX_SEGMENT_INDEX) throw invalid('more than 2^32 segments');
    return openSegment(dataKey, segmentNonce(header.noncePrefix, index, last), sealed, aad, index++, last);
  };
  for await (const chunk of chunksOf(body)) {
    queue.push(chunk);
    // More than one sealed segment buffered: the first is not the last.
    while (queue.length > sealedSegment) yield open(queue.take(sealedSegment), false);
  }
  if (queue.length < ENVELOPE_TAG_BYTES) throw invalid(index === 0 ? 'no segment after the header (truncated)' : `cut short after segment ${index - 1} (truncated)`);
  if (queue.length === ENVELOPE_TAG_BYTES && index > 0) throw invalid('an empty last segment after full ones (only an empty plaintext has one)');
  const last = open(queue.take(queue.length), true);
  if (last.length > 0) yield last;
}

/** Reads the header off the front of a stream; what follows it stays in the queue. */
async function readHeader(it: AsyncIterator<Uint8Array | string>): Promise<{ header: EnvelopeHeader; rest: Buffer[] }> {
  const queue = new ByteQueue();
  for (;;) {
    const header = parseEnvelopeHeader(queue.peek(Math.min(queue.length, ENVELOPE_FIXED_HEADER_BYTES + MAX_WRAPPED_KEY_BYTES)));
    if (header) {
      queue.take(header.bytes.length);
      return { header, rest: queue.drain() };
    }
    const next = await it.next();
    if (next.done) throw invalid(queue.length === 0 ? 'empty input' : 'the header is cut short (truncated)');
    queue.push(next.value);
  }
}

/**
 * Encrypts a stream: asks keyshard for a data key under `key` and `context` when the first
 * bytes are pulled, then yields the header and one sealed segment at a time (memory: one
 * segment). The data key is zeroed when the generator ends, however it ends.
 * Usable as a `stream.pipeline` stage: pipeline(src, (s) => encryptEnvelopeStream(client, key, s, o), dst).
 */
export async function* encryptEnvelopeStream(client: EnvelopeKeyClient, key: string, source: EnvelopeInput, opts: EncryptEnvelopeOptions): AsyncGenerator<Buffer> {
  const segmentSize = checkSegmentSize(opts.segmentSize ?? DEFAULT_SEGMENT_BYTES);
  encodeEnvelopeContext(opts.context); // refuse a bad context before asking keyshard
  const dk = await client.generateDataKey(key, DATA_KEY_BYTES, opts.context, opts.call);
  try {
    yield* sealEnvelope(dk.plaintext, dk.ciphertext, opts.context, source, segmentSize, randomBytes(ENVELOPE_NONCE_PREFIX_BYTES));
  } finally {
    dk.plaintext.fill(0);
  }
}

/**
 * Decrypts a stream: reads the header, has keyshard unwrap the data key with `context` (the
 * context the caller expects; keyshard refuses any other), then yields each segment's plaintext
 * as it authenticates. The data key is zeroed when the generator ends. The output is complete
 * and authentic only if the generator finishes without throwing (see the module comment).
 */
export async function* decryptEnvelopeStream(client: EnvelopeKeyClient, source: EnvelopeInput, opts: EnvelopeOptions): AsyncGenerator<Buffer> {
  encodeEnvelopeContext(opts.context);
  const it = chunksOf(source)[Symbol.asyncIterator]();
  try {
    const { header, rest } = await readHeader(it);
    const { plaintext: dataKey } = await client.decrypt(header.wrappedKey, opts.context, opts.key === undefined ? opts.call : { ...opts.call, key: opts.key });
    try {
      yield* openEnvelope(dataKey, header, opts.context, followedBy(rest, it));
    } finally {
      dataKey.fill(0);
    }
  } finally {
    await it.return?.(undefined);
  }
}

/** `first`, then what is left of `it`. */
async function* followedBy(first: Buffer[], it: AsyncIterator<Uint8Array | string>): AsyncGenerator<Uint8Array | string> {
  yield* first;
  for (let next = await it.next(); !next.done; next = await it.next()) yield next.value;
}

async function collect(gen: AsyncGenerator<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of gen) parts.push(b);
  return Buffer.concat(parts);
}

/** Encrypts bytes (or a stream, collected) into one envelope. */
export function encryptEnvelope(client: EnvelopeKeyClient, key: string, plaintext: EnvelopeInput, opts: EncryptEnvelopeOptions): Promise<Buffer> {
  return collect(encryptEnvelopeStream(client, key, plaintext, opts));
}

/** Decrypts a whole envelope; throws INVALID_ARGUMENT if any byte of it is wrong, missing or extra. */
export async function decryptEnvelope(client: EnvelopeKeyClient, envelope: EnvelopeInput, opts: EnvelopeOptions): Promise<Buffer> {
  const parts: Buffer[] = [];
  try {
    for await (const b of decryptEnvelopeStream(client, envelope, opts)) parts.push(b);
  } catch (e) {
    for (const p of parts) p.fill(0); // never leave unauthenticated plaintext behind
    throw e;
  }
  return Buffer.concat(parts);
}

/**
 * Writes `blocks` to `file` through a temporary file created beside it: a fresh random name,
 * opened O_CREAT|O_EXCL (`wx`: never an existing file, never through a symlink someone planted)
 * with mode 0600 set on the handle, fsync'ed, renamed into place only once every block was
 * written, then the directory fsync'ed. A failure (an unauthentic segment, a refused key) leaves
 * no file under `file`'s name, and only the temporary file this call created is removed.
 */
async function writeAtomically(file: string, blocks: AsyncIterable<Buffer>): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(8).toString('hex')}.partial`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.chmod(0o600); // the umask may have narrowed it; never wider than 0600
    for await (const block of blocks) await fh.write(block);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  const dir = await open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Opens `src` first, so that a missing input fails before keyshard is asked for anything. */
async function withInput(src: string, use: (input: AsyncIterable<Buffer>) => Promise<void>): Promise<void> {
  const fh = await open(src, 'r');
  try {
    await use(fh.createReadStream({ autoClose: false }));
  } finally {
    await fh.close();
  }
}

/** Encrypts the file `src` into the envelope file `dst` (streamed; memory holds one segment). */
export function encryptFile(client: EnvelopeKeyClient, key: string, src: string, dst: string, opts: EncryptEnvelopeOptions): Promise<void> {
  return withInput(src, (input) => writeAtomically(dst, encryptEnvelopeStream(client, key, input, opts)));
}

/**
 * Decrypts the envelope file `src` into `dst` (streamed). `dst` appears only once the whole
 * envelope authenticated; on any failure it is not created (an existing `dst` is left as it was).
 */
export function decryptFile(client: EnvelopeKeyClient, src: string, dst: string, opts: EnvelopeOptions): Promise<void> {
  return withInput(src, (input) => writeAtomically(dst, decryptEnvelopeStream(client, input, opts)));
}
