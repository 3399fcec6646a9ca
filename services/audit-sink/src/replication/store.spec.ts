/**
 * The replica's persistent state: Raft's term and vote survive a reopen; the pending tail is the
 * last intact entry (a torn or corrupted one after it is cut); a large file is rewritten with the
 * last entry only.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { REPLICA_DIR, ReplicaStore, scanPending } from './store.ts';

describe('replica store', () => {
  const dirs: string[] = [];
  const tmp = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'replica-store-'));
    dirs.push(d);
    return d;
  };
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('keeps term, vote and applied term across a reopen', async () => {
    const d = tmp();
    const s = await ReplicaStore.open(d);
    assert.deepEqual(s.state, { currentTerm: 0, votedFor: undefined, appliedTerm: 0 });
    await s.saveState({ currentTerm: 7, votedFor: 'audit-sink-2', appliedTerm: 5 });
    await s.close();
    const again = await ReplicaStore.open(d);
    assert.deepEqual(again.state, { currentTerm: 7, votedFor: 'audit-sink-2', appliedTerm: 5 });
    await again.close();
  });

  it('the pending tail is the last intact entry; a torn or altered entry after it is cut', async () => {
    const d = tmp();
    const s = await ReplicaStore.open(d);
    await s.savePending({ term: 1, start: 0, lines: Buffer.from('a\n') });
    await s.savePending({ term: 2, start: 0, lines: Buffer.from('b\nc\n') });
    await s.close();
    const file = path.join(d, REPLICA_DIR, 'pending.log');
    const whole = fs.readFileSync(file);
    fs.appendFileSync(file, '{"term":3,"start":0,"bytes":10,"sha256":"00"}\nxx'); // torn: 2 of 10 bytes
    let r = await ReplicaStore.open(d);
    assert.deepEqual([r.pending?.term, r.pending?.lines.toString()], [2, 'b\nc\n']);
    await r.close();
    assert.deepEqual(fs.readFileSync(file), whole, 'the torn entry was cut');
    // An entry whose bytes do not match its hash is not the tail either.
    const altered = Buffer.from(whole);
    altered[altered.length - 2] = 0x78;
    fs.writeFileSync(file, altered);
    r = await ReplicaStore.open(d);
    assert.deepEqual([r.pending?.term, r.pending?.lines.toString()], [1, 'a\n']);
    await r.close();
  });

  it('a pending file past 16 MiB is rewritten holding only the newest entry', async () => {
    const d = tmp();
    const s = await ReplicaStore.open(d);
    const big = Buffer.alloc(6 * 1024 * 1024, 0x61);
    for (let i = 1; i <= 3; i++) await s.savePending({ term: i, start: 0, lines: big });
    await s.savePending({ term: 9, start: 4, lines: Buffer.from('z\n') });
    await s.close();
    const buf = fs.readFileSync(path.join(d, REPLICA_DIR, 'pending.log'));
    assert.ok(buf.length < 13 * 1024 * 1024, `rewritten (${buf.length} bytes)`);
    assert.deepEqual([scanPending(buf).last?.term, scanPending(buf).last?.start], [9, 4]);
  });
});
