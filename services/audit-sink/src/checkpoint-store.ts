/**
 * The sink's side of signed checkpoints (@keyshard/audit-log checkpoint.ts; the directory
 * layout and reading it back are log-dir.ts there):
 *   - the Ed25519 signing key, a PKCS#8 PEM file outside the data dir (created 0600 when
 *     missing). Rotating it = pointing `checkpointKeyFile` at a new key and restarting;
 *   - `<dataDir>/keys/<key id>.pem`: every public key that ever signed a checkpoint of this
 *     log, so old checkpoints stay verifiable by key id. A verifier that does not trust the
 *     log's own directory passes the public keys it holds instead (`--key`);
 *   - `<dataDir>/checkpoints.log`: one signed checkpoint a line (periodic, on demand, at stop),
 *     appended here by CheckpointFile.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CHECKPOINTS_FILE, KEYS_DIR, checkpointLine, keyIdOf, signCheckpoint, type CheckpointFileScan, type SignedCheckpoint } from '@keyshard/audit-log';
import { fsyncDir } from './segments.ts';

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
