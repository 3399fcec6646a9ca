/**
 * The key hierarchy (brief, "Key hierarchy"):
 *
 *   root key (32 B)      only in unsealed coordinators' memory; at rest only as Shamir shares
 *   └─ KEK per epoch     in etcd, AES-256-GCM under the root key,  AAD = "kek" | cluster | epoch
 *      └─ key version    in etcd, AES-256-GCM under the epoch KEK, AAD = "kv"  | cluster | key id | version
 *
 * Binding the position into the AAD means a wrapped blob moved to another cluster, key or
 * version fails authentication instead of being accepted. Rotating the root re-wraps KEKs only.
 * Subkeys for other purposes come from HKDF-SHA256 (RFC 5869) with distinct `info` labels
 * (`keyshard/v1/<purpose>`): `deriveRootKey` (salt = cluster id) for `record-mac` (record-mac.ts:
 * the record MAC key, 32 B); `deriveSubkey` (empty salt unless given) for `manifest-mac`,
 * `backup-encryption` (salt = the backup's salt) and the 32-byte Ed25519 seeds of `rootSigningKey`:
 * `backup-signing` and `join-vouch` (join vouches and seal notices).
 * Frozen vectors: packages/crypto/vectors/key-hierarchy.json (layout in packages/crypto/VECTORS.md).
 */
import { createPrivateKey, createPublicKey, hkdfSync, type KeyObject } from 'node:crypto';
import { KeyshardError } from '@keyshard/errors';
import { openAesGcm, sealAesGcm, zeroize } from './aead.ts';

function lengthPrefixed(...parts: string[]): Buffer {
  return Buffer.concat(
    parts.flatMap((p) => {
      const b = Buffer.from(p, 'utf8');
      const len = Buffer.alloc(2);
      len.writeUInt16BE(b.length);
      return [len, b];
    }),
  );
}

export const kekAad = (clusterId: string, epoch: number) => lengthPrefixed('keyshard/v1/kek', clusterId, String(epoch));
export const versionAad = (clusterId: string, keyId: string, version: number) =>
  lengthPrefixed('keyshard/v1/kv', clusterId, keyId, String(version));

export function wrapKek(root: Buffer, clusterId: string, epoch: number, kek: Buffer): Buffer {
  return sealAesGcm(root, kek, kekAad(clusterId, epoch));
}

/**
 * Wrapped blobs come from the service's own state, not from callers: a failure to open one
 * means tampering, corruption or the wrong root, so it is INTERNAL, never the caller's fault.
 */
function openStored(key: Buffer, wrapped: Buffer, aad: Buffer, what: string): Buffer {
  try {
    return openAesGcm(key, wrapped, aad, what);
  } catch {
    throw new KeyshardError('INTERNAL', `stored ${what} failed authentication: state is corrupted or was tampered with`);
  }
}

export function unwrapKek(root: Buffer, clusterId: string, epoch: number, wrapped: Buffer): Buffer {
  return openStored(root, wrapped, kekAad(clusterId, epoch), 'key-encryption key');
}

export function wrapVersion(kek: Buffer, clusterId: string, keyId: string, version: number, material: Buffer): Buffer {
  return sealAesGcm(kek, material, versionAad(clusterId, keyId, version));
}

export function unwrapVersion(kek: Buffer, clusterId: string, keyId: string, version: number, wrapped: Buffer): Buffer {
  return openStored(kek, wrapped, versionAad(clusterId, keyId, version), 'key version material');
}

/** HKDF-SHA256 (RFC 5869) subkey of the root key for one named purpose. */
export function deriveSubkey(root: Buffer, purpose: string, length = 32, salt: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.from(hkdfSync('sha256', root, salt, `keyshard/v1/${purpose}`, length));
}

const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex'); // RFC 8410 §7

/**
 * A deterministic Ed25519 key pair (RFC 8032) of the root key for one named purpose: the
 * 32-byte seed is the HKDF subkey `purpose`. Anyone holding the root derives the same pair;
 * the public half may be published (manifest, backup header) to verify what the root signs.
 */
export function rootSigningKey(root: Buffer, purpose: string): { privateKey: KeyObject; publicDer: Buffer } {
  const seed = deriveSubkey(root, purpose);
  const der = Buffer.concat([ED25519_PKCS8_PREFIX, seed]);
  try {
    const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    return { privateKey, publicDer: createPublicKey(privateKey).export({ format: 'der', type: 'spki' }) };
  } finally {
    zeroize(seed, der);
  }
}

/** Purposes of root-derived keys (`info` = `keyshard/v1/<purpose>`). */
export type RootKeyPurpose = 'record-mac';

/**
 * A key for one purpose derived from the 32-byte root key: HKDF-SHA256 (RFC 5869 §2), salt =
 * the cluster id (UTF-8), info = `keyshard/v1/<purpose>`. The caller zeroizes it.
 */
export function deriveRootKey(root: Buffer, clusterId: string, purpose: RootKeyPurpose, length: number): Buffer {
  if (root.length !== 32) throw new KeyshardError('INTERNAL', 'the root key must be 32 bytes');
  if (typeof clusterId !== 'string' || clusterId.length === 0) throw new KeyshardError('INTERNAL', 'a cluster id is needed to derive a root key');
  if (!Number.isInteger(length) || length < 16 || length > 64) throw new KeyshardError('INTERNAL', 'a derived key is 16 to 64 bytes');
  return deriveSubkey(root, purpose, length, Buffer.from(clusterId, 'utf8'));
}

/** AAD of the wrapped record MAC key (record-mac.ts), distinct from every KEK's. */
export const recordMacKeyAad = (clusterId: string) => lengthPrefixed('keyshard/v1/record-mac-key', clusterId);

/** The record MAC key wrapped under the root (AES-256-GCM), stored and carried like a KEK. */
export function wrapRecordMacKey(root: Buffer, clusterId: string, key: Buffer): Buffer {
  return sealAesGcm(root, key, recordMacKeyAad(clusterId));
}

export function unwrapRecordMacKey(root: Buffer, clusterId: string, wrapped: Buffer): Buffer {
  return openStored(root, wrapped, recordMacKeyAad(clusterId), 'record MAC key');
}
