import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { appendFileSync, cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { canonicalJson } from '@keyshard/crypto';
import { KeyshardError } from '@keyshard/errors';
import { checkpointProblem, encodeEntry, encodeRecords, leafHash, loadPublicKeys, verifyInclusion, verifyLogDir } from '@keyshard/audit-log';
import { AuditLog } from './audit-log.ts';
import { signerFromKey } from './checkpoint-store.ts';
import { OffsetList } from './segments.ts';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'auditlog-'));
  dirs.push(d);
  return d;
};
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const newSigner = () => signerFromKey(generateKeyPairSync('ed25519').privateKey);
const signer = newSigner();
const ev = (id: string) => ({ id, operation: 'keys.Encrypt', key_id: 'k_1', details: { n: id } });
// The verifier trusts the sink keys it is given (never the log's keys/): these signers', no witness.
const trusting = (...signers: { keyId: string; publicKey: KeyObject }[]) => ({ trust: { sinkKeys: new Map(signers.map((x) => [x.keyId, x.publicKey])), witnesses: [], witnessQuorum: 0 } });
const open = (dir: string, opts: Partial<Parameters<typeof AuditLog.open>[1]> = {}) => AuditLog.open(dir, { signer, ...opts });
const segmentFiles = (dir: string) => readdirSync(path.join(dir, 'segments')).sort().map((f) => path.join(dir, 'segments', f));
const allLines = (dir: string) => segmentFiles(dir).flatMap((f) => readFileSync(f, 'utf8').split('\n').filter(Boolean));

async function filled(n: number, opts: { segmentBytes?: number } = {}): Promise<string> {
  const dir = tmp();
  const log = await open(dir, opts);
  for (let i = 0; i < n; i += 10) await log.append(Array.from({ length: Math.min(10, n - i) }, (_, j) => ev(`e${i + j}`)));
  await log.close();
  return dir;
}

