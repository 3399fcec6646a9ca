/**
 * Custodian succession: how a custodian restored into a new token (custodian recovery) keeps
 * counting in the share set, although its approval key — generated inside the lost token,
 * never extractable — is new. The trust chain starts at the key the share manifest (or a
 * custodian's peers record) already names:
 *
 *   1. statement: at export time the OLD token signs (Ed25519, inside the HSM)
 *        "keyshard/v1/custodian-succession" | cluster | custodian | SHA-256(recovery key SPKI)
 *      — "whoever holds this recovery key may name my successor";
 *   2. certificate: at import time the recovery private key signs (RSA-PSS, SHA-256, RFC 8017
 *      §8.1) "keyshard/v1/custodian-successor" | cluster | custodian | SHA-256(new approval key SPKI).
 *
 * An approval verifies against the successor key only when both links verify; otherwise
 * against the recorded key. One link deep: a custodian recovered twice is re-enrolled by a
 * reshare (which records its current key) in between.
 * Frozen vectors: packages/crypto/vectors/succession.json (layout in packages/crypto/VECTORS.md).
 */
import { constants, createHash, createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { invalidArgument } from '@keyshard/errors';
import { recoveryKeyFingerprint } from './rsa-oaep.ts';

export interface Succession {
  statement_signature: Buffer;
  recovery_public_key_pem: string;
  certificate: Buffer;
  approval_public_key_pem: string;
}

const join = (...parts: string[]) => Buffer.from(parts.join('\0'));

const spkiHash = (pem: string) => createHash('sha256').update(createPublicKey(pem).export({ type: 'spki', format: 'der' })).digest('hex');

/** What the old token signs at export (with its approval key). */
export const successionStatement = (clusterId: string, custodianId: string, recoveryKeyPem: string) =>
  join('keyshard/v1/custodian-succession', clusterId, custodianId, recoveryKeyFingerprint(recoveryKeyPem));

const successorMessage = (clusterId: string, custodianId: string, approvalPublicKeyPem: string) =>
  join('keyshard/v1/custodian-successor', clusterId, custodianId, spkiHash(approvalPublicKeyPem));

const PSS = { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 };

/** The recovery key certifies the new token's approval key (at import). */
export function certifySuccessor(recoveryPrivateKeyPem: string, clusterId: string, custodianId: string, approvalPublicKeyPem: string): Buffer {
  try {
    return sign('sha256', successorMessage(clusterId, custodianId, approvalPublicKeyPem), { key: createPrivateKey(recoveryPrivateKeyPem), ...PSS });
  } catch {
    throw invalidArgument('the recovery key cannot sign (not an RSA private key?)');
  }
}

/**
 * The key a custodian's approvals verify with: its successor's when `succession` chains to
 * `recorded` (the manifest's or peers record's key), else `recorded` itself.
 */
export function approvalKeyOf(clusterId: string, custodian: { id: string; approvalPublicKeyPem: string }, succession?: Succession | null): string {
  if (!succession?.approval_public_key_pem || !succession.statement_signature?.length) return custodian.approvalPublicKeyPem;
  try {
    const stated = verify(null, successionStatement(clusterId, custodian.id, succession.recovery_public_key_pem), custodian.approvalPublicKeyPem, succession.statement_signature);
    const certified = verify('sha256', successorMessage(clusterId, custodian.id, succession.approval_public_key_pem), { key: succession.recovery_public_key_pem, ...PSS }, succession.certificate);
    return stated && certified ? succession.approval_public_key_pem : custodian.approvalPublicKeyPem;
  } catch {
    return custodian.approvalPublicKeyPem;
  }
}
