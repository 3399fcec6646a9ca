/**
 * RFC 6962 §2.1 / RFC 9162 §2.1 Merkle tree hashing, proofs and their verification.
 *
 *   leaf hash  = SHA-256(0x00 || entry)
 *   node hash  = SHA-256(0x01 || left || right)
 *   MTH({})    = SHA-256("")
 *   MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n
 *
 * `MerkleTree` keeps every perfect, aligned subtree hash (2n hashes for n leaves), so a root,
 * an inclusion proof or a consistency proof of any size costs O(log² n) hash operations.
 * The verifiers are RFC 9162 §2.1.3.2 and §2.1.4.2; they need nothing but hashes, so an
 * auditor holding a checkpoint can check a receipt or a log extension without the log.
 * The 0x00/0x01 prefixes keep a leaf from ever being read as an interior node (second
 * preimage); the split at a power of two (not the midpoint) is what makes roots agree
 * with every other RFC 6962 implementation.
 */
import crypto, { createHash } from 'node:crypto';

export const HASH_BYTES = 32;
const LEAF_PREFIX = 0x00;
const NODE_PREFIX = 0x01;

export const EMPTY_ROOT: Buffer = createHash('sha256').digest();

// One-shot SHA-256 of one contiguous input (node >= 20.12): no Hash object per call, which
// is most of the cost of hashing a 300-byte entry or a 65-byte node. Same digest either way.
const sha256: (data: Uint8Array) => Buffer = crypto.hash
  ? (data) => crypto.hash('sha256', data, 'buffer')
  : (data) => createHash('sha256').update(data).digest();

// `0x00 || entry` (a string entry as UTF-8) is written into this, reused (hashing is
// synchronous, so no two calls use it at once): no buffer per leaf on the append path.
const leafScratch = Buffer.allocUnsafe(64 * 1024);

export function leafHash(entry: Uint8Array | string): Buffer {
  if (typeof entry === 'string') {
    // A UTF-16 code unit takes at most 3 bytes of UTF-8; a larger entry gets its own buffer.
    const input = entry.length * 3 + 1 <= leafScratch.length ? leafScratch : Buffer.allocUnsafe(entry.length * 3 + 1);
    input[0] = LEAF_PREFIX;
    const n = input.write(entry, 1, 'utf8');
    return sha256(input.subarray(0, n + 1));
  }
  const input = entry.length + 1 <= leafScratch.length ? leafScratch.subarray(0, entry.length + 1) : Buffer.allocUnsafe(entry.length + 1);
  input[0] = LEAF_PREFIX;
  input.set(entry, 1);
  return sha256(input);
}

const NODE_PREFIX_BYTE = Buffer.from([NODE_PREFIX]);
// `0x01 || left || right`, reused for every interior node: hashing is synchronous, so no two
// calls ever use it at once.
const nodeInput = Buffer.alloc(1 + 2 * HASH_BYTES, NODE_PREFIX);

export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  // Verifiers may be handed a leaf of another length: hash exactly what was given.
  if (left.length !== HASH_BYTES || right.length !== HASH_BYTES) return createHash('sha256').update(NODE_PREFIX_BYTE).update(left).update(right).digest();
  nodeInput.set(left, 1);
  nodeInput.set(right, 1 + HASH_BYTES);
  return sha256(nodeInput);
}

/** The largest power of two strictly less than n (n ≥ 2). */
export function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** A growable list of 32-byte hashes in fixed chunks: no object per hash, no big copies. */
class HashList {
  private static readonly PER_CHUNK = 4096;
  private readonly chunks: Buffer[] = [];
  length = 0;

  push(h: Uint8Array): void {
    const c = Math.floor(this.length / HashList.PER_CHUNK);
    if (c === this.chunks.length) this.chunks.push(Buffer.allocUnsafe(HashList.PER_CHUNK * HASH_BYTES));
    this.chunks[c]!.set(h, (this.length % HashList.PER_CHUNK) * HASH_BYTES);
    this.length += 1;
  }

  get(i: number): Buffer {
    const off = (i % HashList.PER_CHUNK) * HASH_BYTES;
    return this.chunks[Math.floor(i / HashList.PER_CHUNK)]!.subarray(off, off + HASH_BYTES);
  }
}

/** An append-only Merkle tree over leaf hashes; roots and proofs for any earlier size too. */
export class MerkleTree {
  /** levels[h][j] = hash of the perfect subtree over leaves [j·2^h, (j+1)·2^h). */
  private readonly levels: HashList[] = [new HashList()];

  get size(): number {
    return this.levels[0]!.length;
  }

