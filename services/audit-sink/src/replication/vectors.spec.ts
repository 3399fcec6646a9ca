/**
 * The replicas' byte formats against the frozen vectors of an independent implementation
 * (services/audit-sink/vectors/generate.py --check; REPLICATION.md, "Byte formats"): pending.log
 * entries and the tail read back from a file with a torn entry, the state file, and frames.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { splitRecords } from '../audit-log.ts';
import { REPLICA_DIR, ReplicaStore, pendingEntry, scanPending } from './store.ts';
import { decodeFrame, encodeFrame, replicateRequest, voteRequest } from './wire.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const V = JSON.parse(fs.readFileSync(path.join(HERE, '../../vectors/replication.json'), 'utf8')) as {
  record_lines: string;
  pending: { entries: { term: number; start: number; lines: string; entry_hex: string }[]; file_hex: string; tail: { term: number; start: number }; valid_bytes: number };
  state: { state: { currentTerm: number; votedFor: string | null; appliedTerm: number }; text: string }[];
  frames: { method: string; header_json: string; records: string; frame_hex: string }[];
};

describe('replica formats: frozen vectors', () => {
  it('the vectors carry valid record lines (record-format.ts)', () => {
    assert.equal(splitRecords(Buffer.from(V.record_lines), 7).length, 2);
  });

  it('pending.log entries, and the tail of a file ending in a torn entry', () => {
    for (const e of V.pending.entries) assert.equal(pendingEntry({ term: e.term, start: e.start, lines: Buffer.from(e.lines) }).toString('hex'), e.entry_hex);
    const { last, validBytes } = scanPending(Buffer.from(V.pending.file_hex, 'hex'));
    assert.deepEqual([last?.term, last?.start, validBytes], [V.pending.tail.term, V.pending.tail.start, V.pending.valid_bytes]);
  });

  it('state.json', async () => {
    for (const s of V.state) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replica-vectors-'));
      try {
        const store = await ReplicaStore.open(dir);
        await store.saveState({ ...s.state, votedFor: s.state.votedFor ?? undefined });
        await store.close();
        assert.equal(fs.readFileSync(path.join(dir, REPLICA_DIR, 'state.json'), 'utf8'), s.text);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it('frames: encoded byte for byte, decoded to the header and records', () => {
    const schemas = { Replicate: replicateRequest, Vote: voteRequest } as const;
    for (const f of V.frames) {
      const header = JSON.parse(f.header_json) as Record<string, unknown>;
      const bytes = encodeFrame({ header, records: Buffer.from(f.records) });
      assert.equal(bytes.toString('hex'), f.frame_hex, f.method);
      const back = decodeFrame<unknown>(schemas[f.method as keyof typeof schemas], Buffer.from(f.frame_hex, 'hex'));
      assert.deepEqual([back.header, back.records.toString()], [header, f.records]);
    }
  });
});
