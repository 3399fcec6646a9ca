/**
 * Record lines against the frozen vector ../vectors/record.json (VECTORS.md, "Record"): each
 * event's canonical entry, leaf hash and line, the segment file they make, and the tree root.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canonicalJson } from '@keyshard/crypto';
import { MerkleTree } from './merkle.ts';
import { checkRecord, encodeEntry, encodeRecord, encodeRecords } from './record-format.ts';
import { loadVectors } from './test-vectors.ts';

const vector = loadVectors<{
  records: { index: number; event: Record<string, unknown>; entry: string; leaf_hash_hex: string; line: string }[];
  segment_file: { name: string; bytes_hex: string };
  tree_size: number;
  root_hash_hex: string;
}>('record.json');

describe('record format (frozen vector packages/audit-log/vectors/record.json)', () => {
  it('encodes each event to the entry, leaf hash and record line of the vector, on the fast path and the general one', () => {
    for (const r of vector.records) {
      const { json, leaf, bytes } = encodeEntry(r.event);
      assert.equal(json, r.entry, `entry ${r.index}`);
      assert.equal(canonicalJson(r.event), r.entry, `canonicalJson ${r.index}`);
      assert.equal(bytes, Buffer.byteLength(r.entry, 'utf8'));
      assert.equal(leaf.toString('hex'), r.leaf_hash_hex, `leaf ${r.index}`);
      assert.equal(encodeRecord(r.index, leaf, json), r.line, `line ${r.index}`);
    }
  });

  it('writes the segment file of the vector byte for byte, and reads each line back as its event', () => {
    const buf = encodeRecords(0, vector.records.map((r) => encodeEntry(r.event)));
    assert.equal(buf.toString('hex'), vector.segment_file.bytes_hex);
    for (const r of vector.records) {
      const checked = checkRecord(Buffer.from(r.line, 'utf8'), r.index);
      assert.ok(!('reason' in checked), `record ${r.index}`);
      assert.deepEqual(checked.event, r.event);
    }
  });

  it('the records are the leaves of the tree whose root the vector names', () => {
    const t = new MerkleTree();
    for (const r of vector.records) t.appendLeafHash(Buffer.from(r.leaf_hash_hex, 'hex'));
    assert.equal(t.size, vector.tree_size);
    assert.equal(t.root().toString('hex'), vector.root_hash_hex);
  });
});
