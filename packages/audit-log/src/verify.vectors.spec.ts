/**
 * Offline verification of a log directory assembled byte for byte from the frozen vectors
 * (vectors/record.json's segment file, vectors/checkpoint.json's key and stored line, laid out
 * as log-dir.ts describes): what a second implementation that writes those bytes must produce
 * for keyshard's verifier to accept it. A changed record is found at its index.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { CHECKPOINTS_FILE, KEYS_DIR, SEGMENT_DIR } from './log-dir.ts';
import { loadVectors } from './test-vectors.ts';
import { verifyLogDir } from './verify.ts';

const record = loadVectors<{ segment_file: { name: string; bytes_hex: string }; tree_size: number; root_hash_hex: string }>('record.json');
const checkpoint = loadVectors<{ public_key_pem: string; checkpoint: { key_id: string }; stored_line: string }>('checkpoint.json');

const root = mkdtempSync(path.join(os.tmpdir(), 'audit-log-verify-'));
after(() => rmSync(root, { recursive: true, force: true }));

function logDir(name: string, segment: Buffer): string {
  const dir = path.join(root, name);
  mkdirSync(path.join(dir, SEGMENT_DIR), { recursive: true });
  mkdirSync(path.join(dir, KEYS_DIR));
  writeFileSync(path.join(dir, SEGMENT_DIR, record.segment_file.name), segment);
  writeFileSync(path.join(dir, KEYS_DIR, `${checkpoint.checkpoint.key_id}.pem`), checkpoint.public_key_pem);
  writeFileSync(path.join(dir, CHECKPOINTS_FILE), checkpoint.stored_line);
  return dir;
}

describe('verifyLogDir on a log directory built from the frozen vectors', () => {
  const segment = Buffer.from(record.segment_file.bytes_hex, 'hex');

  it('verifies: every record, the tree root and the signed checkpoint', () => {
    const r = verifyLogDir(logDir('good', segment));
    assert.deepEqual(r, { ok: true, records: record.tree_size, rootHash: record.root_hash_hex, checkpoints: 1, notes: [] });
  });

  it('names the record that was changed: a denied call rewritten as allowed', () => {
    const text = segment.toString('utf8');
    assert.equal(text.indexOf('"result":"denied"'), text.lastIndexOf('"result":"denied"'), 'one denied record, record 1');
    const r = verifyLogDir(logDir('changed', Buffer.from(text.replace('"result":"denied"', '"result":"ok"'), 'utf8')));
    assert.equal(r.ok, false);
    assert.equal(r.firstBadIndex, 1);
    assert.match(r.reason ?? '', /leaf hash does not match the event/);
  });
});
