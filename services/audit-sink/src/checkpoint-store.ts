/**
 * The sink's side of signed checkpoints (packages/audit-client/src/checkpoint.ts):
 *   - the Ed25519 signing key, a PKCS#8 PEM file outside the data dir (created 0600 when
 *     missing). Rotating it = pointing `checkpointKeyFile` at a new key and restarting;
 *   - `<dataDir>/keys/<key id>.pem`: every public key that ever signed a checkpoint of this
 *     log, so old checkpoints stay verifiable by key id. A verifier that does not trust the
 *     log's own directory passes the public keys it holds instead (`--key`);
 *   - `<dataDir>/checkpoints.log`: one signed checkpoint a line (periodic, on demand, at stop).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { keyIdOf, publicKeyFromPem, signCheckpoint, type SignedCheckpoint } from '@keyshard/audit-client/checkpoint';
import { fsyncDir } from './segments.ts';

export const KEYS_DIR = 'keys';
export const CHECKPOINTS_FILE = 'checkpoints.log';

export interface CheckpointSigner {
  readonly keyId: string;
  readonly publicKey: KeyObject;
  sign(treeSize: number, rootHash: Uint8Array, time?: Date): SignedCheckpoint;
}

export function signerFromKey(privateKey: KeyObject): CheckpointSigner {
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('the checkpoint key must be Ed25519');
  const publicKey = createPublicKey(privateKey);
  const keyId = keyIdOf(publicKey);
  return { keyId, publicKey, sign: (size, root, time) => signCheckpoint(privateKey, keyId, size, root, time) };
}

/** Loads the signing key from a PEM file, generating it (0600) if the file does not exist. */
export function loadSigner(keyFile: string): CheckpointSigner {
  if (!fs.existsSync(keyFile)) {
    fs.mkdirSync(path.dirname(keyFile), { recursive: true, mode: 0o700 });
    const { privateKey } = generateKeyPairSync('ed25519');
    fs.writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  }
  return signerFromKey(createPrivateKey(fs.readFileSync(keyFile)));
}

/** Records the signer's public key in the data dir (once) so its checkpoints verify later. */
export function publishKey(dataDir: string, signer: CheckpointSigner): void {
  const dir = path.join(dataDir, KEYS_DIR);
  const file = path.join(dir, `${signer.keyId}.pem`);
  if (fs.existsSync(file)) return;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const fd = fs.openSync(file, 'wx', 0o644);
  try {
    fs.writeSync(fd, signer.publicKey.export({ type: 'spki', format: 'pem' }) as string);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fsyncDir(dir);
}

/** Public keys by id, from PEM files (a directory of them or single files). */
export function loadPublicKeys(...sources: string[]): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  for (const src of sources) {
    if (!fs.existsSync(src)) continue;
    const files = fs.statSync(src).isDirectory() ? fs.readdirSync(src).filter((f) => f.endsWith('.pem')).map((f) => path.join(src, f)) : [src];
    for (const f of files) {
      const { id, key } = publicKeyFromPem(fs.readFileSync(f));
      keys.set(id, key);
    }
  }
  return keys;
}

export interface CheckpointFileScan {
  checkpoints: SignedCheckpoint[];
  validBytes: number;
  tornBytes: number;
  bad?: { line: number; reason: string };
}

export function readCheckpointFile(file: string): CheckpointFileScan {
  const res: CheckpointFileScan = { checkpoints: [], validBytes: 0, tornBytes: 0 };
  if (!fs.existsSync(file)) return res;
  const text = fs.readFileSync(file);
  let start = 0;
  for (let nl = text.indexOf(0x0a); nl >= 0; nl = text.indexOf(0x0a, start)) {
    try {
      const c = JSON.parse(text.subarray(start, nl).toString('utf8')) as SignedCheckpoint;
      if (typeof c !== 'object' || c === null) throw new Error();
      res.checkpoints.push(c);
    } catch {
      res.bad = { line: res.checkpoints.length + 1, reason: 'checkpoint line is not JSON' };
      return res;
    }
    start = nl + 1;
  }
  res.validBytes = start;
  res.tornBytes = text.length - start;
  return res;
}

export function checkpointLine(c: SignedCheckpoint): string {
  return `${JSON.stringify({ tree_size: c.tree_size, root_hash: c.root_hash, time: c.time, key_id: c.key_id, signature: c.signature })}\n`;
}

/** Appends checkpoints durably (write + fdatasync), after cutting a torn tail once on open. */
export class CheckpointFile {
  private constructor(private readonly fh: fs.promises.FileHandle) {}

  static async open(dataDir: string, scan: CheckpointFileScan): Promise<CheckpointFile> {
    const file = path.join(dataDir, CHECKPOINTS_FILE);
    const created = !fs.existsSync(file);
    const fh = await fs.promises.open(file, 'a', 0o600);
    if (scan.tornBytes > 0) await fh.truncate(scan.validBytes);
    if (created) fsyncDir(dataDir);
    return new CheckpointFile(fh);
  }

  async append(c: SignedCheckpoint): Promise<void> {
    await this.fh.write(checkpointLine(c));
    await this.fh.datasync();
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}
