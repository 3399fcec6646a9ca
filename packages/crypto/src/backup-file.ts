/**
 * The backup file: a consistent copy of a cluster's etcd state (already-encrypted material,
 * the share manifest, metadata), encrypted and signed, written and read as a stream.
 *
 *   "KSHARDB1"                          magic (8 bytes)
 *   u32 n, header (n bytes, JSON)       cluster name and id, etcd revision, time, entry count,
 *                                       the share manifest and its fingerprint, HKDF salt, signer
 *   frames: u32 n, n bytes              AES-256-GCM (NIST SP 800-38D) chunks of entries
 *   u32 0xFFFFFFFF, 64 bytes            Ed25519 signature (RFC 8032) over SHA-256 of all bytes before it
 *
 * Chunks follow the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
 * Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015), as age and
 * Tink use it: nonce = 11-byte big-endian chunk counter || 1-byte last-chunk flag, so chunks
 * cannot be reordered, dropped or the stream cut short; AAD = SHA-256 of magic and header, so
 * chunks cannot move between backups. The chunk key is HKDF-SHA256 (RFC 5869) of the root key
 * with a random per-backup salt; the signing key is an HKDF subkey of the root used as an
 * Ed25519 seed (RFC 8410 encoding), so the same root always signs with the same public key and
 * a restore proves the file came from the root it reconstructs.
 * A chunk's plaintext is a run of entries: u16 key length, u32 value length, key (UTF-8), value.
 * Frozen vectors: packages/crypto/vectors/backup-file.json (layout in packages/crypto/VECTORS.md).
 */
