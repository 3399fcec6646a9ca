import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { EMPTY_ROOT, MerkleTree, leafHash, nodeHash, verifyConsistency, verifyInclusion } from './merkle.ts';

const unhex = (s: string) => Buffer.from(s, 'hex');
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// Known answers: the Certificate Transparency reference leaves and tree heads for RFC 6962
// (used as data only). ROOTS[n] is MTH of the first n entries.
const CT_ENTRIES = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map(unhex);
const CT_ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];
const CT_INCLUSION = [
  { index: 0, size: 8, proof: ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'] },
  { index: 5, size: 8, proof: ['bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'] },
];

// An independent implementation, straight from RFC 6962 §2.1's recursive definitions over a
// plain array of entries (no stored levels, no shortcuts).
const sha = (...parts: Uint8Array[]) => parts.reduce((h, p) => h.update(p), createHash('sha256')).digest();
const k = (n: number) => 2 ** Math.ceil(Math.log2(n) - 1);
const MTH = (d: Buffer[]): Buffer =>
  d.length === 0 ? sha() : d.length === 1 ? sha(Buffer.from([0]), d[0]!) : sha(Buffer.from([1]), MTH(d.slice(0, k(d.length))), MTH(d.slice(k(d.length))));
const PATH = (m: number, d: Buffer[]): Buffer[] => {
  if (d.length <= 1) return [];
  const s = k(d.length);
  return m < s ? [...PATH(m, d.slice(0, s)), MTH(d.slice(s))] : [...PATH(m - s, d.slice(s)), MTH(d.slice(0, s))];
};
const SUBPROOF = (m: number, d: Buffer[], b: boolean): Buffer[] => {
  if (m === d.length) return b ? [] : [MTH(d)];
  const s = k(d.length);
  return m <= s ? [...SUBPROOF(m, d.slice(0, s), b), MTH(d.slice(s))] : [...SUBPROOF(m - s, d.slice(s), false), MTH(d.slice(0, s))];
};

function treeOf(entries: Buffer[]): MerkleTree {
  const t = new MerkleTree();
  for (const e of entries) t.appendLeafHash(leafHash(e));
  return t;
}

const flip = (b: Uint8Array, bit = 0) => {
  const c = Buffer.from(b);
  c[bit >> 3]! ^= 1 << (bit & 7);
  return c;
};

describe('Merkle tree (RFC 6962 / 9162)', () => {
  it('matches the reference tree heads for sizes 0..8 and the reference inclusion proofs', () => {
    assert.equal(hex(EMPTY_ROOT), CT_ROOTS[0]);
    const t = treeOf(CT_ENTRIES);
    for (let n = 0; n <= 8; n++) assert.equal(hex(t.root(n)), CT_ROOTS[n], `size ${n}`);
    for (const v of CT_INCLUSION) {
      assert.deepEqual(t.inclusionProof(v.index, v.size).map(hex), v.proof);
      assert.ok(verifyInclusion(v.index, v.size, leafHash(CT_ENTRIES[v.index]!), v.proof.map(unhex), unhex(CT_ROOTS[v.size]!)));
    }
  });

  it('leaf and node hashes are SHA-256(0x00 || entry) and SHA-256(0x01 || left || right) for any input', () => {
    // Short and long (beyond the reused 64 KiB buffer), ASCII and not, then short again.
    for (const text of ['', 'a', '{"id":"é✓"}', '\ud83d\ude00'.repeat(30_000), 'x'.repeat(70_000), 'b']) {
      const bytes = Buffer.from(text, 'utf8');
      const expected = hex(sha(Buffer.from([0]), bytes));
      assert.equal(hex(leafHash(text)), expected);
      assert.equal(hex(leafHash(bytes)), expected);
    }
    const [a, b] = [sha(Buffer.from('a')), sha(Buffer.from('b'))];
    assert.equal(hex(nodeHash(a, b)), hex(sha(Buffer.from([1]), a, b)));
    assert.equal(hex(nodeHash(a, b)), hex(nodeHash(a, b)), 'the reused input buffer carries nothing over');
    assert.equal(hex(nodeHash(a.subarray(1), b)), hex(sha(Buffer.from([1]), a.subarray(1), b)), 'verifiers may pass leaves of other lengths');
  });

  const entries = Array.from({ length: 33 }, (_, i) => Buffer.from(`event-${i}`));
  const tree = treeOf(entries);

  it('roots and proofs equal those of the independent implementation, for every size and index', () => {
    for (let n = 0; n <= entries.length; n++) {
      const d = entries.slice(0, n);
      assert.equal(hex(tree.root(n)), hex(MTH(d)));
      for (let m = 0; m < n; m++) assert.deepEqual(tree.inclusionProof(m, n).map(hex), PATH(m, d).map(hex), `PATH(${m}, ${n})`);
      for (let m = 1; m < n; m++) assert.deepEqual(tree.consistencyProof(m, n).map(hex), SUBPROOF(m, d, true).map(hex), `PROOF(${m}, ${n})`);
    }
  });

  it('every inclusion proof verifies; a wrong leaf, index, root or path element does not', () => {
    for (let n = 1; n <= entries.length; n++) {
      const root = tree.root(n);
      for (let m = 0; m < n; m++) {
        const proof = tree.inclusionProof(m, n);
        const leaf = tree.leaf(m);
        assert.ok(verifyInclusion(m, n, leaf, proof, root), `${m} in ${n}`);
        assert.ok(!verifyInclusion(m, n, flip(leaf), proof, root));
        assert.ok(!verifyInclusion(m, n, leaf, proof, flip(root)));
        if (n > 1) assert.ok(!verifyInclusion((m + 1) % n, n, leaf, proof, root));
        proof.forEach((_, i) => assert.ok(!verifyInclusion(m, n, leaf, proof.map((p, j) => (j === i ? flip(p, 255) : p)), root)));
        assert.ok(!verifyInclusion(m, n, leaf, [...proof, root], root));
      }
    }
  });

  it('every consistency proof verifies; a wrong root or path element does not (sizes are bound by the signed checkpoint)', () => {
    for (let n = 1; n <= entries.length; n++) {
      for (let m = 0; m <= n; m++) {
        const proof = tree.consistencyProof(m, n);
        const [r1, r2] = [tree.root(m), tree.root(n)];
        assert.ok(verifyConsistency(m, n, r1, r2, proof), `${m} -> ${n}`);
        if (m === 0) continue;
        assert.ok(!verifyConsistency(m, n, flip(r1), r2, proof));
        if (m < n) {
          assert.ok(!verifyConsistency(m, n, r1, flip(r2), proof));
          proof.forEach((_, i) => assert.ok(!verifyConsistency(m, n, r1, r2, proof.map((p, j) => (j === i ? flip(p, 7) : p)))));
          assert.ok(!verifyConsistency(m, n, r1, r2, []));
        }
      }
    }
  });

  it('a different leaf anywhere changes the root (no two histories share a head)', () => {
    const n = entries.length;
    const root = tree.root();
    for (let i = 0; i < n; i++) {
      const other = [...entries];
      other[i] = Buffer.concat([other[i]!, Buffer.from('!')]);
      assert.notEqual(hex(treeOf(other).root()), hex(root), `changed ${i}`);
      const swapped = [...entries];
      [swapped[i], swapped[(i + 1) % n]] = [swapped[(i + 1) % n]!, swapped[i]!];
      assert.notEqual(hex(treeOf(swapped).root()), hex(root), `swapped ${i}`);
    }
  });
});
