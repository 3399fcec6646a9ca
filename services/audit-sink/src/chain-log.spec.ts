import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { KeyshardError } from '@keyshard/errors';
import { canonicalJson } from '@keyshard/crypto';
import { ChainLog, GENESIS, chainHash } from './chain-log.ts';
import { verifyChainFile } from './verify.ts';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'chainlog-'));
  dirs.push(d);
  return d;
};
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const ev = (id: string, extra: Record<string, unknown> = {}) => ({ id, operation: 'keys.Encrypt', details: { n: id }, ...extra });
const lines = (dir: string) => readFileSync(path.join(dir, 'audit.log'), 'utf8').split('\n').filter(Boolean);

async function filled(n: number): Promise<string> {
  const dir = tmp();
  const log = await ChainLog.open(dir);
  await log.append(Array.from({ length: n }, (_, i) => ev(`e${i}`)));
  await log.close();
  return dir;
}

describe('canonicalJson', () => {
  it('sorts keys recursively, drops undefined, adds no whitespace', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [1, 'x'], c: null }, u: undefined }), '{"a":{"c":null,"d":[1,"x"]},"b":1}');
  });
  it('hash is SHA-256(prev || canonical event), genesis prev = 32 zero bytes', async () => {
    const dir = await filled(1);
    const rec = JSON.parse(lines(dir)[0]!);
    assert.equal(rec.prev, '0'.repeat(64));
    assert.equal(rec.hash, chainHash(GENESIS, canonicalJson(ev('e0'))).toString('hex'));
  });
});

