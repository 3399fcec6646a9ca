/**
 * The backup file against the frozen files in ../vectors/backup-file.json, written by
 * ../vectors/generate.py (Python: framing, STREAM nonces and RFC 5869 HKDF written out,
 * AES-256-GCM and Ed25519 from pyca/cryptography, no keyshard code). keyshard draws the salt at
 * random, so BackupWriter cannot reproduce a file byte for byte: the frozen files must parse,
 * open and verify, and the writer must lay out the same header, frames and signature.
 * Format: ../VECTORS.md, "Backup file".
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPublicKey, verify } from 'node:crypto';
import { BackupOpener, BackupParser, BackupWriter, backupSigner, type BackupEntry, type BackupHeader } from './backup-file.ts';
import { hex, loadVectors } from './test-vectors.ts';

interface FrozenFile {
  name: string;
  entries: ({ key: string; value_hex: string } | { key: string; value_fill: { byte_hex: string; length: number } })[];
  header_json: string; header_digest_hex: string;
  chunks: { index: number; last: boolean; nonce_hex: string; plaintext_length: number; frame_length: number; plaintext_sha256: string }[];
  signed_digest_hex: string; signature_hex: string; file_sha256: string; file_b64: string;
}
const v = loadVectors<{ root_hex: string; salt_hex: string; signer: string; chunk_bytes: number; files: FrozenFile[] }>('backup-file.json');
const root = hex(v.root_hex);

const entriesOf = (f: FrozenFile): BackupEntry[] =>
  f.entries.map((e) => ({ key: e.key, value: 'value_hex' in e ? hex(e.value_hex) : Buffer.alloc(e.value_fill.length, hex(e.value_fill.byte_hex)) }));

/** Parses and opens `file` fed in `step`-byte pieces: header, frames as reported, entries, signature verdict. */
function open(file: Buffer, step: number, key = root) {
  const parser = new BackupParser();
  let header: BackupHeader | undefined;
  let aad: Buffer | undefined;
  let opener: BackupOpener | undefined;
  const frames: { index: number; last: boolean; length: number }[] = [];
  const entries: BackupEntry[] = [];
  let signatureValid: boolean | undefined;
  for (let at = 0; at < file.length; at += step)
    for (const part of parser.push(file.subarray(at, at + step))) {
      if (part.kind === 'header') {
        ({ header, aad } = part);
        opener = new BackupOpener(key, part.header, part.aad);
      } else if (part.kind === 'frame') {
        frames.push({ index: part.index, last: part.last, length: part.sealed.length });
        entries.push(...opener!.open(part));
      } else signatureValid = part.signatureValid;
    }
  parser.end();
  return { header: header!, aad: aad!, frames, entries, signatureValid };
}

describe('backup file (frozen vectors packages/crypto/vectors/backup-file.json)', () => {
  it('the signer named in every header is the root\'s backup-signing key', () => {
    assert.equal(backupSigner(root), v.signer);
  });

  for (const f of v.files) {
    const file = Buffer.from(f.file_b64, 'base64');

    it(`${f.name}: layout, header digest, frames, entries and signature of the frozen file`, () => {
      assert.equal(createHash('sha256').update(file).digest('hex'), f.file_sha256);
      const headerBytes = Buffer.from(f.header_json, 'utf8');
      assert.equal(file.subarray(0, 8).toString('latin1'), 'KSHARDB1');
      assert.equal(file.readUInt32BE(8), headerBytes.length);
      assert.deepEqual(file.subarray(12, 12 + headerBytes.length), headerBytes);
      const signed = file.subarray(0, file.length - 64);
      assert.equal(signed.readUInt32BE(signed.length - 4), 0xffffffff, 'the trailer mark precedes the signature');
      assert.equal(createHash('sha256').update(signed).digest('hex'), f.signed_digest_hex);
      const message = Buffer.concat([Buffer.from('keyshard/v1/backup-signature\0'), hex(f.signed_digest_hex)]);
      assert.equal(verify(null, message, createPublicKey({ key: Buffer.from(v.signer, 'base64'), format: 'der', type: 'spki' }), hex(f.signature_hex)), true);

      for (const step of [1000, 65_537, file.length]) {
        const out = open(file, step);
        assert.deepEqual(out.header, JSON.parse(f.header_json));
        assert.equal(out.aad.toString('hex'), f.header_digest_hex);
        assert.deepEqual(out.frames, f.chunks.map((c) => ({ index: c.index, last: c.last, length: c.frame_length })));
        assert.deepEqual(out.entries, entriesOf(f));
        assert.equal(out.signatureValid, true);
      }
    });

    it(`${f.name}: BackupWriter lays out the same header, frames and signature (its own random salt aside)`, () => {
      const frozen = JSON.parse(f.header_json) as BackupHeader;
      const { format: _format, version: _version, salt, signer: _signer, ...fields } = frozen;
      const w = new BackupWriter(root, fields);
      assert.deepEqual({ ...w.header, salt }, frozen, 'the same members in the same order');
      assert.equal(JSON.stringify({ ...w.header, salt }), f.header_json);
      const blocks = [w.start()];
      const frameLengths: number[] = [];
      for (const e of entriesOf(f)) {
        const block = w.add(e.key, e.value);
        if (!block) continue;
        frameLengths.push(block.readUInt32BE(0));
        blocks.push(block);
      }
      const end = w.finish();
      frameLengths.push(end.readUInt32BE(0));
      assert.deepEqual(frameLengths, f.chunks.map((c) => c.frame_length), 'chunks close at the same entries');
      const out = open(Buffer.concat([...blocks, end]), 4096);
      assert.equal(out.signatureValid, true);
      assert.deepEqual(out.entries, entriesOf(f));
      assert.equal(out.header.signer, v.signer);
      assert.notEqual(out.header.salt, v.salt_hex, 'a fresh salt per backup');
    });
  }

  it('the first chunk of a two-chunk file does not open as the last one; another root is refused', () => {
    const f = v.files.find((x) => x.chunks.length === 2)!;
    const file = Buffer.from(f.file_b64, 'base64');
    const headerEnd = 12 + file.readUInt32BE(8);
    const firstEnd = headerEnd + 4 + file.readUInt32BE(headerEnd);
    const cut = Buffer.concat([file.subarray(0, firstEnd), file.subarray(file.length - 68)]); // chunk 0, the mark, the signature
    assert.throws(() => open(cut, cut.length), /failed authentication/);
    assert.throws(() => open(file, file.length, Buffer.alloc(32, 7)), /not signed by this root key/);
  });
});
