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

/** What parsePublicRsaKey checks a key against, and how its refusals name it. */
interface RsaPublicKeyRule {
  /** 'the recovery key', 'the transport key'. */
  what: string;
  /** The refusal of a private key: what to give instead. */
  privateHint: string;
  minBits: number;
  maxBits: number;
}

/**
 * An RSA *public* key (SPKI or PKCS#1 PEM) within `rule`'s sizes. A private key is refused even
 * though a public key could be derived from it: whoever sent it has put a secret on the wire,
 * and it must not go further (etcd, a token, the audit log). Refusals (INVALID_ARGUMENT) never
 * quote the input. Returns the key re-encoded as SPKI PEM (what is stored and forwarded, never
 * the caller's text) and its fingerprint (SHA-256 of the SPKI DER, hex).
 */
function parsePublicRsaKey(pem: unknown, rule: RsaPublicKeyRule): { publicKeyPem: string; fingerprint: string; bits: number } {
  const { what } = rule;
  if (typeof pem !== 'string' || pem.length === 0) throw invalidArgument(`${what} is required (an RSA public key PEM)`);
  if (pem.length > 16 * 1024) throw invalidArgument(`${what} is too long to be an RSA public key PEM`);
  if (isPrivateKeyPem(pem)) throw invalidArgument(`${what} is a private key: ${rule.privateHint}`);
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw invalidArgument(`${what} is not a public key PEM`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== 'rsa') throw invalidArgument(`${what} must be an RSA public key (got ${key.asymmetricKeyType ?? 'an unknown type'})`);
  if (bits < rule.minBits) throw invalidArgument(`${what} must be RSA of at least ${rule.minBits} bits (got ${bits})`);
  if (bits > rule.maxBits) throw invalidArgument(`${what} must be RSA of at most ${rule.maxBits} bits (got ${bits})`);
  const der = key.export({ type: 'spki', format: 'der' });
  return { publicKeyPem: key.export({ type: 'spki', format: 'pem' }).toString(), fingerprint: createHash('sha256').update(der).digest('hex'), bits };
}

/**
 * The one check of an offline recovery key wherever one is accepted (export-share ceremony start
 * on the coordinator, trusted-key enrollment and export on the custodian, the CLI before it sends
 * anything): an RSA public key of at least MIN_RECOVERY_KEY_BITS bits (parsePublicRsaKey).
 */
export function parseRecoveryPublicKey(pem: unknown): { publicKeyPem: string; fingerprint: string; bits: number } {
  return parsePublicRsaKey(pem, { what: 'the recovery key', privateHint: 'give the RSA public key only (the private key stays offline)', minBits: MIN_RECOVERY_KEY_BITS, maxBits: Infinity });
}

/** The sizes of a coordinator transport key a custodian token accepts (RSA-OAEP wrap target). */
export const MIN_TRANSPORT_KEY_BITS = 2048;
export const MAX_TRANSPORT_KEY_BITS = 8192;

/**
 * The one check of a coordinator's transport public key wherever one is enrolled (the custodian's
 * EnrollTransportKey / RevokeTransportKey, the CLI's --transport-public-key before it sends
 * anything): an RSA public key of 2048..8192 bits (parsePublicRsaKey). The transport private key
 * lives only in the coordinator's 0600 key file (services/coordinator transport-key.ts).
 */
export function parseTransportPublicKey(pem: unknown): { publicKeyPem: string; fingerprint: string; bits: number } {
  return parsePublicRsaKey(pem, {
    what: 'the transport key',
    privateHint: "give the coordinator's transport public key only (its private key never leaves the coordinator)",
    minBits: MIN_TRANSPORT_KEY_BITS,
    maxBits: MAX_TRANSPORT_KEY_BITS,
  });
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
