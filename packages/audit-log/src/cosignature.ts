/**
 * Witness cosignatures of the sink's checkpoints, in the shape of C2SP's transparency-log specs:
 *  - the checkpoint a witness cosigns is a C2SP tlog-checkpoint note body (c2sp.org/tlog-checkpoint):
 *      <origin> LF <decimal tree size> LF <base64 root hash> LF
 *    with origin `keyshard.dev/audit/<sink checkpoint key id>` (one origin per sink signing key);
 *  - a cosignature is a C2SP tlog-cosignature v1 Ed25519 note signature (c2sp.org/tlog-cosignature,
 *    c2sp.org/signed-note): the line `— <witness name> base64(key id || u64 BE timestamp || sig)`,
 *    where sig is Ed25519 (RFC 8032) over `cosignature/v1` LF `time <unix seconds>` LF <note body>,
 *    and key id = SHA-256(<name> LF 0x04 <32-byte public key>)[:4];
 *  - a witness's public key travels as a signed-note verifier key (vkey):
 *      <name>+<8 hex digits of key id>+<base64(0x04 || 32-byte public key)>.
 * A cosignature says: as of its time, the witness verified that this is the largest tree head it
 * has seen of that log and that it is consistent with every earlier one it cosigned (RFC 6962
 * §2.1.2 consistency proofs, checked by the witness before it signs).
 *
 * The sink's own checkpoint signature (checkpoint.ts) stays keyshard's format; a CosignedCheckpoint
 * carries both: the sink-signed checkpoint and the witness cosignatures of its note body.
 */
import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import type { pb } from '@keyshard/rpc';
import { checkpointProblem, fromCheckpointMsg, toCheckpointMsg, type SignedCheckpoint } from './checkpoint.ts';

const ED25519_ALG = 0x04; // signed-note signature type of cosignature/v1 (C2SP tlog-cosignature)
const SIG_PREFIX = '\u2014 '; // EM DASH, space: a signed-note signature line
const NAME_RE = /^[\x21-\x2a\x2c-\x7e]{1,128}$/; // signed-note: no spaces, no '+'
// RFC 8410 §4: an Ed25519 SubjectPublicKeyInfo is this DER prefix followed by the 32-byte key.
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** A checkpoint with its witness cosignatures: what etcd stores, auditors fetch and `audit verify --cosigned` reads. */
export interface CosignedCheckpoint {
  checkpoint: SignedCheckpoint;
  /** The C2SP tlog-checkpoint note body of `checkpoint` (checkpointNote). */
  note: string;
  /** Signed-note signature lines, one per witness. */
  cosignatures: string[];
}

/** A witness as verifiers know it: name, key id and Ed25519 public key (parseVkey). */
export interface Witness {
  name: string;
  keyId: Buffer; // 4 bytes
  publicKey: KeyObject;
}

/** Bounds of a published CosignedCheckpoint (the sink refuses more): witness lines, and characters per line or note. */
export const MAX_COSIGNATURES = 16;
export const MAX_COSIGNATURE_LINE = 512;
/** A witness publishes at the sink at most this often, and the sink writes at most one line per caller this often (cosigned.ts). */
export const COSIGNATURE_PUBLISH_INTERVAL_MS = 10_000;

export const witnessName = (coordinatorId: string): string => `keyshard.dev/witness/${coordinatorId}`;
export const logOrigin = (sinkKeyId: string): string => `keyshard.dev/audit/${sinkKeyId}`;

/** The C2SP tlog-checkpoint note body of a sink-signed checkpoint. */
export function checkpointNote(cp: Pick<SignedCheckpoint, 'key_id' | 'tree_size' | 'root_hash'>): string {
  return `${logOrigin(cp.key_id)}\n${cp.tree_size}\n${Buffer.from(cp.root_hash, 'hex').toString('base64')}\n`;
}

function rawPublicKey(publicKey: KeyObject): Buffer {
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new Error('witness keys are Ed25519');
  return publicKey.export({ format: 'der', type: 'spki' }).subarray(SPKI_ED25519_PREFIX.length);
}

