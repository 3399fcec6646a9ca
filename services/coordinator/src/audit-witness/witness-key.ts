/**
 * A coordinator replica's witness key: Ed25519 (RFC 8032), one per coordinator identity, in a
 * PKCS#8 PEM file named by the config's `witnessKeyFile` (mode 0600, outside any data dir),
 * created on first start if absent. With it the replica cosigns the audit sink's checkpoints
 * (C2SP tlog-cosignature v1, @keyshard/audit-log cosignature.ts) under the witness name
 * `keyshard.dev/witness/<certificate CN>`; auditors hold its public half as a signed-note vkey
 * (`keyshard status` shows it; `keyshard dev` writes them all to DIR/audit-trust.json).
 *
 * Invariants: a key file readable by group or others is refused (FAILED_PRECONDITION naming the
 * file, never its content), as the transport key is; private key bytes are never logged.
 */
import { generateKeyPairSync, createPublicKey, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { KeyshardError } from '@keyshard/errors';
import { vkeyOf, witnessName } from '@keyshard/audit-log';
import { readOwnerOnlyPrivateKey } from '../ceremonies/transport-key.ts';

export interface WitnessKey {
  /** keyshard.dev/witness/<certificate CN> */
  name: string;
  privateKey: KeyObject;
  /** The signed-note verifier key auditors trust. */
  vkey: string;
  created: boolean;
}

/** Reads the witness key at `file`, or creates it (Ed25519, 0600) if the file does not exist. */
export function loadOrCreateWitnessKey(file: string, certificateCn: string): WitnessKey {
  const name = witnessName(certificateCn);
  let created = false;
  if (!existsSync(file)) {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' }); // never over a file that appeared meanwhile
    created = true;
  }
  const privateKey = readOwnerOnlyPrivateKey(file, 'witness');
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new KeyshardError('FAILED_PRECONDITION', `witness key file ${file} must hold an Ed25519 key`);
  return { name, privateKey, vkey: vkeyOf(name, createPublicKey(privateKey)), created };
}