describe('AuditLog', () => {
  it('stores a record line per event whose leaf is SHA-256(0x00 || canonical event)', async () => {
    const dir = await filled(1);
    const rec = JSON.parse(readFileSync(path.join(dir, 'audit.log'), 'utf8'));
    assert.equal(rec.index, 0);
    assert.equal(rec.leaf, leafHash(canonicalJson(ev('e0'))).toString('hex'));
    assert.deepEqual(rec.event, ev('e0'));
  });

  it('returns receipts whose signed checkpoint covers the batch, with inclusion proofs that verify', async () => {
    const dir = tmp();
    const log = await open(dir);
    const keys = new Map([[signer.keyId, signer.publicKey]]);
    const receipts = await Promise.all([log.append([ev('a'), ev('b')]), log.append([ev('c')]), log.append([ev('a')])]);
    assert.deepEqual(receipts.map((r) => [r.firstIndex, r.count]), [[0, 2], [2, 1], [3, 0]]);
    for (const r of receipts) {
      assert.equal(checkpointProblem(r.checkpoint, keys), undefined);
      assert.ok(r.checkpoint.tree_size >= r.firstIndex + r.count);
    }
    const r = receipts[1]!;
    const proof = log.inclusionProof(r.firstIndex, r.checkpoint.tree_size);
    assert.ok(verifyInclusion(r.firstIndex, r.checkpoint.tree_size, leafHash(canonicalJson(ev('c'))), proof, Buffer.from(r.checkpoint.root_hash, 'hex')));
    assert.equal(log.syncs, 1, 'appends of one tick share one fsync');
    await log.close();
  });

  it('keeps everything across close and reopen, and reads back across segment files', async () => {
    const dir = await filled(95, { segmentBytes: 2000 });
    assert.ok(segmentFiles(dir).length > 3, `${segmentFiles(dir).length} segments`);
    const log = await open(dir, { segmentBytes: 2000 });
    assert.equal(log.size, 95);
    await log.append([ev('e95')]);
    const ids: string[] = [];
    for await (const r of log.records(3)) ids.push(`${r.index}:${r.event.id}`);
    assert.deepEqual(ids, Array.from({ length: 93 }, (_, i) => `${i + 3}:e${i + 3}`));
    const some: number[] = [];
    for await (const r of log.records(40, 47)) some.push(r.index);
    assert.deepEqual(some, [40, 41, 42, 43, 44, 45, 46]);
    await log.close();
    const v = verifyLogDir(dir, trusting(signer));
    assert.deepEqual([v.ok, v.records], [true, 96], v.reason);
  });

  it('cuts a torn (unacknowledged) last line on open and keeps every acknowledged record', async () => {
    const dir = await filled(20);
    const active = segmentFiles(dir).at(-1)!;
    appendFileSync(active, '{"index":20,"leaf":"ab');
    assert.match(verifyLogDir(dir, trusting(signer)).notes.join(), /torn final line/);
    const log = await open(dir);
    assert.deepEqual([log.size, log.openInfo.truncatedBytes], [20, 22]);
    assert.equal((await log.append([ev('x')])).firstIndex, 20);
    await log.close();
    assert.equal(verifyLogDir(dir, trusting(signer)).ok, true);
  });

  it('refuses to start on a changed record, and on a log cut shorter than a checkpoint', async () => {
    const dir = await filled(30);
    const file = segmentFiles(dir)[0]!;
    const text = readFileSync(file, 'utf8');
    writeFileSync(file, text.replace('"n":"e7"', '"n":"e8"'));
    await assert.rejects(open(dir), (e) => e instanceof KeyshardError && e.code === 'FAILED_PRECONDITION' && /record 7: leaf hash/.test(e.message));
    writeFileSync(file, text.split('\n').slice(0, 25).join('\n') + '\n');
    await assert.rejects(open(dir), /records 25\.\.29 are missing/);
  });

  it('rotates its signing key: checkpoints of both keys verify by key id', async () => {
    const dir = await filled(5);
    const second = newSigner();
    const log = await open(dir, { signer: second });
    await log.append([ev('after-rotation')]);
    await log.close();
    const keys = loadPublicKeys(path.join(dir, 'keys'));
    assert.deepEqual([...keys.keys()].sort(), [signer.keyId, second.keyId].sort());
    const stored = readFileSync(path.join(dir, 'checkpoints.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(new Set(stored.map((c) => c.key_id)), new Set([signer.keyId, second.keyId]));
    for (const c of stored) assert.equal(checkpointProblem(c, keys), undefined);
    const v = verifyLogDir(dir, trusting(signer, second));
    assert.deepEqual([v.ok, v.records, v.checkpoints], [true, 6, stored.length]);
  });

  it('reports each newly stored record once it is durable, with its index; duplicates are not reported', async () => {
    const seen: { index: number; id: string; durable: boolean }[] = [];
    let log: AuditLog | undefined;
    log = await open(tmp(), {
      onCommitted: (records) => {
        for (const r of records) seen.push({ index: r.index, id: r.event.id, durable: log!.size > r.index });
        throw new Error('an observer that throws changes nothing');
      },
    });
    await Promise.all([log.append([ev('a'), ev('b')]), log.append([ev('b'), ev('c')])]);
    const r = await log.append([ev('a'), ev('d')]);
    assert.deepEqual([r.firstIndex, r.count], [3, 1]);
    await log.close();
    assert.deepEqual(seen, [
      { index: 0, id: 'a', durable: true },
      { index: 1, id: 'b', durable: true },
      { index: 2, id: 'c', durable: true },
      { index: 3, id: 'd', durable: true },
    ]);
  });
});

describe('offline verifier: tampering names the first bad index', () => {
  const copyOf = (src: string) => {
    const d = tmp();
    cpSync(src, d, { recursive: true, verbatimSymlinks: true });
    return d;
  };
  const edit = (dir: string, fn: (lines: string[]) => string[]) => {
    const file = segmentFiles(dir)[0]!;
    writeFileSync(file, `${fn(readFileSync(file, 'utf8').split('\n').filter(Boolean)).join('\n')}\n`);
  };

  it('appendRecords refuses a batch with a stored or repeated id whole, and forgets the ids it took', async () => {
    const log = await open(tmp());
    await log.append([ev('a'), ev('b')]);
    const lines = (first: number, ids: string[]) => encodeRecords(first, ids.map((id) => encodeEntry(ev(id))));
    await assert.rejects(log.appendRecords(2, lines(2, ['c', 'a'])), /record 3: event id is already stored \(at index 0\)/);
    await assert.rejects(log.appendRecords(2, lines(2, ['x', 'x'])), /record 3: event id is already stored \(at index 2\)/);
    assert.equal(log.size, 2);
    assert.ok(!log.hasId('c') && !log.hasId('x'), 'the refused batches left no id behind');
    assert.equal((await log.appendRecords(2, lines(2, ['c', 'x']))).count, 2);
    assert.equal((await log.append([ev('c'), ev('d')])).count, 1, 'c is stored: resent, it is skipped');
    await log.close();
    // Reopened, every id is known again from the records.
    const again = await open(log.dataDir);
    assert.ok(['a', 'b', 'c', 'x', 'd'].every((id) => again.hasId(id)));
    await again.close();
  });

  it('reopens a log of 200,000 records and reads across it (every offset was spread into one push(): past ~120 k records the sink could not start)', async () => {
    const dir = tmp();
    const log = await open(dir);
    for (let b = 0; b < 200; b++) await log.append(Array.from({ length: 1000 }, (_, i) => ev(`b${b}-${i}`)));
    await log.close();
    const again = await open(dir);
    assert.equal(again.size, 200_000);
    const read: string[] = [];
    for await (const r of again.records(131_070, 131_075)) read.push(`${r.index}:${r.event.id}`);
    assert.deepEqual(read, ['131070:b131-70', '131071:b131-71', '131072:b131-72', '131073:b131-73', '131074:b131-74']);
    await again.close();
  });

  it('OffsetList keeps every offset across its chunks', () => {
    const list = new OffsetList();
    for (let i = 0; i < 200_000; i++) list.push(i * 300 + 7);
    assert.equal(list.length, 200_000);
    for (const i of [0, 65_535, 65_536, 131_072, 199_999]) assert.equal(list.at(i), i * 300 + 7);
    assert.throws(() => list.at(200_000), RangeError);
  });

  it('finds a flipped byte, a deleted record, a reordered pair and a truncated tail', async () => {
    const src = await filled(40);
    assert.equal(verifyLogDir(src, trusting(signer)).ok, true);
    const cases: [string, (l: string[]) => string[], number, RegExp][] = [
      ['flip', (l) => l.map((x, i) => (i === 17 ? x.replace('"e17"', '"e1\u0037 "') : x)), 17, /leaf hash|canonical/],
      ['delete', (l) => l.filter((_, i) => i !== 23), 23, /expected index 23, found 24/],
      ['reorder', (l) => l.map((x, i) => l[i === 5 ? 6 : i === 6 ? 5 : i]!), 5, /expected index 5, found 6/],
      ['truncate', (l) => l.slice(0, 31), 31, /were removed/],
    ];
    for (const [name, fn, index, reason] of cases) {
      const d = copyOf(src);
      edit(d, fn);
      const v = verifyLogDir(d, trusting(signer));
      assert.equal(v.ok, false, name);
      assert.equal(v.firstBadIndex, index, `${name}: ${v.reason}`);
      assert.match(v.reason!, reason, name);
    }
  });

  it('catches a consistent rewrite (renumbered indexes, recomputed leaves) through the signed checkpoints', async () => {
    const dir = tmp();
    const log = await open(dir);
    await log.append(Array.from({ length: 10 }, (_, i) => ev(`e${i}`)));
    await log.persistCheckpoint();
    await log.append(Array.from({ length: 10 }, (_, i) => ev(`e${i + 10}`)));
    const held = await log.freshCheckpoint(); // e.g. a receipt an auditor kept
    await log.close();
    // Remove record 13 and rewrite everything after it so each record verifies on its own.
    edit(dir, (l) =>
      l.filter((_, i) => i !== 13).map((x, i) => {
        const event = JSON.parse(x).event;
        return `{"index":${i},"leaf":"${leafHash(canonicalJson(event)).toString('hex')}","event":${canonicalJson(event)}}`;
      }),
    );
    const cps = path.join(dir, 'checkpoints.log');
    writeFileSync(cps, readFileSync(cps, 'utf8').split('\n').slice(0, 2).join('\n') + '\n'); // drop the later checkpoints too
    const alone = verifyLogDir(dir, trusting(signer));
    assert.equal(alone.ok, true, 'without a checkpoint held elsewhere, a cut tail looks like a shorter log');
    const v = verifyLogDir(dir, { ...trusting(signer), checkpoint: held });
    assert.deepEqual([v.ok, v.firstBadIndex], [false, 19]);
    assert.match(v.reason!, /covers 20 records, the log holds 19/);
  });
});
