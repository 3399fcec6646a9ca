/**
 * Offline verification of a log directory assembled byte for byte from the frozen vectors
 * (vectors/record.json's segment file, vectors/checkpoint.json's key and stored line,
 * vectors/trust.json's cosigned.log line, laid out as log-dir.ts describes), under the trust
 * file of vectors/trust.json: what a second implementation that writes those bytes must produce
 * for keyshard's verifier to accept it. A changed record is found at its index.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { CHECKPOINTS_FILE, COSIGNED_FILE, KEYS_DIR, SEGMENT_DIR } from './log-dir.ts';
import { loadVectors } from './test-vectors.ts';
import { parseTrustFile } from './trust.ts';
import { verifyLogDir } from './verify.ts';

const record = loadVectors<{ segment_file: { name: string; bytes_hex: string }; tree_size: number; root_hash_hex: string }>('record.json');
const checkpoint = loadVectors<{ public_key_pem: string; checkpoint: { key_id: string; time: string }; stored_line: string }>('checkpoint.json');
const trustVector = loadVectors<{ trust_file: string; witness_name: string; cosigned_log_line: string }>('trust.json');
const trust = parseTrustFile(trustVector.trust_file);
const now = new Date(Date.parse(checkpoint.checkpoint.time) + 60_000);

const root = mkdtempSync(path.join(os.tmpdir(), 'audit-log-verify-'));
after(() => rmSync(root, { recursive: true, force: true }));

function logDir(name: string, segment: Buffer): string {
  const dir = path.join(root, name);
  mkdirSync(path.join(dir, SEGMENT_DIR), { recursive: true });
  mkdirSync(path.join(dir, KEYS_DIR));
  writeFileSync(path.join(dir, SEGMENT_DIR, record.segment_file.name), segment);
  writeFileSync(path.join(dir, KEYS_DIR, `${checkpoint.checkpoint.key_id}.pem`), checkpoint.public_key_pem);
  writeFileSync(path.join(dir, CHECKPOINTS_FILE), checkpoint.stored_line);
  writeFileSync(path.join(dir, COSIGNED_FILE), trustVector.cosigned_log_line);
  return dir;
}

describe('verifyLogDir on a log directory built from the frozen vectors', () => {
  const segment = Buffer.from(record.segment_file.bytes_hex, 'hex');

  it('verifies: every record, the tree root, the signed checkpoint and the witness cosignature', () => {
    const r = verifyLogDir(logDir('good', segment), { trust, now });
    assert.deepEqual(r, {
      ok: true,
      records: record.tree_size,
      rootHash: record.root_hash_hex,
      checkpoints: 1,
      trusted: { stored: record.tree_size, cosigned: [record.tree_size] },
      witnesses: [{ name: trustVector.witness_name, treeSize: record.tree_size, time: '2026-12-06T10:00:04.000Z' }],
      witnessQuorum: 1,
      // Freshness is measured on witness cosignature times only (the sink's own times prove nothing).
      newest: { time: '2026-12-06T10:00:04.000Z', treeSize: record.tree_size, source: `cosigned.log line 1, cosigned by ${trustVector.witness_name}` },
      notes: [
        `the witnesses' cosignatures came only from cosigned.log, in the folder: whoever controls it can cut the tail and trim that file too; give the newest cosigned checkpoints from outside (--cosigned FILE)`,
      ],
    });
  });

  it('names the record that was changed: a denied call rewritten as allowed', () => {
    const text = segment.toString('utf8');
    assert.equal(text.indexOf('"result":"denied"'), text.lastIndexOf('"result":"denied"'), 'one denied record, record 1');
    const r = verifyLogDir(logDir('changed', Buffer.from(text.replace('"result":"denied"', '"result":"ok"'), 'utf8')), { trust, now });
    assert.equal(r.ok, false);
    assert.equal(r.firstBadIndex, 1);
    assert.match(r.reason ?? '', /leaf hash does not match the event/);
  });
});
