/**
 * RSA-OAEP (RFC 8017 §7.1) between coordinators and custodian HSMs: shares travel only
 * encrypted to an HSM enrollment key (init) or wrapped by an HSM to a replica's ephemeral
 * key (unseal). The hash is configurable because SoftHSM 2.6 supports only SHA-1/MGF1-SHA1.
 */
import { constants, createHash, createPrivateKey, createPublicKey, generateKeyPairSync, privateDecrypt, publicEncrypt, type KeyObject } from 'node:crypto';
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

/** The smallest recovery key accepted where one is enrolled or bound to a ceremony (issue 17 item 5). */
export const MIN_RECOVERY_KEY_BITS = 3072;

/** True if the PEM text holds a private key (any kind, any format node:crypto reads). */
function isPrivateKeyPem(pem: string): boolean {
  if (/PRIVATE KEY/.test(pem)) return true;
  try {
    createPrivateKey(pem);
    return true;
  } catch {
    return false;
  }
}

/**
 * The one check of an offline recovery key wherever one is accepted (export-share ceremony start
 * on the coordinator, trusted-key enrollment and export on the custodian, the CLI before it sends
 * anything): an RSA *public* key (SPKI or PKCS#1 PEM) of at least MIN_RECOVERY_KEY_BITS bits.
 * A private key is refused even though a public key could be derived from it: whoever sent it
 * has put the one secret of custodian recovery on the wire, and it must not go further (etcd,
 * the audit log). The refusal (INVALID_ARGUMENT) never quotes the input. Returns the key
 * re-encoded as SPKI PEM (what is stored and forwarded, never the caller's text) and its
 * fingerprint.
 */
export function parseRecoveryPublicKey(pem: unknown): { publicKeyPem: string; fingerprint: string; bits: number } {
  if (typeof pem !== 'string' || pem.length === 0) throw invalidArgument('the recovery key is required (an RSA public key PEM)');
  if (pem.length > 16 * 1024) throw invalidArgument('the recovery key is too long to be an RSA public key PEM');
  if (isPrivateKeyPem(pem)) throw invalidArgument('the recovery key is a private key: give the RSA public key only (the private key stays offline)');
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw invalidArgument('the recovery key is not a public key PEM');
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== 'rsa') throw invalidArgument(`the recovery key must be an RSA public key (got ${key.asymmetricKeyType ?? 'an unknown type'})`);
  if (bits < MIN_RECOVERY_KEY_BITS) throw invalidArgument(`the recovery key must be RSA of at least ${MIN_RECOVERY_KEY_BITS} bits (got ${bits})`);
  const der = key.export({ type: 'spki', format: 'der' });
  return { publicKeyPem: key.export({ type: 'spki', format: 'pem' }).toString(), fingerprint: createHash('sha256').update(der).digest('hex'), bits };
}

/**
 * The name of an offline recovery public key: the SHA-256 of its SPKI DER encoding, hex (what an
 * export-share ceremony binds). Lenient on size (RSA ≥ 2048) so keys named before the 3072-bit
 * floor can still be verified and revoked; where a key is *accepted*, parseRecoveryPublicKey
 * applies. A private key is refused here too.
 */
export function recoveryKeyFingerprint(publicKeyPem: string): string {
  if (typeof publicKeyPem === 'string' && isPrivateKeyPem(publicKeyPem)) throw invalidArgument('the recovery key is a private key: give the RSA public key only');
  let key: KeyObject;
  try {
    key = createPublicKey(publicKeyPem);
  } catch {
    throw invalidArgument('the recovery key is not a public key PEM');
  }
  if (key.asymmetricKeyType !== 'rsa' || (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) throw invalidArgument('the recovery key must be RSA, at least 2048 bits');
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex');
}
