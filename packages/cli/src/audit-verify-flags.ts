/**
 * `keyshard audit verify`'s trust roots and inputs from its flags, checked before anything is
 * verified: a missing or wrong trust root is a usage error (exit 2) naming the flag, never a
 * verdict about the log. Trust never comes from the log folder: a trust file or sink key inside
 * it is refused (whoever controls the folder could have put it there), and <log-dir>/keys is
 * not read as trust at all.
 */
import { realpathSync } from 'node:fs';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import {
  addSinkKey, addWitnesses, logDirOf, checkpointFromJson, checkQuorum, parseCosignedFile, parseTrustFile, type CosignedCheckpoint, type SignedCheckpoint, type TrustRoots, type Witness,
} from '@keyshard/audit-log';
import { InvalidArgumentError } from 'commander';
import { UsageError } from './output.ts';
import { parseDuration, readFlagFile } from './parse.ts';

export interface VerifyFlags {
  trust?: string;
  sinkKey?: string[];
  witness?: string[];
  witnessQuorum?: number;
  cosigned?: string[];
  checkpoint?: string;
  maxAge: number | 'none';
}

/**
 * The default --max-age: a log whose witness quorum cosigned nothing it contains within the last
 * hour fails. Witnesses re-cosign at least every minute even when the log is idle
 * (witnessRefreshSeconds), so an hour is far above the refresh and still bounds how long a cut
 * tail stays unnoticed (verify.ts: freshness is measured on witness cosignature times only).
 */
export const DEFAULT_MAX_AGE = { seconds: 3_600, text: '1h' } as const;

export const TRUST_ROOTS_NEEDED =
  'audit verify needs the trust roots from outside the log folder: --trust FILE (sinkKeys, witnesses, witnessQuorum), or --sink-key FILE with --witness VKEY (--witness-quorum N)';

const real = (p: string) => {
  try {
    return realpathSync(p);
  } catch {
    return path.resolve(p);
  }
};

/** Refuses a trust root that lies inside the log folder. */
function outside(flag: string, file: string, logDir: string): void {
  const rel = path.relative(real(logDir), real(file));
  if (rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel)))
    throw new UsageError(`${flag} ${file} is inside the log folder ${logDir}: trust roots must come from outside it (whoever controls the folder could have put it there)`);
}

/** The trust roots the flags give: the trust file's, plus --sink-key and --witness; --witness-quorum overrides. */
export function trustFromFlags(logPath: string, f: VerifyFlags): TrustRoots {
  const logDir = logDirOf(logPath);
  if (!f.trust && !f.sinkKey?.length) throw new UsageError(TRUST_ROOTS_NEEDED);
  let base: TrustRoots = { sinkKeys: new Map<string, KeyObject>(), witnesses: [] as Witness[], witnessQuorum: 1 };
  if (f.trust) {
    outside('--trust', f.trust, logDir);
    try {
      base = parseTrustFile(readFlagFile('--trust', f.trust));
    } catch (e) {
      if (e instanceof UsageError) throw e;
      throw new UsageError(`--trust ${f.trust}: ${(e as Error).message}`);
    }
  }
  for (const file of f.sinkKey ?? []) {
    outside('--sink-key', file, logDir);
    try {
      addSinkKey(base.sinkKeys, readFlagFile('--sink-key', file), 'the file');
    } catch (e) {
      if (e instanceof UsageError) throw e;
      throw new UsageError(`--sink-key ${file}: ${(e as Error).message}`);
    }
  }
  try {
    addWitnesses(base.witnesses, f.witness ?? []);
  } catch (e) {
    throw new UsageError(`--witness: ${(e as Error).message}`);
  }
  const quorum = f.witnessQuorum ?? base.witnessQuorum;
  try {
    checkQuorum(quorum, base.witnesses.length);
  } catch (e) {
    throw new UsageError(
      `--witness-quorum ${quorum}: ${(e as Error).message}${f.witnessQuorum === undefined ? ' (the default is 1: give --witness VKEY, or --witness-quorum 0 to rely on the sink key alone)' : ''}`,
    );
  }
  return { ...base, witnessQuorum: quorum };
}

/** --max-age: a duration (parse.ts) in seconds, or `none` for no limit (an archived copy). */
export function maxAge(value: string): number | 'none' {
  if (value === 'none') return 'none';
  try {
    return parseDuration(value);
  } catch (e) {
    throw new InvalidArgumentError(`${(e as Error).message}, or none`);
  }
}

/** --cosigned FILE…: each file's cosigned checkpoints (JSON object, array or lines); a malformed file is a usage error. */
export function cosignedFromFlags(files: readonly string[]): { source: string; items: CosignedCheckpoint[] }[] {
  return files.map((file) => {
    try {
      return { source: `--cosigned ${file}`, items: parseCosignedFile(readFlagFile('--cosigned', file)) };
    } catch (e) {
      if (e instanceof UsageError) throw e;
      throw new UsageError(`--cosigned ${file}: ${(e as Error).message}`);
    }
  });
}

/** --checkpoint FILE: a checkpoint from `keyshard audit checkpoint --json` (or its stored line). */
export function heldCheckpoint(file: string): SignedCheckpoint {
  const text = readFlagFile('--checkpoint', file);
  try {
    return checkpointFromJson(JSON.parse(text));
  } catch (e) {
    throw new UsageError(`--checkpoint ${file}: ${e instanceof SyntaxError ? 'not JSON' : (e as Error).message}`);
  }
}