function checkName(name: string): void {
  if (!NAME_RE.test(name)) throw new Error(`witness name ${JSON.stringify(name.slice(0, 64))} is not 1..128 printable characters without space or '+'`);
}

/** SHA-256(name || LF || 0x04 || public key)[:4] (C2SP tlog-cosignature, Ed25519). */
export function cosignerKeyId(name: string, publicKey: KeyObject): Buffer {
  return createHash('sha256').update(name, 'utf8').update(Buffer.from([0x0a, ED25519_ALG])).update(rawPublicKey(publicKey)).digest().subarray(0, 4);
}

/** The signed-note verifier key of a witness: name+keyid+base64(0x04 || key). */
export function vkeyOf(name: string, publicKey: KeyObject): string {
  checkName(name);
  const id = cosignerKeyId(name, publicKey).toString('hex');
  return `${name}+${id}+${Buffer.concat([Buffer.from([ED25519_ALG]), rawPublicKey(publicKey)]).toString('base64')}`;
}

/** Parses a vkey; throws saying what is wrong (never echoing more than 64 characters). */
export function parseVkey(vkey: string): Witness {
  // name+keyid+base64: the name has no '+', the base64 key may (signed-note: split at the first two).
  const s = typeof vkey === 'string' ? vkey.trim() : '';
  const i = s.indexOf('+');
  const j = i < 0 ? -1 : s.indexOf('+', i + 1);
  if (j < 0) throw new Error(`not a witness verifier key (name+keyid+base64): ${JSON.stringify(String(vkey).slice(0, 64))}`);
  const [name, idHex, b64] = [s.slice(0, i), s.slice(i + 1, j), s.slice(j + 1)];
  checkName(name);
  const raw = Buffer.from(b64, 'base64');
  if (!/^[0-9a-f]{8}$/.test(idHex) || raw.length !== 33 || raw[0] !== ED25519_ALG || raw.toString('base64') !== b64)
    throw new Error(`witness verifier key for ${name} is not an Ed25519 cosignature/v1 key (type 0x04, 32 bytes)`);
  const publicKey = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw.subarray(1)]), format: 'der', type: 'spki' });
  const keyId = cosignerKeyId(name, publicKey);
  if (keyId.toString('hex') !== idHex) throw new Error(`witness verifier key for ${name}: key id ${idHex} does not match its key`);
  return { name, keyId, publicKey };
}

function signedMessage(note: string, timestamp: number): Buffer {
  return Buffer.from(`cosignature/v1\ntime ${timestamp}\n${note}`, 'utf8');
}

/** Cosigns a note body at `timestamp` (whole seconds since the epoch): the signature line. */
export function cosign(privateKey: KeyObject, name: string, note: string, timestamp: number): string {
  checkName(name);
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) throw new Error('cosignature timestamp must be whole non-negative seconds');
  const publicKey = createPublicKey(privateKey);
  const ts = Buffer.alloc(8);
  ts.writeBigUInt64BE(BigInt(timestamp));
  const sig = sign(null, signedMessage(note, timestamp), privateKey);
  return `${SIG_PREFIX}${name} ${Buffer.concat([cosignerKeyId(name, publicKey), ts, sig]).toString('base64')}`;
}

/**
 * Verifies one signature line of `note` against a witness. Returns the cosignature's timestamp
 * (seconds), or a problem string; lines of other names or key ids are `undefined` (not ours).
 */
export function verifyCosignature(line: string, note: string, w: Witness): { timestamp: number } | { problem: string } | undefined {
  if (typeof line !== 'string' || !line.startsWith(SIG_PREFIX)) return undefined;
  const rest = line.slice(SIG_PREFIX.length);
  const sp = rest.indexOf(' ');
  if (sp < 0 || rest.slice(0, sp) !== w.name) return undefined;
  const raw = Buffer.from(rest.slice(sp + 1), 'base64');
  if (raw.length < 4 || !raw.subarray(0, 4).equals(w.keyId)) return undefined;
  if (raw.length !== 4 + 8 + 64) return { problem: `cosignature of ${w.name} is not 76 bytes` };
  const ts = raw.readBigUInt64BE(4);
  if (ts > BigInt(Number.MAX_SAFE_INTEGER)) return { problem: `cosignature of ${w.name} has an impossible timestamp` };
  const timestamp = Number(ts);
  if (!verify(null, signedMessage(note, timestamp), w.publicKey, raw.subarray(12))) return { problem: `cosignature of ${w.name} does not verify` };
  return { timestamp };
}

