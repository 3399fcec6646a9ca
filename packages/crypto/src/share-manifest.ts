/**
 * Share manifest: the public, MAC'd record of how the root key was split (brief, "init").
 *
 * `shamir-secret-sharing` (GF(2^8); share = y bytes || x) has no integrity: a tampered share,
 * fewer than t shares, or a forged share with x = 0 silently yield a wrong "secret". So:
 *  - each share is checked before use: its x is the one registered for that custodian, x ≠ 0,
 *    and SHA-256(domain | cluster id | share) equals the commitment recorded at init
 *    (compared in constant time). A share that fails names its custodian;
 *  - shares are combined only once t have passed, and the result must match the key check
 *    value (KCV = HMAC-SHA256(root, label), RFC 2104 — a PRF output that reveals nothing
 *    about the key);
 *  - the manifest itself carries an HMAC under an HKDF subkey of the root (RFC 5869), checked
 *    after reconstruction, so a manifest edited in etcd is detected.
 * Commitments reveal nothing useful: each share is uniformly random to anyone holding < t.
 * Frozen vectors: packages/crypto/vectors/share-manifest.json (layout in packages/crypto/VECTORS.md).
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { combine, split } from 'shamir-secret-sharing';
import { KeyshardError, invalidArgument } from '@keyshard/errors';
import { zeroize } from './aead.ts';
import { canonicalJson } from './canonical-json.ts';
import { deriveSubkey } from './key-hierarchy.ts';
import { vouchPublicKeyPem } from './join-vouch.ts';

export const ROOT_KEY_BYTES = 32;
export const SHARE_BYTES = ROOT_KEY_BYTES + 1;
export const MAX_SHARES = 255;

export interface ManifestCustodian {
  id: string;
  x: number;
  commitment: string; // hex
  enrollmentPublicKeyPem: string;
  approvalPublicKeyPem: string;
}

export interface ShareManifest {
  version: 1;
  clusterId: string;
  /** Share set; absent = 1 (init). Each reshare or root rotation makes the next. */
  generation?: number;
  threshold: number;
  createdAt: string;
  custodians: ManifestCustodian[];
  kcv: string; // hex
  /** Ed25519 SPKI PEM of the root's join-vouch key (join-vouch.ts); absent in manifests made before vouches. */
  vouchPublicKeyPem?: string;
  mac: string; // hex
}

export type CustodianKeys = Omit<ManifestCustodian, 'x' | 'commitment'>;

/** A share that failed a manifest check; names the custodian that released it. */
export class ShareRejected extends KeyshardError {
  readonly custodianId: string;
  constructor(custodianId: string, reason: string) {
    super('FAILED_PRECONDITION', `share from custodian ${custodianId} rejected: ${reason}`);
    this.custodianId = custodianId;
  }
}

export function validateQuorum(shares: number, threshold: number): void {
  if (!Number.isInteger(shares) || !Number.isInteger(threshold)) throw invalidArgument('shares and threshold must be integers');
  if (threshold < 2) throw invalidArgument(`threshold must be at least 2 (got ${threshold})`);
  if (shares < threshold) throw invalidArgument(`shares (${shares}) must be at least the threshold (${threshold})`);
  if (shares > MAX_SHARES) throw invalidArgument(`shares must be at most ${MAX_SHARES} (got ${shares})`);
}

export function shareCommitment(clusterId: string, share: Uint8Array): string {
  return createHash('sha256')
    .update('keyshard/v1/share-commitment\0')
    .update(clusterId)
    .update('\0')
    .update(share)
    .digest('hex');
}

export function keyCheckValue(root: Buffer): string {
  return createHmac('sha256', root).update('keyshard/v1/key-check-value').digest('hex');
}

function manifestMac(root: Buffer, m: Omit<ShareManifest, 'mac'>): string {
  const key = deriveSubkey(root, 'manifest-mac');
  try {
    return createHmac('sha256', key).update(canonicalJson({ ...m, mac: undefined })).digest('hex');
  } finally {
    zeroize(key);
  }
}

function hexEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

/** SHA-256 of the canonical manifest: what operators compare out of band. */
export function manifestFingerprint(m: ShareManifest): string {
  return createHash('sha256').update(canonicalJson(m)).digest('hex');
}

/**
 * SHA-256 of a share set's threshold and its custodians' approval keys (sorted by id): what a
 * reshare / rotate-root ceremony binds for the set it retires and the set it makes, so a
 * custodian can check that a delivered or stored peers record is the one the quorum approved.
 */