  leaf(index: number): Buffer {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) throw new RangeError(`no leaf ${index}`);
    return this.levels[0]!.get(index);
  }

  appendLeafHash(h: Uint8Array): void {
    if (h.length !== HASH_BYTES) throw new RangeError('a leaf hash is 32 bytes');
    this.levels[0]!.push(h);
    // Each completed pair finishes a perfect subtree one level up.
    for (let lvl = 0; this.levels[lvl]!.length % 2 === 0; lvl++) {
      const below = this.levels[lvl]!;
      const n = below.length;
      (this.levels[lvl + 1] ??= new HashList()).push(nodeHash(below.get(n - 2), below.get(n - 1)));
    }
  }

  /** MTH(D[0:size]). */
  root(size = this.size): Buffer {
    this.checkSize(size);
    return size === 0 ? EMPTY_ROOT : this.rangeHash(0, size);
  }

  /** PATH(index, D[0:size]), RFC 6962 §2.1.1. */
  inclusionProof(index: number, size = this.size): Buffer[] {
    this.checkSize(size);
    if (!Number.isInteger(index) || index < 0 || index >= size) throw new RangeError(`index ${index} is not in a tree of size ${size}`);
    const proof: Buffer[] = [];
    this.path(index, 0, size, proof);
    return proof;
  }

  /** PROOF(first, D[0:second]), RFC 6962 §2.1.2; empty when first is 0 or equals second. */
  consistencyProof(first: number, second = this.size): Buffer[] {
    this.checkSize(second);
    if (!Number.isInteger(first) || first < 0 || first > second) throw new RangeError(`size ${first} is not within ${second}`);
    const proof: Buffer[] = [];
    if (first > 0 && first < second) this.subproof(first, 0, second, true, proof);
    return proof;
  }

  private checkSize(size: number): void {
    if (!Number.isInteger(size) || size < 0 || size > this.size) throw new RangeError(`tree size ${size} is beyond ${this.size}`);
  }

  /** MTH(D[lo:hi]) for a subtree of the RFC decomposition: left parts are perfect and aligned. */
  private rangeHash(lo: number, hi: number): Buffer {
    const n = hi - lo;
    if ((n & (n - 1)) === 0 && lo % n === 0) return this.levels[Math.log2(n)]!.get(lo / n);
    const k = splitPoint(n);
    return nodeHash(this.rangeHash(lo, lo + k), this.rangeHash(lo + k, hi));
  }

  private path(m: number, lo: number, hi: number, out: Buffer[]): void {
    const n = hi - lo;
    if (n === 1) return;
    const k = splitPoint(n);
    if (m < k) {
      this.path(m, lo, lo + k, out);
      out.push(this.rangeHash(lo + k, hi));
    } else {
      this.path(m - k, lo + k, hi, out);
      out.push(this.rangeHash(lo, lo + k));
    }
  }

  private subproof(m: number, lo: number, hi: number, whole: boolean, out: Buffer[]): void {
    const n = hi - lo;
    if (m === n) {
      if (!whole) out.push(this.rangeHash(lo, hi));
      return;
    }
    const k = splitPoint(n);
    if (m <= k) {
      this.subproof(m, lo, lo + k, whole, out);
      out.push(this.rangeHash(lo + k, hi));
    } else {
      this.subproof(m - k, lo + k, hi, false, out);
      out.push(this.rangeHash(lo, lo + k));
    }
  }
}

const equal = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(a, b) === 0;

/** RFC 9162 §2.1.3.2: does `proof` show `leaf` at `index` in the tree of `size` with `root`? */
export function verifyInclusion(index: number, size: number, leaf: Uint8Array, proof: readonly Uint8Array[], root: Uint8Array): boolean {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) return false;
  let fn = BigInt(index);
  let sn = BigInt(size - 1);
  let r: Uint8Array = leaf;
  for (const p of proof) {
    if (p.length !== HASH_BYTES || sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equal(r, root);
}

/** RFC 9162 §2.1.4.2: is the tree (second, secondRoot) an append-only extension of (first, firstRoot)? */
export function verifyConsistency(
  first: number,
  second: number,
  firstRoot: Uint8Array,
  secondRoot: Uint8Array,
  proof: readonly Uint8Array[],
): boolean {
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(second) || first < 0 || first > second) return false;
  if (first === second) return proof.length === 0 && equal(firstRoot, secondRoot);
  if (first === 0) return proof.length === 0; // the empty tree is a prefix of every tree
  if (proof.length === 0 || proof.some((p) => p.length !== HASH_BYTES)) return false;
  const path = (first & (first - 1)) === 0 ? [firstRoot, ...proof] : [...proof];
  let fn = BigInt(first - 1);
  let sn = BigInt(second - 1);
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr: Uint8Array = path[0]!;
  let sr: Uint8Array = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equal(fr, firstRoot) && equal(sr, secondRoot);
}
