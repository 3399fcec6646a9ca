/**
 * Signed checkpoints (tree heads) of the audit log: tree size, root hash, time and the id of
 * the Ed25519 key that signed them. Anyone holding a checkpoint and the sink's public key can
 * check that a later log still contains it (consistency proof) and that an event is in it
 * (inclusion proof): the log cannot be rewritten behind a checkpoint that was handed out.
 *
 * The signature covers a fixed text encoding, so no JSON or protobuf serializer has to agree
 * byte for byte; the key id is inside it, so a signature cannot be re-labelled. A key id is
 * the first 8 bytes of SHA-256 over the key's SPKI DER: old checkpoints stay verifiable after a
 * rotation by looking their key up by id.
 */
import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { pb } from '@keyshard/rpc';

/** A checkpoint as stored (checkpoints file) and printed (CLI); the proto form has the signature in raw bytes. */
export interface SignedCheckpoint {
  tree_size: number;
  root_hash: string; // hex
  time: string; // RFC 3339
  key_id: string; // hex, 16 digits
  signature: string; // base64, Ed25519
}

const HEADER = 'keyshard/audit/checkpoint/v1';

export function checkpointBody(c: Omit<SignedCheckpoint, 'signature'>): Buffer {
  return Buffer.from(`${HEADER}\n${c.key_id}\n${c.tree_size}\n${c.root_hash}\n${c.time}\n`, 'utf8');
}

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest().subarray(0, 8).toString('hex');
}

export function signCheckpoint(privateKey: KeyObject, keyId: string, treeSize: number, rootHash: Uint8Array, time = new Date()): SignedCheckpoint {
  const body = { tree_size: treeSize, root_hash: Buffer.from(rootHash).toString('hex'), time: time.toISOString(), key_id: keyId };
  return { ...body, signature: sign(null, checkpointBody(body), privateKey).toString('base64') };
}

/** Why a checkpoint does not verify under the given keys (by id), or undefined when it does. */
export function checkpointProblem(c: SignedCheckpoint, keys: ReadonlyMap<string, KeyObject>): string | undefined {
  if (!Number.isSafeInteger(c.tree_size) || c.tree_size < 0) return 'tree_size is not a non-negative integer';
  if (typeof c.root_hash !== 'string' || !/^[0-9a-f]{64}$/.test(c.root_hash)) return 'root_hash is not 32 bytes of lower-case hex';
  if (typeof c.time !== 'string' || Number.isNaN(Date.parse(c.time))) return 'time is not an RFC 3339 time';
  const key = keys.get(c.key_id);
  if (!key) return `no public key with id ${JSON.stringify(c.key_id)}`;
  const sig = Buffer.from(typeof c.signature === 'string' ? c.signature : '', 'base64');
  if (sig.length !== 64 || !verify(null, checkpointBody(c), key, sig)) return `signature does not verify under key ${c.key_id}`;
  return undefined;
}

/** Parses a PEM public key (SPKI) and returns it with its id. */
export function publicKeyFromPem(pem: string | Buffer): { id: string; key: KeyObject } {
  const key = createPublicKey(pem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error('checkpoint keys are Ed25519');
  return { id: keyIdOf(key), key };
}

/**
 * The sink's checkpoint public keys from PEM files (SPKI, Ed25519), by key id: what producers
 * verify acknowledgements with. Several files allow a key rotation; at least one is needed.
 * Throws naming the file that cannot be read or is not an Ed25519 public key.
 */
export function loadCheckpointKeys(files: readonly string[]): Map<string, KeyObject> {
  if (files.length === 0) throw new Error('no audit sink checkpoint public key configured');
  const keys = new Map<string, KeyObject>();
  for (const f of files) {
    let pem: Buffer;
    try {
      pem = readFileSync(f);
    } catch (e) {
      throw new Error(`cannot read audit sink checkpoint public key ${f}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    if (!pem.includes('-----BEGIN PUBLIC KEY-----')) throw new Error(`${f} is not a PEM public key (SPKI): give the sink's public key, never its private key`);
    try {
      const { id, key } = publicKeyFromPem(pem);
      keys.set(id, key);
    } catch (e) {
      throw new Error(`${f}: ${(e as Error).message}`);
    }
  }
  return keys;
}

/** The proto keyshard.v1.Checkpoint form (audit.proto), every field set. */
export type CheckpointMsg = pb.Checkpoint__Output;

export function toCheckpointMsg(c: SignedCheckpoint): CheckpointMsg {
  return { tree_size: c.tree_size, root_hash: c.root_hash, time: c.time, key_id: c.key_id, signature: Buffer.from(c.signature, 'base64') };
}

export function fromCheckpointMsg(m: CheckpointMsg): SignedCheckpoint {
  return { tree_size: m.tree_size, root_hash: m.root_hash, time: m.time, key_id: m.key_id, signature: Buffer.from(m.signature).toString('base64') };
}
