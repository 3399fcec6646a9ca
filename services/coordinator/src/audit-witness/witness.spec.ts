/**
 * The witness against a real etcd (TestEtcd) and a LABELLED FAKE sink: `TreeSink` below answers
 * the witness's checkpoint probe the way AuditClient.checkpoint does (a signed checkpoint of its
 * Merkle tree with PROOF(known size, size), checked by a real CheckpointTrust), over a tree the
 * test grows, rolls back or forks. What is real: etcd, the trust checks, Ed25519 cosignatures,
 * the forward-only store transactions. The end-to-end attack with the real sink is
 * test/audit-witness.test.ts.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '@keyshard/config';
import { TestEtcd } from '@keyshard/devcluster/test-etcd';
import {
  CheckpointTrust, MerkleTree, checkpointNote, cosign, keyIdOf, leafHash, parseVkey, signCheckpoint, verifyCosignedCheckpoint, type CosignedCheckpoint, type SignedCheckpoint,
} from '@keyshard/audit-log';
import { paths, type Namespace } from '@keyshard/store';
import { AuditWitness, type WitnessedSink } from './witness.ts';
import { WitnessStore, decideStore } from './witness-store.ts';
import { loadOrCreateWitnessKey } from './witness-key.ts';

const sinkKey = generateKeyPairSync('ed25519');
const sinkKeyId = keyIdOf(sinkKey.publicKey);
const sinkKeys = new Map([[sinkKeyId, sinkKey.publicKey]]);
const log = createLogger('witness-spec', 'silent');

function treeOf(n: number, tag = 'e'): MerkleTree {
  const t = new MerkleTree();
  for (let i = 0; i < n; i++) t.appendLeafHash(leafHash(`${tag}${i}`));
  return t;
}

const signed = (t: MerkleTree, key: KeyObject = sinkKey.privateKey, id = sinkKeyId): SignedCheckpoint => signCheckpoint(key, id, t.size, t.root());

/** FAKE sink (see the header): a tree the test sets, probed through a real CheckpointTrust. */
class TreeSink implements WitnessedSink {
  tree = treeOf(0);
  readonly trust = new CheckpointTrust(sinkKeys);
  recorded: string[] = [];
  seed = (cp: SignedCheckpoint) => this.trust.seed(cp);
  reanchor = (cp: SignedCheckpoint) => this.trust.reanchor(cp);
  distrust = (r: string) => this.trust.distrust(r);
  get distrusted() {
    return this.trust.problem;
  }
  async checkpoint(): Promise<SignedCheckpoint> {
    const known = this.trust.knownSize;
    const cp = signed(this.tree);
    const proof = known > 0 && known < this.tree.size ? this.tree.consistencyProof(known, this.tree.size) : [];
    const problem = this.trust.accept({ firstIndex: this.tree.size, count: 0, headHash: cp.root_hash, checkpoint: cp, consistency: proof }, known);
    if (problem) throw new Error(problem);
    return cp;
  }
  async record(e: { operation: string }): Promise<void> {
    if (this.trust.problem) throw new Error('not trusted');
    this.recorded.push(e.operation);
  }
}

