/**
 * A coordinator's long-term transport key and its per-ceremony ephemeral keys.
 *
 * Transport key: RSA-3072, one per coordinator identity, in a PEM file (PKCS#8, mode 0600) named
 * by the config's `transportKeyFile`, created on first start if absent. Its public key is what
 * the coordinator registers and what ceremonies name as a recipient's `public_key_pem`; each
 * custodian token's security officer enrolls it as CKA_TRUSTED, the only kind of key the token
 * will wrap a share to (RSA-OAEP with SHA-1/MGF1-SHA1 on SoftHSM 2.6, RFC 8017 §7.1).
 *
 * Ephemeral keys: X25519, one per ceremony this replica is named in (RFC 9180 HPKE layer). The
 * current one is published in the replica's registration; when a ceremony naming it ends, its
 * private key is zeroized and a new current key replaces it, so a release captured in transit
 * cannot be opened later even by someone who then steals the transport key and a token PIN.
 *
 * Invariants: a transport key file readable by group or others is refused (FAILED_PRECONDITION
 * naming the file, never its content); private key bytes are never logged.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { newEphemeralKeyPair, zeroize, type EphemeralKeyPair } from '@keyshard/crypto';
import { KeyshardError } from '@keyshard/errors';

export const TRANSPORT_KEY_BITS = 3072;

export interface TransportKey {
  publicKeyPem: string;
  privateKey: KeyObject;
  created: boolean;
}

/** Reads the transport key at `file`, or creates it (RSA-3072, 0600) if the file does not exist. */
export function loadOrCreateTransportKey(file: string): TransportKey {
  if (!existsSync(file)) {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: TRANSPORT_KEY_BITS });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' });
    writeFileSync(file, pem, { mode: 0o600, flag: 'wx' }); // never over a file that appeared meanwhile
    return { publicKeyPem: publicPem(privateKey), privateKey, created: true };
  }
  const privateKey = readOwnerOnlyPrivateKey(file, 'transport');
  const bits = privateKey.asymmetricKeyDetails?.modulusLength ?? 0;
  if (privateKey.asymmetricKeyType !== 'rsa' || bits < 2048 || bits > 8192)
    throw new KeyshardError('FAILED_PRECONDITION', `transport key file ${file} must hold an RSA key of 2048..8192 bits`);
  return { publicKeyPem: publicPem(privateKey), privateKey, created: false };
}

/**
 * A private key PEM file only its owner may read (transport and witness keys): FAILED_PRECONDITION
 * naming the file (never its content) when group or others may read it or it holds no private key.
 */
export function readOwnerOnlyPrivateKey(file: string, what: string): KeyObject {
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) throw new KeyshardError('FAILED_PRECONDITION', `${what} key file ${file} must be readable by its owner only (mode 0600, is ${mode.toString(8)})`);
  try {
    return createPrivateKey(readFileSync(file, 'utf8'));
  } catch {
    throw new KeyshardError('FAILED_PRECONDITION', `${what} key file ${file} does not hold a private key PEM`);
  }
}

const publicPem = (k: KeyObject) => createPublicKey(k).export({ type: 'spki', format: 'pem' }).toString();

/**
 * This replica's ephemeral X25519 keys: the current one (published, named by the next ceremony)
 * and those named by ceremonies still running. `retire` ends a key's life.
 */
export class EphemeralKeys {
  #current: EphemeralKeyPair;
  #held = new Map<string, EphemeralKeyPair>();
  #onRotate: ((publicKeyPem: string) => void)[] = [];

  constructor() {
    this.#current = this.#fresh();
  }

  #fresh(): EphemeralKeyPair {
    const k = newEphemeralKeyPair();
    this.#held.set(k.publicKeyPem, k);
    return k;
  }

  /** The key the next ceremony naming this replica should use (published in its registration). */
  get currentPem(): string {
    return this.#current.publicKeyPem;
  }

  /** The key pair for `publicKeyPem` if this replica still holds it (not retired). */
  get(publicKeyPem: string): EphemeralKeyPair | undefined {
    return this.#held.get(publicKeyPem);
  }

  /** A ceremony naming `publicKeyPem` ended: its private key is zeroized; a retired current key is replaced and published. */
  retire(publicKeyPem: string | undefined): void {
    if (!publicKeyPem) return;
    const k = this.#held.get(publicKeyPem);
    if (!k) return;
    this.#held.delete(publicKeyPem);
    zeroize(k.privateKey);
    if (k === this.#current) {
      this.#current = this.#fresh();
      for (const l of this.#onRotate) l(this.#current.publicKeyPem);
    }
  }

  onRotate(listener: (publicKeyPem: string) => void): void {
    this.#onRotate.push(listener);
  }
}