import { createHash, createPublicKey, randomBytes, sign, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { KeyshardError, invalidArgument } from '@keyshard/errors';
import { openAesGcm, sealAesGcm, zeroize, NONCE_BYTES } from './aead.ts';
import { deriveSubkey, rootSigningKey } from './key-hierarchy.ts';
import type { ShareManifest } from './share-manifest.ts';

export const BACKUP_MAGIC = Buffer.from('KSHARDB1', 'ascii');
const TRAILER_MARK = 0xffffffff;
const SIGNATURE_BYTES = 64;
/** Plaintext bytes per chunk (a chunk closes once it holds at least this much). */
export const BACKUP_CHUNK_BYTES = 64 * 1024;
const MAX_HEADER_BYTES = 1 << 20;
const MAX_FRAME_BYTES = 64 << 20;

export interface BackupHeader {
  format: 'keyshard-backup';
  version: 1;
  /** The etcd namespace name of the cluster it came from. */
  cluster: string;
  clusterId: string;
  /** The etcd revision the copy was read at. */
  revision: string;
  createdAt: string;
  entries: number;
  manifest: ShareManifest;
  manifestFingerprint: string;
  /** HKDF salt of the chunk key, hex. */
  salt: string;
  /** Ed25519 public key of the root that signed it, SPKI DER base64. */
  signer: string;
}

export interface BackupEntry {
  key: string;
  value: Buffer;
}

/** The root key's backup-signing key pair (deterministic). */
const signingKeys = (root: Buffer) => rootSigningKey(root, 'backup-signing');

/** The signer a backup made with `root` names in its header (what `keyshard status` could show operators). */
export function backupSigner(root: Buffer): string {
  return signingKeys(root).publicDer.toString('base64');
}

const chunkKey = (root: Buffer, salt: string) => deriveSubkey(root, 'backup-encryption', 32, Buffer.from(salt, 'hex'));

function chunkNonce(index: number, last: boolean): Buffer {
  const n = Buffer.alloc(NONCE_BYTES);
  n.writeUIntBE(index, 5, 6); // 11-byte counter; 48 bits are plenty
  n[NONCE_BYTES - 1] = last ? 1 : 0;
  return n;
}

const headerDigest = (headerBytes: Buffer) => createHash('sha256').update(BACKUP_MAGIC).update(headerBytes).digest();
const signedMessage = (digest: Buffer) => Buffer.concat([Buffer.from('keyshard/v1/backup-signature\0'), digest]);

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * Writes a backup as a sequence of byte blocks: `start()`, then `add()` per entry (returns a
 * block when a chunk fills), then `finish()`. Memory holds one chunk. Zeroizes its keys at finish.
 */
export class BackupWriter {
  readonly header: BackupHeader;
  #key: Buffer;
  #signer: KeyObject;
  #aad: Buffer;
  #hash = createHash('sha256');
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #index = 0;
  #started = false;

  constructor(root: Buffer, fields: Omit<BackupHeader, 'format' | 'version' | 'salt' | 'signer'>) {
    const { privateKey, publicDer } = signingKeys(root);
    const salt = randomBytes(32).toString('hex');
    this.header = { format: 'keyshard-backup', version: 1, ...fields, salt, signer: publicDer.toString('base64') };
    this.#key = chunkKey(root, salt);
    this.#signer = privateKey;
    this.#aad = Buffer.alloc(0);
  }

  start(): Buffer {
    if (this.#started) throw new KeyshardError('INTERNAL', 'backup already started');
    this.#started = true;
    const headerBytes = Buffer.from(JSON.stringify(this.header));
    this.#aad = headerDigest(headerBytes);
    return this.#emit(Buffer.concat([BACKUP_MAGIC, u32(headerBytes.length), headerBytes]));
  }

  add(key: string, value: Buffer): Buffer | undefined {
    const k = Buffer.from(key);
    if (k.length > 0xffff) throw invalidArgument('backup entry key too long');
    const head = Buffer.alloc(6);
    head.writeUInt16BE(k.length, 0);
    head.writeUInt32BE(value.length, 2);
    this.#pending.push(head, k, value);
    this.#pendingBytes += 6 + k.length + value.length;
    return this.#pendingBytes >= BACKUP_CHUNK_BYTES ? this.#frame(false) : undefined;
  }

  finish(): Buffer {
    const last = this.#frame(true);
    const mark = this.#emit(u32(TRAILER_MARK));
    const signature = sign(null, signedMessage(this.#hash.digest()), this.#signer);
    zeroize(this.#key);
    return Buffer.concat([last, mark, signature]);
  }

  #frame(last: boolean): Buffer {
    const plain = Buffer.concat(this.#pending);
    this.#pending = [];
    this.#pendingBytes = 0;
    const sealed = sealAesGcm(this.#key, plain, this.#aad, chunkNonce(this.#index++, last)).subarray(NONCE_BYTES); // the nonce is implied
    return this.#emit(Buffer.concat([u32(sealed.length), sealed]));
  }

  #emit(b: Buffer): Buffer {
    this.#hash.update(b);
    return b;
  }
}

export type ParsedPart =
  | { kind: 'header'; header: BackupHeader; aad: Buffer }
  | { kind: 'frame'; index: number; last: boolean; sealed: Buffer }
  | { kind: 'end'; signatureValid: boolean };

const malformed = (why: string) => invalidArgument(`not a valid keyshard backup: ${why}`, { reason: 'INVALID_BACKUP' });

/**
 * Reads a backup's structure incrementally (no key needed): feed it the bytes as they arrive.
 * A frame is reported once the bytes after it show whether it was the last; at the end the
 * signature is checked against the header's signer. Structure errors are INVALID_ARGUMENT.
 */
export class BackupParser {
  #buf: Buffer = Buffer.alloc(0);
  #hash = createHash('sha256');
  #state: 'magic' | 'header' | 'frames' | 'signature' | 'done' = 'magic';
  #header: BackupHeader | undefined;
  #held: Buffer | undefined; // a frame waiting to learn whether it is the last
  #index = 0;

  get header(): BackupHeader | undefined {
    return this.#header;
  }

  get done(): boolean {
    return this.#state === 'done';
  }

  *push(data: Buffer): Generator<ParsedPart> {
    this.#buf = this.#buf.length === 0 ? data : Buffer.concat([this.#buf, data]);
    for (;;) {
      if (this.#state === 'magic') {
        if (this.#buf.length < BACKUP_MAGIC.length + 4) return;
        if (!this.#buf.subarray(0, BACKUP_MAGIC.length).equals(BACKUP_MAGIC)) throw malformed('bad magic');
        this.#state = 'header';
      } else if (this.#state === 'header') {
        const n = this.#buf.readUInt32BE(BACKUP_MAGIC.length);
        if (n === 0 || n > MAX_HEADER_BYTES) throw malformed('bad header length');
        const end = BACKUP_MAGIC.length + 4 + n;
        if (this.#buf.length < end) return;
        const headerBytes = this.#take(end).subarray(BACKUP_MAGIC.length + 4);
        this.#header = parseHeader(headerBytes);
        this.#state = 'frames';
        yield { kind: 'header', header: this.#header, aad: headerDigest(headerBytes) };
      } else if (this.#state === 'frames') {
        if (this.#buf.length < 4) return;
        const n = this.#buf.readUInt32BE(0);
        if (n === TRAILER_MARK) {
          if (!this.#held) throw malformed('no data chunk');
          yield { kind: 'frame', index: this.#index++, last: true, sealed: this.#held };
          this.#held = undefined;
          this.#take(4);
          this.#state = 'signature';
          continue;
        }
        if (n > MAX_FRAME_BYTES) throw malformed('chunk too large');
        if (this.#buf.length < 4 + n) return;
        const frame = this.#take(4 + n).subarray(4);
        if (this.#held) yield { kind: 'frame', index: this.#index++, last: false, sealed: this.#held };
        this.#held = frame;
      } else if (this.#state === 'signature') {
        if (this.#buf.length < SIGNATURE_BYTES) return;
        const signature = this.#buf.subarray(0, SIGNATURE_BYTES);
        if (this.#buf.length > SIGNATURE_BYTES) throw malformed('bytes after the signature');
        this.#buf = Buffer.alloc(0);
        this.#state = 'done';
        const signer = createPublicKey({ key: Buffer.from(this.#header!.signer, 'base64'), format: 'der', type: 'spki' });
        yield { kind: 'end', signatureValid: verify(null, signedMessage(this.#hash.digest()), signer, signature) };
        return;
      } else {
        if (this.#buf.length > 0) throw malformed('bytes after the signature');
        return;
      }
    }
  }

  /** Call after the last byte: a file cut short is refused. */
  end(): void {
    if (this.#state !== 'done') throw malformed('the file ends early (truncated)');
  }

  #take(n: number): Buffer {
    const out = this.#buf.subarray(0, n);
    this.#hash.update(out);
    this.#buf = this.#buf.subarray(n);
    return out;
  }
}

function parseHeader(bytes: Buffer): BackupHeader {
  let h: BackupHeader;
  try {
    h = JSON.parse(bytes.toString('utf8')) as BackupHeader;
  } catch {
    throw malformed('header is not JSON');
  }
  const ok =
    h && h.format === 'keyshard-backup' && h.version === 1 && typeof h.cluster === 'string' && typeof h.clusterId === 'string' &&
    typeof h.revision === 'string' && Number.isInteger(h.entries) && typeof h.salt === 'string' && /^[0-9a-f]{64}$/.test(h.salt) &&
    typeof h.signer === 'string' && h.manifest && typeof h.manifest === 'object' && Array.isArray(h.manifest.custodians) &&
    h.manifest.clusterId === h.clusterId && typeof h.manifestFingerprint === 'string';
  if (!ok) throw malformed('header fields are missing or wrong');
  return h;
}

/**
 * Opens the chunks of a backup with the root key that made it. Refuses (FAILED_PRECONDITION)
 * a root whose signing key is not the header's signer: the backup is of another root.
 */
export class BackupOpener {
  #key: Buffer;
  #aad: Buffer;

  constructor(root: Buffer, header: BackupHeader, aad: Buffer) {
    const mine = Buffer.from(backupSigner(root), 'base64');
    const theirs = Buffer.from(header.signer, 'base64');
    if (mine.length !== theirs.length || !timingSafeEqual(mine, theirs))
      throw new KeyshardError('FAILED_PRECONDITION', 'the backup was not signed by this root key', { reason: 'WRONG_CLUSTER' });
    this.#key = chunkKey(root, header.salt);
    this.#aad = aad;
  }

  /** The entries of one chunk; INVALID_ARGUMENT if the chunk was modified, moved or misplaced. */
  open(part: { index: number; last: boolean; sealed: Buffer }): BackupEntry[] {
    let plain: Buffer;
    try {
      plain = openAesGcm(this.#key, Buffer.concat([chunkNonce(part.index, part.last), part.sealed]), this.#aad, 'backup chunk');
    } catch {
      throw invalidArgument(`backup chunk ${part.index} failed authentication: the file was modified`, { reason: 'INVALID_BACKUP' });
    }
    return parseEntries(plain, part.index);
  }

  close(): void {
    zeroize(this.#key);
  }
}

function parseEntries(plain: Buffer, index: number): BackupEntry[] {
  const out: BackupEntry[] = [];
  let off = 0;
  while (off < plain.length) {
    if (off + 6 > plain.length) throw malformed(`chunk ${index} has a cut entry`);
    const kl = plain.readUInt16BE(off);
    const vl = plain.readUInt32BE(off + 2);
    const end = off + 6 + kl + vl;
    if (end > plain.length) throw malformed(`chunk ${index} has a cut entry`);
    out.push({ key: plain.toString('utf8', off + 6, off + 6 + kl), value: plain.subarray(off + 6 + kl, end) });
    off = end;
  }
  return out;
}

/**
 * Writes a backup's blocks to `file` so that a crash never leaves a partial file under that
 * name: they go to a temporary file beside it with a fresh random name, opened O_CREAT|O_EXCL
 * (`wx`: never an existing file, never through a symlink someone planted) with mode 0600 set on
 * the handle, fsync'ed, renamed into place, then the directory fsync'ed. On any failure only the
 * temporary file this call created is removed and the error rethrown. (The SDK's envelope files,
 * packages/client/src/envelope.ts writeAtomically, are written the same way: the shipped client
 * bundles no @keyshard/crypto.)
 */
export async function writeBackupFile(file: string, blocks: AsyncIterable<Buffer>): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(8).toString('hex')}.partial`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.chmod(0o600);
    for await (const block of blocks) await fh.write(block);
    await fh.sync();
    await fh.close();
    await rename(tmp, file);
  } catch (e) {
    await fh.close().catch(() => undefined);
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