describe('audit witness', () => {
  let etcd: TestEtcd;
  let ns: Namespace;
  const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-witness-'));
  before(async () => {
    etcd = await TestEtcd.start();
    ns = etcd.namespace('w');
  });
  after(async () => {
    await etcd.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const published: CosignedCheckpoint[] = [];
  const witnessOf = (cn: string, sink: TreeSink) => {
    const key = loadOrCreateWitnessKey(path.join(dir, `${cn}.pem`), cn);
    const w = new AuditWitness({
      key, store: new WitnessStore(ns, cn), sink, sinkKeys, log, intervalMs: 60_000,
      publish: async (c) => void published.push(c),
      sinkCheckpoint: async () => signed(sink.tree),
    });
    return { w, key };
  };
  const stored = async (cn: string) => {
    const raw = await ns.get(paths.witness(cn)).string();
    return raw ? (JSON.parse(raw) as CosignedCheckpoint) : undefined;
  };

  it('makes its key 0600 and refuses one readable by others', () => {
    const file = path.join(dir, 'k.pem');
    const k = loadOrCreateWitnessKey(file, 'coordinator-9');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(parseVkey(k.vkey).name, 'keyshard.dev/witness/coordinator-9');
    const loose = path.join(dir, 'loose.pem');
    writeFileSync(loose, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o644 });
    assert.throws(() => loadOrCreateWitnessKey(loose, 'c'), /readable by its owner only/);
  });

  it('decideStore: forward only; another sink\'s record is replaced; a larger or forked stored tree is a problem', () => {
    const c = (t: MerkleTree, key = sinkKey.privateKey, id = sinkKeyId): CosignedCheckpoint => ({ checkpoint: signed(t, key, id), note: '', cosignatures: [] });
    assert.deepEqual(decideStore(undefined, c(treeOf(3)), sinkKeys), { write: true });
    assert.deepEqual(decideStore(c(treeOf(3)), c(treeOf(5)), sinkKeys), { write: true });
    assert.deepEqual(decideStore(c(treeOf(5)), c(treeOf(5)), sinkKeys), { write: false });
    assert.match((decideStore(c(treeOf(5)), c(treeOf(5, 'x')), sinkKeys) as { problem: string }).problem, /forked/);
    assert.match((decideStore(c(treeOf(9)), c(treeOf(5)), sinkKeys) as { problem: string }).problem, /rolled back.*size 9.*5/);
    const other = generateKeyPairSync('ed25519');
    assert.deepEqual(decideStore(c(treeOf(9), other.privateKey, keyIdOf(other.publicKey)), c(treeOf(5)), sinkKeys), { write: true }, 'a record of another sink (restored backup, new sink) is no anchor');
  });

  it('cosigns each larger verified checkpoint, stores it forward-only in etcd and publishes it; the cosignature verifies under its vkey', async () => {
    const sink = new TreeSink();
    const { w, key } = witnessOf('coordinator-1', sink);
    await w.anchor();
    sink.tree = treeOf(4);
    await w.tick();
    sink.tree = treeOf(10);
    await w.tick();
    const rec = (await stored('coordinator-1'))!;
    assert.equal(rec.checkpoint.tree_size, 10);
    assert.equal(rec.note, checkpointNote(rec.checkpoint));
    assert.deepEqual(verifyCosignedCheckpoint(rec, sinkKeys, [parseVkey(key.vkey)], 1).problem, undefined);
    assert.deepEqual(published.map((p) => p.checkpoint.tree_size).slice(-2), [4, 10]);
    assert.equal(w.status().cosigned_tree_size, 10);
    // Forward only: a write of a smaller tree is refused as a problem, never stored.
    const r = await new WitnessStore(ns, 'coordinator-1').store({ checkpoint: signed(treeOf(7)), note: '', cosignatures: [] }, sinkKeys, '0');
    assert.match((r as { problem: string }).problem, /rolled back/);
    assert.equal((await stored('coordinator-1'))!.checkpoint.tree_size, 10);
  });

  it('after a restart the producer is anchored on the etcd record: a rolled-back sink alarms at the first probe; a fork too', async () => {
    const sink = new TreeSink();
    const { w } = witnessOf('coordinator-1', sink); // the record of size 10 from the test before
    await w.anchor();
    assert.equal(sink.trust.knownSize, 10, 'seeded from etcd, not from the sink');
    sink.tree = treeOf(6); // the sink's folder replaced by an older copy
    await w.tick();
    assert.match(w.alarm!, /rolled back: signed size 6 after 10/);
    assert.match(w.status().alarm, /rolled back/);
    await assert.rejects(sink.record({ operation: 'keys.CreateKey' }), /not trusted/);
    assert.equal((await stored('coordinator-1'))!.checkpoint.tree_size, 10, 'the record is kept');

    const forked = new TreeSink();
    const f = witnessOf('coordinator-1', forked).w;
    await f.anchor();
    forked.tree = treeOf(12, 'x'); // larger, but not an extension of the cosigned tree
    await f.tick();
    assert.match(f.alarm!, /not an extension/);
  });

  it('a replica without a record anchors on the largest peer record; reset re-anchors every witness and is audited', async () => {
    const sink2 = new TreeSink();
    const { w: w2 } = witnessOf('coordinator-2', sink2);
    await w2.anchor();
    assert.equal(sink2.trust.knownSize, 10, "anchored on coordinator-1's record");
    sink2.tree = treeOf(3);
    await w2.tick();
    assert.match(w2.alarm!, /rolled back/);

    const sink1 = new TreeSink();
    const { w: w1 } = witnessOf('coordinator-1', sink1);
    await w1.anchor();
    sink1.tree = treeOf(3);
    await w1.tick();
    assert.ok(w1.alarm);
    await assert.rejects(w1.reset('admin', false), /confirm/);
    const r = await w1.reset('admin', true);
    assert.equal(r.previous?.tree_size, 10);
    assert.equal(r.anchor.tree_size, 3);
    assert.deepEqual(sink1.recorded, ['witness.reset'], 'audited through the new anchor');
    assert.equal(w1.alarm, undefined);
    await w1.tick();
    assert.equal((await stored('coordinator-1'))!.checkpoint.tree_size, 3, 'records deleted by the reset, then written from the new anchor');
    // The other replica follows the reset at its next round.
    sink2.tree = treeOf(5);
    await w2.tick();
    assert.equal(w2.alarm, undefined);
    assert.equal(sink2.distrusted, undefined);
    assert.equal((await stored('coordinator-2'))!.checkpoint.tree_size, 5);
    await sink2.record({ operation: 'keys.CreateKey' });
  });

  it('a cosignature uses the C2SP shape: a note signature line of the witness name', () => {
    const k = loadOrCreateWitnessKey(path.join(dir, 'shape.pem'), 'coordinator-1');
    const line = cosign(k.privateKey, k.name, checkpointNote(signed(treeOf(2))), 1_700_000_000);
    assert.match(line, /^\u2014 keyshard\.dev\/witness\/coordinator-1 [A-Za-z0-9+/]+=*$/);
  });
});
