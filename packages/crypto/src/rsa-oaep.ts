/**
 * RSA-OAEP (RFC 8017 §7.1) between coordinators and custodian HSMs: shares travel only
 * encrypted to an HSM enrollment key (init) or wrapped by an HSM to a replica's ephemeral
 * key (unseal). The hash is configurable because SoftHSM 2.6 supports only SHA-1/MGF1-SHA1.
 */
import { constants, createHash, createPublicKey, generateKeyPairSync, privateDecrypt, publicEncrypt, type KeyObject } from 'node:crypto';
import { invalidArgument } from '@keyshard/errors';

export type OaepHash = 'sha1' | 'sha256';

export function oaepEncrypt(publicKeyPem: string, data: Buffer, hash: OaepHash): Buffer {
  try {
    return publicEncrypt({ key: publicKeyPem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, data);
  } catch {
    throw invalidArgument('value cannot be RSA-OAEP encrypted to this public key (bad key, or value too long)');
  }
}

export function oaepDecrypt(privateKey: KeyObject, data: Buffer, hash: OaepHash): Buffer {
  try {
    return privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, data);
  } catch {
    throw invalidArgument('wrapped value does not decrypt under this recipient key');
  }
}

/** A replica's ephemeral ceremony key pair; the private key never leaves process memory. */
export function ephemeralRecipientKey(): { publicKeyPem: string; privateKey: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), privateKey };
}

/**
 * An offline recovery public key (custodian recovery): RSA of at least 2048 bits, named by the
 * SHA-256 of its SPKI DER encoding, hex (what an export-share ceremony binds).
 */
export function recoveryKeyFingerprint(publicKeyPem: string): string {
  let key: KeyObject;
  try {
    key = createPublicKey(publicKeyPem);
  } catch {
    throw invalidArgument('the recovery key is not a public key PEM');
  }
  if (key.asymmetricKeyType !== 'rsa' || (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) throw invalidArgument('the recovery key must be RSA, at least 2048 bits');
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex');
}
