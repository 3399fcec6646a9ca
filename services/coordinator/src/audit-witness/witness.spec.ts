/**
 * The witness against a real etcd (TestEtcd) and a LABELLED FAKE sink: `TreeSink` below answers
 * the witness's checkpoint probe the way AuditClient.checkpoint does (a signed checkpoint of its
 * Merkle tree with PROOF(known size, size), checked by a real CheckpointTrust), over a tree the
 * test grows, rolls back or forks. What is real: etcd, the trust checks, Ed25519 cosignatures,
 * the forward-only store transactions. The end-to-end attack with the real sink is
 * test/audit-witness.test.ts.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '@keyshard/config';
import { TestEtcd } from '@keyshard/devcluster/test-etcd';
import {
  CheckpointTrust, MerkleTree, checkpointNote, cosign, cosignatureTime, keyIdOf, leafHash, parseVkey, signCheckpoint, verifyCosignedCheckpoint, type CosignedCheckpoint, type SignedCheckpoint,
} from '@keyshard/audit-log';
import { paths, type Namespace } from '@keyshard/store';
import { AuditWitness, type WitnessedSink } from './witness.ts';
import { WitnessStore, decideStore, type ResetRecord } from './witness-store.ts';
import { RecordIntegrity, type IntegrityViolation } from '../cluster/record-integrity.ts';
import { Seal } from '../cluster/seal.ts';
import { loadOrCreateWitnessKey } from './witness-key.ts';

const sinkKey = generateKeyPairSync('ed25519');
const sinkKeyId = keyIdOf(sinkKey.publicKey);
/** Another replica of a replicated audit log: its own checkpoint key, the same log. */
const replica2Key = generateKeyPairSync('ed25519');
const replica2KeyId = keyIdOf(replica2Key.publicKey);
const sinkKeys = new Map([
  [sinkKeyId, sinkKey.publicKey],
  [replica2KeyId, replica2Key.publicKey],
]);
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
  events: { operation: string; details?: Record<string, string> }[] = [];
  failRecords = false;
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
  async record(e: { operation: string; details?: Record<string, string> }): Promise<void> {
    if (this.trust.problem || this.failRecords) throw new Error('not trusted');
    this.recorded.push(e.operation);
    this.events.push(e);
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
    assert.deepEqual(published.map((p) => p.checkpoint.tree_size), [4], 'published at most once per COSIGNATURE_PUBLISH_INTERVAL_MS (the sink takes no more): 10 waits for the next round after it');
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

  /** A witness on its own namespace, with a clock and (optionally) record MACs. */
  const witnessIn = (space: Namespace, cn: string, sink: TreeSink, o: { now?: () => number; macs?: RecordIntegrity; published?: CosignedCheckpoint[] } = {}) => {
    const key = loadOrCreateWitnessKey(path.join(dir, `${cn}.pem`), cn);
    return new AuditWitness({
      key, store: new WitnessStore(space, cn, o.macs), sink, sinkKeys, log, intervalMs: 60_000, refreshSeconds: 60,
      publish: async (c) => void (o.published ?? published).push(c),
      sinkCheckpoint: async () => signed(sink.tree),
      ...(o.now ? { now: o.now } : {}),
    });
  };
  const recordIn = async (space: Namespace, cn: string) => JSON.parse((await space.get(paths.witness(cn)).string())!) as CosignedCheckpoint;

  it('an idle log: the same tree is cosigned again with a fresh time every refreshSeconds (stored and published only then), so auditors can measure freshness on cosignature times', async () => {
    const space = etcd.namespace('refresh');
    const sink = new TreeSink();
    let now = 1_800_000_000;
    const mine: CosignedCheckpoint[] = [];
    const w = witnessIn(space, 'coordinator-1', sink, { now: () => now, published: mine });
    await w.anchor();
    sink.tree = treeOf(4);
    await w.tick();
    const first = await recordIn(space, 'coordinator-1');
    assert.equal(cosignatureTime(first.cosignatures[0]!), now);
    now += 30;
    await w.tick();
    assert.equal(mine.length, 1, 'not yet: nothing written or published');
    assert.equal(cosignatureTime((await recordIn(space, 'coordinator-1')).cosignatures[0]!), now - 30);
    now += 31; // 61 s after the first cosignature, the tree still of size 4
    await w.tick();
    const refreshed = await recordIn(space, 'coordinator-1');
    assert.equal(refreshed.checkpoint.tree_size, 4);
    assert.equal(cosignatureTime(refreshed.cosignatures[0]!), now, 'stored with the fresh time');
    assert.equal(mine.length, 2);
    assert.equal(cosignatureTime(mine[1]!.cosignatures[0]!), now, 'published with the fresh time');
  });

  it('ATTACK (sink, split view): a peer\'s record of the same sink key and size with another root raises the fork alarm', async () => {
    const space = etcd.namespace('split');
    const sink = new TreeSink();
    const w = witnessIn(space, 'coordinator-1', sink);
    await w.anchor();
    sink.tree = treeOf(6);
    await w.tick();
    assert.equal(w.alarm, undefined);
    // What coordinator-2's witness stored after the sink showed it history B of the same size.
    const other = signed(treeOf(6, 'b'));
    await space.put(paths.witness('coordinator-2')).value(JSON.stringify({ checkpoint: other, note: checkpointNote(other), cosignatures: [] }));
    await w.tick();
    assert.match(w.alarm!, /forked \(split view\): the sink signed two trees of size 6 with different roots/);
    assert.ok(sink.distrusted, 'the producer refuses too');
  });

  it('ATTACK (a replicated audit log\'s replica, split view): another replica\'s checkpoint of the same size with another root raises the fork alarm', async () => {
    const space = etcd.namespace('split-replicas');
    const sink = new TreeSink();
    const w = witnessIn(space, 'coordinator-1', sink);
    await w.anchor();
    sink.tree = treeOf(6);
    await w.tick();
    // The same history signed by the other replica is no fork.
    const same = signed(treeOf(6), replica2Key.privateKey, replica2KeyId);
    await space.put(paths.witness('coordinator-2')).value(JSON.stringify({ checkpoint: same, note: checkpointNote(same), cosignatures: [] }));
    await w.tick();
    assert.equal(w.alarm, undefined, 'two replicas signing the same tree');
    // What coordinator-3's witness stored after replica 2, leading, showed it history B of the same size.
    const other = signed(treeOf(6, 'b'), replica2Key.privateKey, replica2KeyId);
    await space.put(paths.witness('coordinator-3')).value(JSON.stringify({ checkpoint: other, note: checkpointNote(other), cosignatures: [] }));
    await w.tick();
    assert.match(w.alarm!, /forked \(split view\): the sink signed two trees of size 6 with different roots \(keys /);
    assert.ok(sink.distrusted, 'the producer refuses too');
  });

  it('ATTACK (etcd operator): a reset record without a valid MAC, or naming a checkpoint the sink keys do not verify, is not followed; a real reset keeps the old records, is MAC\'d and every follower audits it', async () => {
    const space = etcd.namespace('reset');
    const seal = new Seal();
    seal.open(randomBytes(32), new Map([[1, randomBytes(32)]]), seal.generation, randomBytes(32));
    const reports: IntegrityViolation[] = [];
    const macs = new RecordIntegrity(seal, (v) => reports.push(v));
    const sink1 = new TreeSink();
    const sink2 = new TreeSink();
    const w1 = witnessIn(space, 'coordinator-1', sink1, { macs });
    const w2 = witnessIn(space, 'coordinator-2', sink2, { macs });
    await w1.anchor();
    await w2.anchor();
    sink1.tree = treeOf(5);
    sink2.tree = treeOf(5);
    await w1.tick();
    await w2.tick();
    sink1.tree = treeOf(3);
    sink2.tree = treeOf(3);
    await w1.tick();
    await w2.tick();
    assert.ok(w1.alarm && w2.alarm);

    // Before the fix: this record (no MAC) cleared coordinator-2's alarm with only a warn log.
    const forged: ResetRecord = { epoch: 1, anchor: signed(treeOf(3)), by: 'etcd-operator', time: new Date().toISOString() };
    await space.put(paths.witnessReset).value(JSON.stringify(forged));
    await w2.tick();
    assert.ok(w2.alarm, 'not followed');
    assert.ok(sink2.distrusted);
    assert.deepEqual(reports.map((r) => [r.path, r.reason]), [[paths.witnessReset, 'no MAC']], 'reported as an integrity failure');
    const stranger = generateKeyPairSync('ed25519');
    await space.put(paths.witnessReset).value(macs.stamp(paths.witnessReset, { ...forged, epoch: 2, anchor: signed(treeOf(3), stranger.privateKey, keyIdOf(stranger.publicKey)) }));
    await w2.tick();
    assert.ok(w2.alarm, 'a checkpoint the sink keys do not verify: not followed');

    const r = await w1.reset('admin', true);
    assert.equal(r.anchor.tree_size, 3);
    const kv = (await space.get(paths.witnessReset).exec()).kvs[0]!;
    const stored = JSON.parse(kv.value.toString()) as ResetRecord & { mac?: string };
    assert.ok(stored.mac, 'MAC\'d: written by an unsealed replica');
    assert.deepEqual(Object.keys(stored.previous ?? {}).sort(), ['coordinator-1', 'coordinator-2'], 'the old cosigned checkpoints are kept in the reset record');
    assert.equal(stored.previous!['coordinator-1']!.checkpoint.tree_size, 5);
    assert.equal(stored.history?.[0]?.by, 'etcd-operator', 'the reset before it, in the history');

    // A follower that cannot audit the follow does not follow (and tries again).
    sink2.failRecords = true;
    await w2.tick();
    assert.ok(sink2.distrusted, 'still refusing');
    sink2.failRecords = false;
    await w2.tick();
    assert.equal(w2.alarm, undefined);
    assert.equal(sink2.distrusted, undefined);
    const followed = sink2.events.find((e) => e.operation === 'witness.reset.followed');
    assert.deepEqual(
      { revision: followed?.details?.revision, size: followed?.details?.anchor_tree_size, root: followed?.details?.anchor_root, by: followed?.details?.by },
      { revision: kv.mod_revision, size: '3', root: r.anchor.root_hash, by: 'admin' },
    );
    assert.deepEqual(sink1.recorded, ['witness.reset'], 'the replica that reset audits witness.reset, not a follow');
  });
});