describe('ChainLog', () => {
  it('keeps everything across close and reopen, and continues the chain', async () => {
    const dir = tmp();
    let log = await ChainLog.open(dir);
    const a = await log.append([ev('a'), ev('b')]);
    const b = await log.append([ev('c')]);
    assert.deepEqual([a.firstIndex, a.count, b.firstIndex, b.count], [0, 2, 2, 1]);
    const head = log.headHash;
    await log.close();

    log = await ChainLog.open(dir);
    assert.equal(log.size, 3);
    assert.equal(log.headHash, head);
    const c = await log.append([ev('d')]);
    assert.equal(c.firstIndex, 3);
    const read = [];
    for await (const r of log.records()) read.push([r.index, r.event.id]);
    assert.deepEqual(read, [[0, 'a'], [1, 'b'], [2, 'c'], [3, 'd']]);
    await log.close();
    assert.deepEqual(verifyChainFile(path.join(dir, 'audit.log')), { ok: true, records: 4, headHash: c.headHash });
  });

  it('truncates a torn final line on open (it was never acknowledged)', async () => {
    const dir = await filled(2);
    const file = path.join(dir, 'audit.log');
    const good = readFileSync(file).length;
    appendFileSync(file, '{"index":2,"prev":"ab12');
    const offline = verifyChainFile(file);
    assert.equal(offline.ok, true);
    assert.match(offline.reason ?? '', /torn final line/);

    const log = await ChainLog.open(dir);
    assert.equal(log.openInfo.truncatedBytes, 23);
    assert.equal(readFileSync(file).length, good);
    assert.equal((await log.append([ev('next')])).firstIndex, 2);
    await log.close();
    assert.equal(verifyChainFile(file).records, 3);
  });

  it('detects a modified record, names its index and refuses to open', async () => {
    const dir = await filled(5);
    const file = path.join(dir, 'audit.log');
    const ls = lines(dir);
    ls[2] = ls[2]!.replace('keys.Encrypt', 'keys.Decrypt');
    writeFileSync(file, `${ls.join('\n')}\n`);
    const r = verifyChainFile(file);
    assert.equal(r.ok, false);
    assert.equal(r.firstBadIndex, 2);
    assert.equal(r.records, 2);
    assert.match(r.reason ?? '', /hash/);
    await assert.rejects(ChainLog.open(dir), (e: unknown) => e instanceof KeyshardError && e.code === 'FAILED_PRECONDITION' && /record 2/.test(e.message));
  });

  it('detects a deleted record and a garbled complete line', async () => {
    const dir = await filled(4);
    const file = path.join(dir, 'audit.log');
    const ls = lines(dir);
    writeFileSync(file, `${[ls[0], ls[2], ls[3]].join('\n')}\n`);
    assert.equal(verifyChainFile(file).firstBadIndex, 1);
    writeFileSync(file, `${[ls[0], ls[1], '{"index":2,"pr', ls[3]].join('\n')}\n`);
    assert.deepEqual([verifyChainFile(file).firstBadIndex, verifyChainFile(file).reason], [2, 'record is not valid JSON']);
    // Re-hashing a record without its successors still breaks the next link.
    const r1 = JSON.parse(ls[1]!);
    r1.event.result = 'ok';
    const h = chainHash(Buffer.from(r1.prev, 'hex'), canonicalJson(r1.event)).toString('hex');
    const forged = `{"index":1,"prev":"${r1.prev}","hash":"${h}","event":${canonicalJson(r1.event)}}`;
    writeFileSync(file, `${[ls[0], forged, ls[2], ls[3]].join('\n')}\n`);
    assert.deepEqual([verifyChainFile(file).firstBadIndex, verifyChainFile(file).reason], [2, 'prev does not match the previous record hash']);
  });

  it('checks a checkpoint: the log must contain the recorded head at that size', async () => {
    const dir = tmp();
    const log = await ChainLog.open(dir);
    await log.append([ev('a'), ev('b')]);
    const cp = { treeSize: log.size, rootHash: log.headHash };
    await log.append([ev('c')]);
    await log.close();
    const file = path.join(dir, 'audit.log');
    assert.equal(verifyChainFile(file, cp).ok, true);
    assert.equal(verifyChainFile(file, { treeSize: 4, rootHash: cp.rootHash }).reason, 'log is shorter than the checkpoint');
    assert.equal(verifyChainFile(file, { treeSize: 1, rootHash: cp.rootHash }).reason, 'log does not contain the checkpoint');
  });

  it('group commit: 200 concurrent appends share few fsyncs; indexes are sequential and unique', async () => {
    const dir = tmp();
    const log = await ChainLog.open(dir);
    // Half in one burst, half trickled in while fsyncs are in progress.
    const pending = Array.from({ length: 100 }, (_, i) => log.append([ev(`burst${i}`)]));
    for (let i = 0; i < 100; i++) {
      pending.push(log.append([ev(`trickle${i}`)]));
      if (i % 10 === 0) await new Promise((r) => setImmediate(r));
    }
    const results = await Promise.all(pending);
    const indexes = results.map((r) => r.firstIndex).sort((a, b) => a - b);
    assert.deepEqual(indexes, Array.from({ length: 200 }, (_, i) => i));
    assert.ok(results.every((r) => r.count === 1));
    assert.ok(log.syncs >= 1 && log.syncs <= 20, `expected few fsyncs, got ${log.syncs}`);
    await log.close();
    assert.deepEqual([verifyChainFile(path.join(dir, 'audit.log')).ok, lines(dir).length], [true, 200]);
  });

  it('stores an event id once, within a batch, across batches and across reopen', async () => {
    const dir = tmp();
    let log = await ChainLog.open(dir);
    assert.equal((await log.append([ev('x'), ev('x')])).count, 1);
    const again = await log.append([ev('x'), ev('y')]);
    assert.deepEqual([again.firstIndex, again.count], [1, 1]);
    await log.close();
    log = await ChainLog.open(dir);
    const dup = await log.append([ev('y')]);
    assert.deepEqual([dup.firstIndex, dup.count, dup.headHash], [2, 0, log.headHash]);
    await log.close();
    assert.equal(lines(dir).length, 2);
  });

  it('rejects an event without an id without failing the rest of its group', async () => {
    const dir = tmp();
    const log = await ChainLog.open(dir);
    const bad = log.append([{ id: '' }]);
    const good = log.append([ev('ok')]);
    await assert.rejects(bad, (e: unknown) => e instanceof KeyshardError && e.code === 'INVALID_ARGUMENT');
    assert.equal((await good).count, 1);
    await log.close();
  });

  it('refuses a second writer on the same data dir', async () => {
    const dir = tmp();
    const log = await ChainLog.open(dir);
    await assert.rejects(ChainLog.open(dir), /already open/);
    await log.close();
    await (await ChainLog.open(dir)).close();
  });
});
