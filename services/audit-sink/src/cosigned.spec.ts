/**
 * CosignedStore alone (the AddCosignature scope refusal and its recording: e2e.spec.ts): what it
 * writes, when it refuses, and how it reads DIR/cosigned.log back at start-up.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { COSIGNED_FILE, MerkleTree, checkpointNote, cosign, cosignedLine, keyIdOf, leafHash, signCheckpoint, toCosignedMsg, witnessName, type CosignedCheckpoint } from '@keyshard/audit-log';
import { KeyshardError } from '@keyshard/errors';
import { CosignedStore, MIN_WRITE_INTERVAL_MS } from './cosigned.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'cosigned-spec-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const sink = generateKeyPairSync('ed25519');
const keys = new Map([[keyIdOf(sink.publicKey), sink.publicKey]]);
const witness = generateKeyPairSync('ed25519').privateKey;
const tree = new MerkleTree();
for (let i = 0; i < 8; i++) tree.appendLeafHash(leafHash(`e${i}`));
const log = { get size() { return tree.size; }, rootAt: (n: number) => tree.root(n) };
const T = 1_800_000_000;

const cosigned = (cn: string, size: number, time: number): CosignedCheckpoint => {
  const checkpoint = signCheckpoint(sink.privateKey, keyIdOf(sink.publicKey), size, tree.root(size), new Date(time * 1000));
  const note = checkpointNote(checkpoint);
  return { checkpoint, note, cosignatures: [cosign(witness, witnessName(cn), note, time)] };
};
const msg = (c: CosignedCheckpoint) => toCosignedMsg(c) as Parameters<CosignedStore['add']>[0];
const refused = (reason: string) => (e: unknown) => e instanceof KeyshardError && e.reason === reason;

describe('CosignedStore', () => {
  it('writes only what is newer (a larger tree, or a refresh of the same tree with a later time), at most once per caller per interval; never a time from the future', async () => {
    const d = path.join(dir, 'a');
    mkdirSync(d);
    let now = 0;
    const store = await CosignedStore.open(d, keys, { nowMs: () => now, nowSeconds: () => T + 100 });
    const lines = () => readFileSync(path.join(d, COSIGNED_FILE), 'utf8').split('\n').filter(Boolean).length;
    assert.deepEqual(await store.add(msg(cosigned('coordinator-1', 4, T)), 'coordinator-1', log), { written: true });
    assert.deepEqual(await store.add(msg(cosigned('coordinator-1', 4, T)), 'coordinator-1', log), { written: false }, 'the same again: accepted, not written');
    assert.deepEqual(await store.add(msg(cosigned('coordinator-1', 3, T)), 'coordinator-1', log), { written: false }, 'older: not written');
    await assert.rejects(store.add(msg(cosigned('coordinator-1', 8, T + 1)), 'coordinator-1', log), refused('AUDIT_QUOTA'));
    assert.deepEqual(await store.add(msg(cosigned('coordinator-2', 8, T + 1)), 'coordinator-2', log), { written: true }, 'another caller: its own interval');
    now += MIN_WRITE_INTERVAL_MS;
    assert.deepEqual(await store.add(msg(cosigned('coordinator-1', 4, T + 60)), 'coordinator-1', log), { written: true }, 'a refresh: same tree, later time');
    now += MIN_WRITE_INTERVAL_MS;
    await assert.rejects(store.add(msg(cosigned('coordinator-1', 8, T + 100 + 301)), 'coordinator-1', log), /ahead of the sink's clock/);
    const two = cosigned('coordinator-1', 8, T + 70);
    await assert.rejects(store.add(msg({ ...two, cosignatures: [...two.cosignatures, ...two.cosignatures] }), 'coordinator-1', log), /exactly one/);
    await assert.rejects(store.add(msg(cosigned('coordinator-2', 8, T + 70)), 'coordinator-1', log), /only the cosignatures of its own witness/);
    assert.equal(lines(), 3);
    assert.deepEqual(store.latest().map((c) => [c.cosignatures![0]!.split(' ')[1], Number(c.checkpoint!.tree_size)]), [[witnessName('coordinator-1'), 4], [witnessName('coordinator-2'), 8]]);
    await store.close();
  });

  it('reads cosigned.log back line by line: the last line of each witness; an oversized, garbled or torn line is skipped', async () => {
    const d = path.join(dir, 'b');
    mkdirSync(d);
    const file = path.join(d, COSIGNED_FILE);
    appendFileSync(file, cosignedLine(cosigned('coordinator-1', 8, T)));
    appendFileSync(file, `${'x'.repeat(200_000)}\n`); // far over a line's size: skipped without being held whole
    appendFileSync(file, 'not json\n');
    appendFileSync(file, cosignedLine(cosigned('coordinator-1', 5, T + 60))); // a later acceptance (e.g. after a witness reset)
    appendFileSync(file, cosignedLine(cosigned('coordinator-2', 8, T)).slice(0, 50)); // torn
    const store = await CosignedStore.open(d, keys);
    const latest = store.latest();
    assert.deepEqual(latest.map((c) => [c.cosignatures![0]!.split(' ')[1], Number(c.checkpoint!.tree_size)]), [[witnessName('coordinator-1'), 5]]);
    await store.close();
  });
});
