/**
 * Offline verification of an audit chain file, without a running sink (e.g. on a copy
 * taken for an investigation). Also a CLI:
 *   node --import tsx services/audit-sink/src/verify.ts <dataDir>/audit.log [tree_size:root_hash]
 * prints a JSON result; exits 0 when the chain verifies (and contains the given checkpoint,
 * as returned by GetCheckpoint), 1 otherwise. A chain that verifies on its own proves nothing
 * about records cut from its tail or a wholesale rewrite: that needs a checkpoint kept elsewhere.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GENESIS, scanChain } from './chain-log.ts';

export interface VerifyResult {
  ok: boolean;
  records: number;
  headHash?: string;
  firstBadIndex?: number;
  reason?: string;
}

export interface Checkpoint {
  treeSize: number;
  rootHash: string; // hex
}

export function verifyChainFile(file: string, checkpoint?: Checkpoint): VerifyResult {
  let atCheckpoint: string | undefined = checkpoint?.treeSize === 0 ? GENESIS.toString('hex') : undefined;
  const scan = scanChain(file, (index, hash) => {
    if (checkpoint && index === checkpoint.treeSize - 1) atCheckpoint = hash.toString('hex');
  });
  const headHash = scan.headHash.toString('hex');
  if (scan.bad) return { ok: false, records: scan.records, headHash, firstBadIndex: scan.bad.index, reason: scan.bad.reason };
  if (checkpoint && atCheckpoint !== checkpoint.rootHash.toLowerCase()) {
    const reason = atCheckpoint === undefined ? 'log is shorter than the checkpoint' : 'log does not contain the checkpoint';
    return { ok: false, records: scan.records, headHash, reason };
  }
  // A torn final line is a crash artefact the sink drops on open (it was never acknowledged):
  // the chain is still valid, but say so.
  const reason = scan.tornBytes > 0 ? `torn final line (${scan.tornBytes} bytes, never acknowledged)` : undefined;
  return { ok: true, records: scan.records, headHash, ...(reason ? { reason } : {}) };
}

function cli(argv: string[]): number {
  const [file, cp] = argv;
  const m = cp === undefined ? undefined : /^(\d+):([0-9a-fA-F]{64})$/.exec(cp);
  if (!file || (cp !== undefined && !m)) {
    process.stderr.write('usage: verify.ts <audit.log> [tree_size:root_hash]\n');
    return 2;
  }
  const r = verifyChainFile(file, m ? { treeSize: Number(m[1]), rootHash: m[2]! } : undefined);
  process.stdout.write(`${JSON.stringify(r)}\n`);
  return r.ok ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = cli(process.argv.slice(2));
}
