/**
 * Offline verification of an audit log directory, without a running sink (e.g. a copy taken
 * for an investigation). It recomputes every record's leaf and the whole RFC 6962 tree, checks
 * every stored checkpoint's signature and root, the consistency between successive checkpoints
 * (RFC 9162 §2.1.4), and optionally a checkpoint kept elsewhere (`--checkpoint`), which is what
 * catches a wholesale rewrite or a cut tail. Reports the first bad index and why.
 *
 * Also a CLI (`keyshard audit verify` wraps it):
 *   node packages/audit-log/dist/verify.js <dataDir | dataDir/audit.log> [checkpoint.json] [--key pub.pem]…
 * prints a JSON result; exits 0 when the log verifies, 1 otherwise.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KeyObject } from 'node:crypto';
import { checkpointProblem, type SignedCheckpoint } from './checkpoint.ts';
import { ACTIVE_LINK, CHECKPOINTS_FILE, KEYS_DIR, loadPublicKeys, readCheckpointFile, scanSegments } from './log-dir.ts';
import { MerkleTree, verifyConsistency } from './merkle.ts';

export interface VerifyOptions {
  /** A checkpoint obtained from the sink earlier and kept outside the log directory. */
  checkpoint?: SignedCheckpoint;
  /** Trusted public key files or directories; default: the log directory's own keys/. */
  keys?: string[];
}

export interface VerifyResult {
  ok: boolean;
  records: number;
  rootHash: string;
  checkpoints: number; // stored checkpoints checked
  firstBadIndex?: number;
  reason?: string;
  notes: string[];
}

export function verifyLogDir(dataDir: string, opts: VerifyOptions = {}): VerifyResult {
  if (path.basename(dataDir) === ACTIVE_LINK) dataDir = path.dirname(dataDir);
  const tree = new MerkleTree();
  const ids = new Map<string, number>();
  let dup: { index: number; first: number } | undefined;
  const scan = scanSegments(dataDir, (index, rec) => {
    const seen = ids.get(rec.event.id);
    if (seen !== undefined) dup ??= { index, first: seen };
    ids.set(rec.event.id, index);
    tree.appendLeafHash(rec.leaf);
  });
  const result = (bad?: { index?: number; reason: string }): VerifyResult => ({
    ok: bad === undefined,
    records: tree.size,
    rootHash: tree.root().toString('hex'),
    checkpoints: checked,
    ...(bad ? { firstBadIndex: bad.index, reason: bad.reason } : {}),
    notes,
  });
  const notes: string[] = [];
  let checked = 0;
  if (scan.segments.length === 0) return result({ reason: `no segment files in ${path.join(dataDir, 'segments')}` });
  if (scan.bad) return result(scan.bad);
  if (dup) return result({ index: dup.index, reason: `duplicate event id (first stored at index ${dup.first})` });
  if (scan.tornBytes > 0) notes.push(`torn final line (${scan.tornBytes} bytes, never acknowledged; the sink cuts it on start)`);

  const keys = loadPublicKeys(...(opts.keys?.length ? opts.keys : [path.join(dataDir, KEYS_DIR)]));
  const cps = readCheckpointFile(path.join(dataDir, CHECKPOINTS_FILE));
  if (cps.bad) return result({ reason: `${CHECKPOINTS_FILE} line ${cps.bad.line}: ${cps.bad.reason}` });
  let prev: SignedCheckpoint | undefined;
  for (const [i, c] of cps.checkpoints.entries()) {
    const bad = checkAgainst(tree, c, keys, prev, `checkpoint ${i + 1} of ${CHECKPOINTS_FILE}`);
    if (bad) return result(bad);
    checked += 1;
    prev = c;
  }
  if (checked === 0) notes.push('no stored checkpoint: the records are consistent, but nothing signed vouches for them');
  if (opts.checkpoint) {
    const bad = checkAgainst(tree, opts.checkpoint, keys, undefined, 'the given checkpoint');
    if (bad) return result(bad);
  }
  return result();
}

/**
 * Checks one checkpoint against the recomputed tree; and that it extends `prev` (same log,
 * only appended to). When a root differs, the change lies between the previous good
 * checkpoint and this one: the first index that can be named is prev's size.
 */
function checkAgainst(
  tree: MerkleTree,
  c: SignedCheckpoint,
  keys: ReadonlyMap<string, KeyObject>,
  prev: SignedCheckpoint | undefined,
  what: string,
): { index?: number; reason: string } | undefined {
  const problem = checkpointProblem(c, keys);
  if (problem) return { reason: `${what} (size ${c.tree_size}): ${problem}` };
  if (c.tree_size > tree.size) return { index: tree.size, reason: `${what} covers ${c.tree_size} records, the log holds ${tree.size}: records ${tree.size}..${c.tree_size - 1} were removed` };
  const root = tree.root(c.tree_size);
  if (root.toString('hex') !== c.root_hash) {
    const from = prev?.tree_size ?? 0;
    return { index: from, reason: `${what} (size ${c.tree_size}) has a different root: a record in ${from}..${c.tree_size - 1} was changed, removed or reordered` };
  }
  if (prev) {
    if (c.tree_size < prev.tree_size) return { reason: `${what} has size ${c.tree_size}, smaller than the one before (${prev.tree_size})` };
    const proof = tree.consistencyProof(prev.tree_size, c.tree_size);
    if (!verifyConsistency(prev.tree_size, c.tree_size, Buffer.from(prev.root_hash, 'hex'), root, proof)) {
      return { index: prev.tree_size, reason: `${what} is not consistent with the checkpoint of size ${prev.tree_size}` };
    }
  }
  return undefined;
}

/** Reads a checkpoint file: the stored JSON form, or the proto JSON form (`keyshard audit checkpoint --json`). */
export function readCheckpointJson(file: string): SignedCheckpoint {
  const raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  return {
    tree_size: Number(raw.tree_size),
    root_hash: String(raw.root_hash ?? ''),
    time: String(raw.time ?? ''),
    key_id: String(raw.key_id ?? ''),
    signature: String(raw.signature ?? ''),
  };
}

function cli(argv: string[]): number {
  const keys: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--key' && argv[i + 1]) keys.push(argv[++i]!);
    else rest.push(argv[i]!);
  }
  const [dir, cp] = rest;
  if (!dir || rest.length > 2) {
    process.stderr.write('usage: verify.ts <log-dir> [checkpoint.json] [--key public.pem]...\n');
    return 2;
  }
  const r = verifyLogDir(dir, { keys, ...(cp ? { checkpoint: readCheckpointJson(cp) } : {}) });
  process.stdout.write(`${JSON.stringify(r)}\n`);
  return r.ok ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = cli(process.argv.slice(2));
}
