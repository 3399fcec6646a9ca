/**
 * The Merkle tree against the frozen vector ../vectors/merkle.json (VECTORS.md, "Merkle
 * tree"): the Certificate Transparency reference leaves, subtree hashes and roots, and every
 * inclusion and consistency proof of the trees of sizes 1..8, recomputed and verified.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MerkleTree, leafHash, verifyConsistency, verifyInclusion } from './merkle.ts';
import { loadVectors } from './test-vectors.ts';

const vector = loadVectors<{
  leaf_inputs_hex: string[];
  leaf_hashes_hex: string[];
  subtree_hashes_hex: string[][];
  roots_hex: string[];
  inclusion: { index: number; tree_size: number; proof_hex: string[] }[];
  consistency: { first: number; second: number; proof_hex: string[] }[];
}>('merkle.json');

const unhex = (s: string) => Buffer.from(s, 'hex');
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const entries = vector.leaf_inputs_hex.map(unhex);

function treeOf(d: Buffer[]): MerkleTree {
  const t = new MerkleTree();
  for (const e of d) t.appendLeafHash(leafHash(e));
  return t;
}

describe('Merkle tree (frozen vector packages/audit-log/vectors/merkle.json)', () => {
  const t = treeOf(entries);

  it('gives the leaf hashes, the perfect subtree hashes and the root of every size of the vector', () => {
    assert.deepEqual(entries.map((e) => hex(leafHash(e))), vector.leaf_hashes_hex);
    // Level h, node j: MTH of the perfect subtree over entries [j·2^h, (j+1)·2^h).
    vector.subtree_hashes_hex.forEach((level, h) =>
      level.forEach((expected, j) => assert.equal(hex(treeOf(entries.slice(j * 2 ** h, (j + 1) * 2 ** h)).root()), expected, `level ${h} node ${j}`)),
    );
    assert.deepEqual(vector.roots_hex.map((_, n) => hex(t.root(n))), vector.roots_hex);
  });

  it('makes every inclusion proof of the vector, and each verifies', () => {
    for (const v of vector.inclusion) {
      assert.deepEqual(t.inclusionProof(v.index, v.tree_size).map(hex), v.proof_hex, `PATH(${v.index}, ${v.tree_size})`);
      assert.ok(verifyInclusion(v.index, v.tree_size, unhex(vector.leaf_hashes_hex[v.index]!), v.proof_hex.map(unhex), unhex(vector.roots_hex[v.tree_size]!)));
    }
  });

  it('makes every consistency proof of the vector, and each verifies', () => {
    for (const v of vector.consistency) {
      assert.deepEqual(t.consistencyProof(v.first, v.second).map(hex), v.proof_hex, `PROOF(${v.first}, ${v.second})`);
      assert.ok(verifyConsistency(v.first, v.second, unhex(vector.roots_hex[v.first]!), unhex(vector.roots_hex[v.second]!), v.proof_hex.map(unhex)));
    }
  });
});