export function peersDigest(threshold: number, custodians: readonly { id: string; approvalPublicKeyPem: string }[]): string {
  const sorted = [...custodians].map((c) => [c.id, c.approvalPublicKeyPem.trim()]).sort((a, b) => (a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : 0));
  return createHash('sha256').update('keyshard/v1/share-set-peers\0').update(canonicalJson({ threshold, custodians: sorted })).digest('hex');
}

/**
 * Splits `root` t-of-n, one share per custodian (in order). The caller delivers each share
 * encrypted to its custodian and must zeroize the returned share buffers.
 */
export async function splitRootKey(
  root: Buffer,
  clusterId: string,
  custodians: CustodianKeys[],
  threshold: number,
  generation = 1,
): Promise<{ manifest: ShareManifest; shares: Uint8Array[] }> {
  validateQuorum(custodians.length, threshold);
  if (root.length !== ROOT_KEY_BYTES) throw new KeyshardError('INTERNAL', 'root key must be 32 bytes');
  if (new Set(custodians.map((c) => c.id)).size !== custodians.length) throw invalidArgument('custodian ids must be unique');
  const secret = new Uint8Array(root); // the library insists on a plain Uint8Array
  const shares = await split(secret, custodians.length, threshold);
  zeroize(secret);
  const body: Omit<ShareManifest, 'mac'> = {
    version: 1,
    clusterId,
    ...(generation > 1 ? { generation } : {}),
    threshold,
    createdAt: new Date().toISOString(),
    custodians: custodians.map((c, i) => ({
      ...c,
      x: shares[i]![ROOT_KEY_BYTES]!,
      commitment: shareCommitment(clusterId, shares[i]!),
    })),
    kcv: keyCheckValue(root),
    vouchPublicKeyPem: vouchPublicKeyPem(root),
  };
  return { manifest: { ...body, mac: manifestMac(root, body) }, shares };
}

/** Checks one released share against the manifest; throws ShareRejected naming the custodian. */
export function checkShare(manifest: ShareManifest, custodianId: string, share: Uint8Array): void {
  const entry = manifest.custodians.find((c) => c.id === custodianId);
  if (!entry) throw new ShareRejected(custodianId, 'custodian is not in the share manifest');
  if (share.length !== SHARE_BYTES) throw new ShareRejected(custodianId, `share has ${share.length} bytes, expected ${SHARE_BYTES}`);
  const x = share[SHARE_BYTES - 1]!;
  if (x === 0) throw new ShareRejected(custodianId, 'share has x = 0');
  if (x !== entry.x) throw new ShareRejected(custodianId, `share has unregistered x coordinate ${x}`);
  if (!hexEqual(shareCommitment(manifest.clusterId, share), entry.commitment))
    throw new ShareRejected(custodianId, 'share does not match its commitment');
}

/**
 * Combines shares that passed `checkShare` into the root key. Refuses below the threshold
 * (nothing is reconstructed), and verifies the key check value and the manifest MAC.
 */
export async function combineShares(manifest: ShareManifest, accepted: { custodianId: string; share: Uint8Array }[]): Promise<Buffer> {
  const distinct = new Map(accepted.map((a) => [a.custodianId, a.share]));
  if (distinct.size < manifest.threshold)
    throw new KeyshardError('FAILED_PRECONDITION', `need ${manifest.threshold} valid shares, have ${distinct.size}`, { reason: 'QUORUM_NOT_MET' });
  for (const [id, share] of distinct) checkShare(manifest, id, share);
  const parts = [...distinct.values()].slice(0, manifest.threshold).map((s) => new Uint8Array(s));
  const secret = await combine(parts);
  zeroize(...parts);
  const root = Buffer.from(secret);
  zeroize(secret);
  if (!hexEqual(keyCheckValue(root), manifest.kcv)) {
    zeroize(root);
    throw new KeyshardError('FAILED_PRECONDITION', 'reconstructed root key does not match the key check value');
  }
  if (!hexEqual(manifestMac(root, manifest), manifest.mac)) {
    zeroize(root);
    throw new KeyshardError('FAILED_PRECONDITION', 'share manifest MAC does not verify: the manifest was modified', { reason: 'INTEGRITY_FAILURE' });
  }
  return root;
}

export function newClusterId(): string {
  return `c-${randomBytes(8).toString('hex')}`;
}
