/**
 * What a verifier is given from outside the log folder, against the frozen vector
 * vectors/trust.json (VECTORS.md §8): the trust file is written byte for byte as the vector
 * holds it and read back to the vector's keys; a cosigned checkpoint is read alike from a JSON
 * object, a JSON array and JSON lines, and written as the vector's cosigned.log line.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SignedCheckpoint } from './checkpoint.ts';
import type { CosignedCheckpoint } from './cosignature.ts';
import { cosignedLine } from './log-dir.ts';
import { loadVectors } from './test-vectors.ts';
import { parseCosignedFile, parseTrustFile, trustFileText } from './trust.ts';

const v = loadVectors<{
  trust_file: string;
  sink_key_id: string;
  witness_name: string;
  witness_quorum: number;
  cosigned: CosignedCheckpoint;
  cosigned_object: string;
  cosigned_array: string;
  cosigned_lines: string;
  cosigned_log_line: string;
}>('trust.json');
const sink = loadVectors<{ public_key_pem: string }>('checkpoint.json');
const witness = loadVectors<{ vkey: string; key_id_hex: string }>('cosignature.json');

describe('trust roots and cosigned files (frozen vector packages/audit-log/vectors/trust.json)', () => {
  it('writes the trust file of the vector and reads it back to its keys', () => {
    assert.equal(trustFileText([sink.public_key_pem], [witness.vkey], 1), v.trust_file);
    const t = parseTrustFile(v.trust_file);
    assert.deepEqual([...t.sinkKeys.keys()], [v.sink_key_id]);
    assert.deepEqual(t.witnesses.map((w) => [w.name, w.keyId.toString('hex')]), [[v.witness_name, witness.key_id_hex]]);
    assert.equal(t.witnessQuorum, v.witness_quorum);
  });

  it('refuses a trust file with a member missing, unknown or wrong', () => {
    const base = JSON.parse(v.trust_file) as Record<string, unknown>;
    const bad = (o: unknown, why: RegExp) => assert.throws(() => parseTrustFile(JSON.stringify(o)), why);
    bad({ ...base, extra: 1 }, /unknown member "extra"/);
    bad({ ...base, sinkKeys: [] }, /sinkKeys is empty/);
    bad({ ...base, sinkKeys: ['-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'] }, /never its private key/);
    bad({ ...base, witnessQuorum: 2 }, /quorum of 2 needs at least 2 witness keys, 1 given/);
    bad({ ...base, witnessQuorum: -1 }, /whole number >= 0/);
    bad({ ...base, witnesses: ['not-a-vkey'] }, /not a witness verifier key/);
    bad({ ...base, witnesses: 'x' }, /witnesses must be an array of strings/);
    assert.throws(() => parseTrustFile('{'), /not JSON/);
  });

  it('reads a cosigned checkpoint from a JSON object, a JSON array and JSON lines', () => {
    const bare = { ...v.cosigned, cosignatures: [] };
    assert.deepEqual(parseCosignedFile(v.cosigned_object), [v.cosigned]);
    assert.deepEqual(parseCosignedFile(v.cosigned_array), [v.cosigned, bare]);
    assert.deepEqual(parseCosignedFile(v.cosigned_lines), [v.cosigned, bare]);
    assert.deepEqual(parseCosignedFile(''), []);
    // The proto JSON form of the checkpoint (tree_size a decimal string) reads the same.
    const proto = { ...v.cosigned, checkpoint: { ...v.cosigned.checkpoint, tree_size: String(v.cosigned.checkpoint.tree_size) } as unknown as SignedCheckpoint };
    assert.deepEqual(parseCosignedFile(JSON.stringify(proto)), [v.cosigned]);
  });

  it('writes the cosigned.log line of the vector', () => {
    assert.equal(cosignedLine(v.cosigned), v.cosigned_log_line);
  });

  it('names the malformed item', () => {
    assert.throws(() => parseCosignedFile(`${v.cosigned_log_line}{oops\n`), /line 2 is not JSON/);
    assert.throws(() => parseCosignedFile(JSON.stringify([v.cosigned, { ...v.cosigned, note: 7 }])), /item 2: note is not a string/);
    assert.throws(() => parseCosignedFile(JSON.stringify({ ...v.cosigned, cosignatures: Array(17).fill('x') })), /more than 16 cosignatures/);
    assert.throws(() => parseCosignedFile(JSON.stringify({ ...v.cosigned, checkpoint: null })), /checkpoint is not a JSON object/);
  });
});
