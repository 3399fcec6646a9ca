/**
 * What a verifier of an audit log is given from OUTSIDE the log directory (verify.ts): whoever
 * controls the directory can put any key or file in it, so nothing in it is trusted except
 * through signatures made by keys given here.
 *
 * Trust roots (the trust file, kept by the operator outside the log folder; `keyshard dev`
 * writes one as DIR/audit-trust.json of its cluster directory):
 *   {
 *     "sinkKeys": ["-----BEGIN PUBLIC KEY-----\n…"],   // every Ed25519 SPKI PEM that signed checkpoints (checkpoint.ts)
 *     "witnesses": ["<name>+<key id>+<base64>"],        // C2SP signed-note vkeys of the witnesses (cosignature.ts)
 *     "witnessQuorum": 1                                // distinct witnesses that must vouch for the log
 *   }
 * Exactly these three members; sinkKeys non-empty; 0 <= witnessQuorum <= number of witnesses.
 *
 * Cosigned checkpoints (`keyshard audit checkpoint --cosigned --json`, DIR/cosigned.log, etcd):
 * parseCosignedFile reads a JSON object, a JSON array, or JSON lines of CosignedCheckpoint.
 * Byte forms: VECTORS.md §8, vectors/trust.json.
 */
import type { KeyObject } from 'node:crypto';
import { publicKeyFromPem, type SignedCheckpoint } from './checkpoint.ts';
import { MAX_COSIGNATURE_LINE, MAX_COSIGNATURES, parseVkey, type CosignedCheckpoint, type Witness } from './cosignature.ts';

/** Name of the trust file `keyshard dev` writes into its cluster directory. */
export const TRUST_FILE = 'audit-trust.json';

/** Bounds on what a cosigned checkpoint may carry (as the sink's: 16 witness lines of at most 512 characters). */

export interface TrustRoots {
  /** The sink's checkpoint public keys, by key id (checkpoint.ts keyIdOf). */
  sinkKeys: Map<string, KeyObject>;
  witnesses: Witness[];
  witnessQuorum: number;
}

/** The trust file's text for these keys (what `keyshard dev` writes; parseTrustFile reads it back). */
export function trustFileText(sinkKeyPems: readonly string[], witnessVkeys: readonly string[], witnessQuorum: number): string {
  return `${JSON.stringify({ sinkKeys: sinkKeyPems, witnesses: witnessVkeys, witnessQuorum }, null, 2)}\n`;
}

/** Adds one sink public key (SPKI PEM, Ed25519) to `keys`; throws saying why it is not one (never echoing it). */
export function addSinkKey(keys: Map<string, KeyObject>, pem: string, what: string): void {
  if (typeof pem !== 'string' || !pem.includes('-----BEGIN PUBLIC KEY-----'))
    throw new Error(`${what} is not a PEM public key (SPKI): give the sink's public key, never its private key`);
  try {
    const { id, key } = publicKeyFromPem(pem);
    keys.set(id, key);
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}`);
  }
}

/** Adds witness vkeys to `list`; a second key under a name already there is refused (quorums count names). */
export function addWitnesses(list: Witness[], vkeys: readonly string[]): void {
  for (const v of vkeys) {
    const w = parseVkey(v);
    const same = list.find((x) => x.name === w.name);
    if (same && !same.keyId.equals(w.keyId)) throw new Error(`two witness keys named ${w.name}`);
    if (!same) list.push(w);
  }
}

/** Checks a quorum against the witnesses it counts; throws saying what is wrong. */
export function checkQuorum(quorum: number, witnesses: number): void {
  if (!Number.isSafeInteger(quorum) || quorum < 0) throw new Error('witnessQuorum must be a whole number >= 0');
  if (quorum > witnesses) throw new Error(`a witness quorum of ${quorum} needs at least ${quorum} witness keys, ${witnesses} given`);
}

/** Parses a trust file; throws an Error naming the member that is wrong. */
export function parseTrustFile(text: string): TrustRoots {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new Error('not JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('not a JSON object');
  const o = raw as Record<string, unknown>;
  const extra = Object.keys(o).filter((k) => !['sinkKeys', 'witnesses', 'witnessQuorum'].includes(k));
  if (extra.length) throw new Error(`unknown member ${JSON.stringify(extra[0]!.slice(0, 40))} (sinkKeys, witnesses, witnessQuorum)`);
  const strings = (name: string): string[] => {
    const v = o[name];
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw new Error(`${name} must be an array of strings`);
    return v as string[];
  };
  const pems = strings('sinkKeys');
  if (pems.length === 0) throw new Error('sinkKeys is empty: at least the sink\'s current public key is needed');
  const sinkKeys = new Map<string, KeyObject>();
  pems.forEach((pem, i) => addSinkKey(sinkKeys, pem, `sinkKeys[${i}]`));
  const witnesses: Witness[] = [];
  addWitnesses(witnesses, strings('witnesses'));
  const q = o.witnessQuorum;
  if (typeof q !== 'number') throw new Error('witnessQuorum must be a number');
  checkQuorum(q, witnesses.length);
  return { sinkKeys, witnesses, witnessQuorum: q };
}

/** A checkpoint in the stored JSON form or the proto JSON form (tree_size a decimal string). */
export function checkpointFromJson(raw: unknown): SignedCheckpoint {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('checkpoint is not a JSON object');
  const r = raw as Record<string, unknown>;
  const size = typeof r.tree_size === 'string' && /^\d{1,16}$/.test(r.tree_size) ? Number(r.tree_size) : r.tree_size;
  return {
    tree_size: typeof size === 'number' ? size : NaN,
    root_hash: String(r.root_hash ?? ''),
    time: String(r.time ?? ''),
    key_id: String(r.key_id ?? ''),
    signature: String(r.signature ?? ''),
  };
}

function cosignedFromJson(raw: unknown): CosignedCheckpoint {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('not a JSON object');
  const r = raw as Record<string, unknown>;
  if (typeof r.note !== 'string' || r.note.length > 4 * MAX_COSIGNATURE_LINE) throw new Error('note is not a string (a C2SP note body)');
  const lines = r.cosignatures;
  if (!Array.isArray(lines) || !lines.every((l) => typeof l === 'string' && l.length <= MAX_COSIGNATURE_LINE))
    throw new Error(`cosignatures is not an array of signature lines (each at most ${MAX_COSIGNATURE_LINE} characters)`);
  if (lines.length > MAX_COSIGNATURES) throw new Error(`more than ${MAX_COSIGNATURES} cosignatures`);
  return { checkpoint: checkpointFromJson(r.checkpoint), note: r.note, cosignatures: lines as string[] };
}

/**
 * Cosigned checkpoints from a file's text: one JSON object, a JSON array of them, or JSON lines
 * (one object a line; blank lines skipped). Throws naming the item (1-based) that is malformed.
 * Nothing is verified here (verifyCosignedCheckpoint does).
 */
export function parseCosignedFile(text: string): CosignedCheckpoint[] {
  let items: unknown[];
  try {
    const whole: unknown = JSON.parse(text);
    items = Array.isArray(whole) ? whole : [whole];
  } catch {
    items = [];
    for (const [i, line] of text.split('\n').entries()) {
      if (line.trim() === '') continue;
      try {
        items.push(JSON.parse(line));
      } catch {
        throw new Error(`line ${i + 1} is not JSON (expected a JSON object, a JSON array or JSON lines of cosigned checkpoints)`);
      }
    }
  }
  return items.map((item, i) => {
    try {
      return cosignedFromJson(item);
    } catch (e) {
      throw new Error(`item ${i + 1}: ${(e as Error).message}`);
    }
  });
}
