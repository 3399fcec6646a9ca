/**
 * CheckpointTrust on its own: every way an acknowledgement's checkpoint can fail to show that
 * the batch is in an append-only extension of what the producer saw (RFC 6962 §2.1.2), with a
 * real tree and real Ed25519 signatures. Each refused case was accepted before (no check).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { keyIdOf, signCheckpoint } from './checkpoint.ts';
import { CheckpointTrust, type AckReceipt } from './checkpoint-trust.ts';
import { MerkleTree, leafHash } from './merkle.ts';

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const keyId = keyIdOf(publicKey);
const keys = new Map([[keyId, publicKey]]);

function treeOf(n: number, tag = 'e'): MerkleTree {
  const t = new MerkleTree();
  for (let i = 0; i < n; i++) t.appendLeafHash(leafHash(`${tag}${i}`));
  return t;
}

/** An honest acknowledgement of events [first, size) of `t`, with PROOF(known, size). */
function ack(t: MerkleTree, first: number, known: number): AckReceipt {
  const cp = signCheckpoint(privateKey, keyId, t.size, t.root());
  return { firstIndex: first, count: t.size - first, headHash: cp.root_hash, checkpoint: cp, consistency: known > 0 && known < t.size ? t.consistencyProof(known, t.size) : [] };
}

describe('CheckpointTrust', () => {
  it('accepts a growing log with consistency proofs and an unchanged one without', () => {
    const trust = new CheckpointTrust(keys);
    const t = treeOf(3);
    assert.equal(trust.accept(ack(t, 0, 0), trust.knownSize), undefined);
    for (let n = 4; n <= 40; n += 5) {
      const bigger = treeOf(n);
      assert.equal(trust.accept(ack(bigger, n - 1, trust.knownSize), trust.knownSize), undefined, `size ${n}`);
    }
    const same = treeOf(39);
    assert.equal(trust.accept({ ...ack(same, 39, 0), count: 0 }, trust.knownSize), undefined, 'all duplicates: same checkpoint');
    assert.equal(trust.last?.tree_size, 39);
  });

  const anchored = () => {
    const trust = new CheckpointTrust(keys);
    assert.equal(trust.accept(ack(treeOf(8), 0, 0), 0), undefined);
    return trust;
  };

  it('refuses a missing checkpoint, a bad signature and an unknown key', () => {
    assert.match(anchored().accept({ ...ack(treeOf(9), 8, 8), checkpoint: undefined }, 8)!, /no checkpoint/);
    const bad = ack(treeOf(9), 8, 8);
    bad.checkpoint!.signature = Buffer.alloc(64).toString('base64');
    assert.match(anchored().accept(bad, 8)!, /signature does not verify/);
    const other = generateKeyPairSync('ed25519');
    const foreign = ack(treeOf(9), 8, 8);
    foreign.checkpoint = signCheckpoint(other.privateKey, keyIdOf(other.publicKey), 9, treeOf(9).root());
    foreign.headHash = foreign.checkpoint.root_hash;
    assert.match(anchored().accept(foreign, 8)!, /no public key with id/);
  });

  it('refuses a receipt outside the signed tree and a head hash that is not the signed root', () => {
    assert.match(anchored().accept({ ...ack(treeOf(9), 8, 8), count: 5 }, 8)!, /not in the signed tree of size 9/);
    assert.match(anchored().accept({ ...ack(treeOf(9), 8, 8), headHash: '00'.repeat(32) }, 8)!, /head hash differs/);
  });

  it('refuses a rollback, a same-size fork and an extension of another history', () => {
    assert.match(anchored().accept(ack(treeOf(7), 6, 8), 8)!, /rolled back: signed size 7 after 8/);
    assert.match(anchored().accept({ ...ack(treeOf(8, 'x'), 8, 0), count: 0 }, 8)!, /forked: two roots signed for size 8/);
    assert.match(anchored().accept(ack(treeOf(12, 'x'), 8, 8), 8)!, /not an extension/);
    assert.match(anchored().accept({ ...ack(treeOf(12), 8, 8), consistency: [] }, 8)!, /not an extension/);
  });

  it('stays refused after the first failure', () => {
    const trust = anchored();
    assert.match(trust.accept(ack(treeOf(7), 6, 8), 8)!, /rolled back/);
    assert.match(trust.accept(ack(treeOf(9), 8, 8), 8)!, /rolled back/, 'an honest one later does not restore trust');
    assert.equal(trust.last?.tree_size, 8);
  });

  it('needs at least one key', () => {
    assert.throws(() => new CheckpointTrust(new Map()), /at least one/);
  });
  it('seeded on a checkpoint kept elsewhere, the first acknowledgement must extend it; reanchor is the way out', () => {
    const trust = new CheckpointTrust(keys);
    const other = generateKeyPairSync('ed25519');
    assert.match(trust.seed(signCheckpoint(other.privateKey, keyId, 8, treeOf(8).root()))!, /does not verify/);
    assert.equal(trust.seed(signCheckpoint(privateKey, keyId, 8, treeOf(8).root())), undefined);
    assert.match(trust.seed(signCheckpoint(privateKey, keyId, 9, treeOf(9).root()))!, /already anchored/);
    assert.equal(trust.knownSize, 8);
    // Before seeding existed, this first acknowledgement of a smaller tree was the anchor.
    assert.match(trust.accept(ack(treeOf(5), 0, 0), trust.knownSize)!, /rolled back: signed size 5 after 8/);
    assert.match(trust.accept(ack(treeOf(9), 8, 8), 8)!, /rolled back/, 'the first problem is final');
    assert.equal(trust.reanchor(signCheckpoint(privateKey, keyId, 5, treeOf(5).root())), undefined);
    assert.equal(trust.problem, undefined);
    assert.equal(trust.accept(ack(treeOf(7), 5, 5), 5), undefined);
    trust.distrust('etcd holds a larger tree');
    assert.equal(trust.problem, 'etcd holds a larger tree');
  });
});