export interface CosignedVerdict {
  /** Witnesses whose cosignature verified, with its time (seconds). */
  witnesses: { name: string; timestamp: number }[];
  problem?: string;
}

/**
 * Checks a cosigned checkpoint: the sink's signature under one of `sinkKeys`, its note body
 * matching the checkpoint, and at least `quorum` distinct trusted witnesses' valid cosignatures.
 * A bad cosignature of a trusted witness is a problem (not merely ignored).
 */
export function verifyCosignedCheckpoint(c: CosignedCheckpoint, sinkKeys: ReadonlyMap<string, KeyObject>, witnesses: readonly Witness[], quorum: number): CosignedVerdict {
  const out: CosignedVerdict = { witnesses: [] };
  if (typeof c !== 'object' || c === null || typeof c.checkpoint !== 'object' || c.checkpoint === null) return { ...out, problem: 'not a cosigned checkpoint' };
  const bad = checkpointProblem(c.checkpoint, sinkKeys);
  if (bad) return { ...out, problem: `sink signature: ${bad}` };
  if (c.note !== checkpointNote(c.checkpoint)) return { ...out, problem: 'the note body does not match the signed checkpoint' };
  const lines = Array.isArray(c.cosignatures) ? c.cosignatures : [];
  for (const w of witnesses) {
    for (const line of lines) {
      const r = verifyCosignature(line, c.note, w);
      if (r === undefined) continue;
      if ('problem' in r) return { ...out, problem: r.problem };
      out.witnesses.push({ name: w.name, timestamp: r.timestamp });
      break;
    }
  }
  if (out.witnesses.length < quorum)
    return { ...out, problem: `cosigned by ${out.witnesses.length} trusted witness(es), ${quorum} required` };
  return out;
}

/** The witness name a signature line claims (`— <name> <base64>`), or undefined if it is not one. */
export function cosignatureName(line: string): string | undefined {
  if (typeof line !== 'string' || !line.startsWith(SIG_PREFIX)) return undefined;
  const m = /^(\S+) ([A-Za-z0-9+/]+={0,2})$/.exec(line.slice(SIG_PREFIX.length));
  return m && NAME_RE.test(m[1]!) ? m[1] : undefined;
}

/**
 * The timestamp (seconds) a signature line claims, UNVERIFIED (the sink holds no witness key: it
 * orders a witness's own publications by it); undefined if the line is not a cosignature/v1 line.
 */
export function cosignatureTime(line: string): number | undefined {
  if (!cosignatureName(line)) return undefined;
  const raw = Buffer.from(line.slice(line.lastIndexOf(' ') + 1), 'base64');
  if (raw.length !== 4 + 8 + 64) return undefined;
  const ts = raw.readBigUInt64BE(4);
  return ts > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(ts);
}

/** The proto keyshard.v1.CosignedCheckpoint form (audit.proto). */
export function toCosignedMsg(c: CosignedCheckpoint): pb.CosignedCheckpoint {
  return { checkpoint: toCheckpointMsg(c.checkpoint), note: c.note, cosignatures: [...c.cosignatures] };
}

/** From the proto form; throws when the checkpoint is missing. */
export function fromCosignedMsg(m: pb.CosignedCheckpoint__Output): CosignedCheckpoint {
  if (!m.checkpoint) throw new Error('cosigned checkpoint without its checkpoint');
  return { checkpoint: fromCheckpointMsg(m.checkpoint), note: m.note, cosignatures: [...m.cosignatures] };
}
