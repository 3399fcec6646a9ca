/**
 * Object templates, labels and public-key encodings of the custodian token (internal).
 *
 * Invariants:
 * - Every template sets CKA_TOKEN, CKA_PRIVATE and every usage flag explicitly (PKCS#11 v2.40
 *   §4.8-4.9 defaults are token-specific), so a key can only be used for its one purpose.
 * - Private keys are CKA_SENSITIVE=true, CKA_EXTRACTABLE=false: they never leave the token.
 * - A share is CKO_SECRET_KEY/CKK_GENERIC_SECRET, sensitive (its CKA_VALUE can never be read),
 *   CKA_WRAP_WITH_TRUSTED (the token lets only CKA_TRUSTED keys wrap it), non-modifiable,
 *   extractable only so that C_WrapKey can release it to such a key, and usable for nothing
 *   else. Share plaintext never leaves the token except wrapped to a trusted key.
 * - Trusted keys are RSA public token objects marked CKA_TRUSTED by the security officer (only
 *   the SO can set it, PKCS#11 v2.40 §4.8; SoftHSM 2.6 enforces it, token.spec.ts): wrap-only,
 *   non-modifiable, non-copyable, labelled `keyshard-transport:<coordinatorId>` (a coordinator's
 *   long-term transport key) or `keyshard-recovery:<fingerprint>` (an offline recovery key).
 * - RSA-OAEP per RFC 8017 §7.1 with MGF1 over the same hash as the label hash (empty label).
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import graphene from 'graphene-pk11';
import type { ITemplate, IAlgorithm } from 'graphene-pk11';
import { KeyshardError } from '@keyshard/errors';
import { CKK_EC_EDWARDS } from './pkcs11.ts';

export type OaepHash = 'sha1' | 'sha256';

export const ENROLLMENT_LABEL = 'keyshard-enrollment';
export const APPROVAL_LABEL = 'keyshard-approval';
export const SHARE_LABEL_PREFIX = 'keyshard-share:';
export const TRANSPORT_LABEL_PREFIX = 'keyshard-transport:';
export const RECOVERY_LABEL_PREFIX = 'keyshard-recovery:';

/** What a trusted key is for: a coordinator's transport key, or an offline recovery key (custodian recovery). */
export type TrustedKind = 'transport' | 'recovery';
const COORDINATOR_ID_RE = /^[\w.-]{1,64}$/;
const FINGERPRINT_RE = /^[0-9a-f]{64}$/;

/** Label of a trusted key: `keyshard-transport:<coordinatorId>` or `keyshard-recovery:<SHA-256 of SPKI DER, hex>`. */
export function trustedLabel(kind: TrustedKind, name: string): string {
  if (kind === 'transport') {
    if (!COORDINATOR_ID_RE.test(name)) throw new KeyshardError('INVALID_ARGUMENT', 'coordinator id must be 1..64 characters of [A-Za-z0-9_.-]');
    return `${TRANSPORT_LABEL_PREFIX}${name}`;
  }
  if (kind === 'recovery') {
    if (!FINGERPRINT_RE.test(name)) throw new KeyshardError('INVALID_ARGUMENT', 'recovery key fingerprint must be 64 lowercase hex digits');
    return `${RECOVERY_LABEL_PREFIX}${name}`;
  }
  throw new KeyshardError('INVALID_ARGUMENT', "trusted key kind must be 'transport' or 'recovery'");
}

export function parseTrustedLabel(label: string): { kind: TrustedKind; name: string } | undefined {
  if (label.startsWith(TRANSPORT_LABEL_PREFIX)) return { kind: 'transport', name: label.slice(TRANSPORT_LABEL_PREFIX.length) };
  if (label.startsWith(RECOVERY_LABEL_PREFIX)) return { kind: 'recovery', name: label.slice(RECOVERY_LABEL_PREFIX.length) };
  return undefined;
}

const { ObjectClass, KeyType } = graphene;

/** DER of the RFC 8410 id-Ed25519 OID (1.3.101.112), used as CKA_EC_PARAMS. */
export const ED25519_EC_PARAMS = Buffer.from('06032b6570', 'hex');
/** SPKI prefix for an Ed25519 public key (RFC 8410 §4): SEQUENCE { AlgId, BIT STRING(32 bytes) }. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

const CLUSTER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function checkClusterId(clusterId: unknown): asserts clusterId is string {
  if (typeof clusterId !== 'string' || !CLUSTER_ID_RE.test(clusterId)) {
    throw new KeyshardError('INVALID_ARGUMENT', 'clusterId must be 1..128 characters of [A-Za-z0-9._-], starting alphanumeric');
  }
}

/**
 * A share set is a generation of a cluster's shares (a reshare or root rotation makes the next
 * one; both may sit in a token until the new set is confirmed). Generation 1 keeps the
 * original label; later ones append `#<generation>` (cluster ids cannot contain '#').
 */
export function shareLabel(clusterId: string, generation = 1): string {
  checkGeneration(generation);
  return generation === 1 ? `${SHARE_LABEL_PREFIX}${clusterId}` : `${SHARE_LABEL_PREFIX}${clusterId}#${generation}`;
}

export function parseShareLabel(label: string): { clusterId: string; generation: number } | undefined {
  if (!label.startsWith(SHARE_LABEL_PREFIX)) return undefined;
  const [clusterId, g] = label.slice(SHARE_LABEL_PREFIX.length).split('#');
  return { clusterId: clusterId!, generation: g === undefined ? 1 : Number(g) };
}

export function checkGeneration(generation: unknown): asserts generation is number {
  if (!Number.isSafeInteger(generation) || (generation as number) < 1)
    throw new KeyshardError('INVALID_ARGUMENT', 'share generation must be a positive integer');
}

/** What a custodian needs to check a quorum for its share set: the set's custodians and threshold. */
export const PEERS_LABEL_PREFIX = 'keyshard-peers:';
/** A restored custodian's succession record per cluster (packages/crypto/src/succession.ts). */
export const SUCCESSION_LABEL_PREFIX = 'keyshard-succession:';
/** The highest cluster seal epoch a custodian was told of (a signed seal notice; not secret). */
export const SEAL_EPOCH_LABEL_PREFIX = 'keyshard-seal-epoch:';
export const peersLabel = (clusterId: string, generation: number) => `${PEERS_LABEL_PREFIX}${clusterId}#${generation}`;

/** A private, non-modifiable data object on the token (CKO_DATA). */
export function dataTemplate(label: string, value?: Buffer): ITemplate {
  const t: ITemplate = { class: ObjectClass.DATA, token: true, private: true, label, modifiable: false, application: 'keyshard' };
  if (value) t.value = value;
  return t;
}

export function checkOaepHash(hash: unknown): asserts hash is OaepHash {
  if (hash !== 'sha1' && hash !== 'sha256') {
    throw new KeyshardError('INVALID_ARGUMENT', "oaepHash must be 'sha1' or 'sha256'");
  }
}

/** CKM_RSA_PKCS_OAEP with hash = MGF1 hash = `hash`, source = empty label (RFC 8017 §7.1). */
export function oaepMechanism(hash: OaepHash): IAlgorithm {
  const params =
    hash === 'sha1'
      ? new graphene.RsaOaepParams(graphene.MechanismEnum.SHA1, graphene.RsaMgf.MGF1_SHA1)
      : new graphene.RsaOaepParams(graphene.MechanismEnum.SHA256, graphene.RsaMgf.MGF1_SHA256);
  return { name: 'RSA_PKCS_OAEP', params };
}

const ID_ENROLLMENT = Buffer.from(ENROLLMENT_LABEL);
const ID_APPROVAL = Buffer.from(APPROVAL_LABEL);

export function enrollmentTemplates(): { pub: ITemplate; priv: ITemplate } {
  return {
    pub: {
      keyType: KeyType.RSA, token: true, private: false, label: ENROLLMENT_LABEL, id: ID_ENROLLMENT,
      modulusBits: 2048, publicExponent: Buffer.from([1, 0, 1]),
      encrypt: true, wrap: true, verify: false, verifyRecover: false, derive: false, modifiable: false,
    },
    priv: {
      keyType: KeyType.RSA, token: true, private: true, label: ENROLLMENT_LABEL, id: ID_ENROLLMENT,
      sensitive: true, extractable: false,
      decrypt: false, unwrap: true, sign: false, signRecover: false, derive: false, modifiable: false,
    },
  };
}

export function approvalTemplates(): { pub: ITemplate; priv: ITemplate } {
  return {
    pub: {
      keyType: CKK_EC_EDWARDS, token: true, private: false, label: APPROVAL_LABEL, id: ID_APPROVAL,
      paramsEC: ED25519_EC_PARAMS,
      verify: true, encrypt: false, wrap: false, verifyRecover: false, derive: false, modifiable: false,
    },
    priv: {
      keyType: CKK_EC_EDWARDS, token: true, private: true, label: APPROVAL_LABEL, id: ID_APPROVAL,
      sensitive: true, extractable: false,
      sign: true, decrypt: false, unwrap: false, signRecover: false, derive: false, modifiable: false,
    },
  };
}

/** Search templates. `class` is set by graphene for key-pair generation, but needed for find. */
export const findTemplate = (cls: 'public' | 'private' | 'secret', label: string): ITemplate => ({
  class: cls === 'public' ? ObjectClass.PUBLIC_KEY : cls === 'private' ? ObjectClass.PRIVATE_KEY : ObjectClass.SECRET_KEY,
  token: true,
  label,
});

/**
 * Template of a share object: CKA_WRAP_WITH_TRUSTED=true, so C_WrapKey refuses every wrapping key
 * but an SO-enrolled trusted one (CKR_KEY_NOT_WRAPPABLE), and the attribute can never go back to
 * false (PKCS#11 v2.40 §4.9 footnote 11). SoftHSM 2.6.1 refuses CKA_MODIFIABLE=false on any object
 * C_UnwrapKey creates (CKR_ATTRIBUTE_READ_ONLY), so unwrapping targets a session object (`stage`)
 * that is then C_CopyObject'ed to the token with `sharePersistAttrs` (token=true, modifiable=false).
 * CKA_COPYABLE stays true: SoftHSM 2.6.1 lets it be set only at creation, and an object made by
 * C_UnwrapKey with CKA_COPYABLE=false could not be made non-modifiable — a modifiable share could
 * be re-flagged derive=true and derived into an unprotected key, a copy cannot: every copy keeps
 * wrapWithTrusted/sensitive/non-modifiable and no copy template may change them (token.spec.ts).
 * `wrapWithTrusted: false` is only for the test that shows the attack on the old template.
 * `value` is only for the tampering test helper's C_CreateObject.
 */
export function shareTemplate(clusterId: string, opts: { stage?: boolean; value?: Buffer; generation?: number; wrapWithTrusted?: boolean } = {}): ITemplate {
  const t: ITemplate = {
    class: ObjectClass.SECRET_KEY, keyType: KeyType.GENERIC_SECRET,
    token: !opts.stage, private: true, label: shareLabel(clusterId, opts.generation),
    sensitive: true, extractable: true, wrapWithTrusted: opts.wrapWithTrusted ?? true, modifiable: !opts.stage ? false : true,
    encrypt: false, decrypt: false, sign: false, verify: false, wrap: false, unwrap: false, derive: false,
  };
  if (opts.value) t.value = opts.value;
  return t;
}

/** C_CopyObject template turning a staged share into the persistent, non-modifiable token object. */
export const sharePersistAttrs = (): ITemplate => ({ token: true, modifiable: false });

/** Modulus and public exponent of an RSA public key, as PKCS#11 holds them (big-endian, no leading zeros). */
export function rsaComponents(key: KeyObject): { modulus: Buffer; publicExponent: Buffer } {
  const jwk = key.export({ format: 'jwk' });
  if (!jwk.n || !jwk.e) throw new KeyshardError('INVALID_ARGUMENT', 'key is not an RSA public key');
  return { modulus: Buffer.from(jwk.n, 'base64url'), publicExponent: Buffer.from(jwk.e, 'base64url') };
}

/**
 * A trusted wrapping key, created by the SO: a public token object (an SO may create only public
 * objects), CKA_TRUSTED, usable only to wrap, non-modifiable and non-copyable. Destroyable, so the
 * SO can revoke it.
 */
export function trustedKeyTemplate(label: string, key: KeyObject): ITemplate {
  return {
    class: ObjectClass.PUBLIC_KEY, keyType: KeyType.RSA,
    token: true, private: false, label, id: Buffer.from(label),
    ...rsaComponents(key),
    trusted: true, wrap: true, encrypt: false, verify: false, verifyRecover: false, derive: false,
    modifiable: false, copyable: false,
  } as ITemplate;
}

/** Test-only: a recipient RSA public key as a plain (untrusted) session object that could wrap. */
export function recipientTemplate(key: KeyObject): ITemplate {
  return {
    class: ObjectClass.PUBLIC_KEY, keyType: KeyType.RSA,
    token: false, private: false, label: 'keyshard-recipient',
    ...rsaComponents(key),
    wrap: true, encrypt: false, verify: false, verifyRecover: false, derive: false,
  };
}

/**
 * An offline recovery private key (PKCS#8 or PKCS#1 PEM, RSA 2048..8192) as a session object
 * that can only unwrap: sensitive, not extractable, gone with the session.
 */
export function recoveryKeyTemplate(pem: string): ITemplate {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new KeyshardError('INVALID_ARGUMENT', 'recovery key is not a valid private key PEM');
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== 'rsa' || bits < 2048 || bits > 8192) throw new KeyshardError('INVALID_ARGUMENT', 'recovery key must be an RSA key of 2048..8192 bits');
  const jwk = key.export({ format: 'jwk' });
  const b = (v: string | undefined) => Buffer.from(v ?? '', 'base64url');
  return {
    class: ObjectClass.PRIVATE_KEY, keyType: KeyType.RSA,
    token: false, private: true, sensitive: true, extractable: false, label: 'keyshard-recovery',
    modulus: b(jwk.n), publicExponent: b(jwk.e), privateExponent: b(jwk.d), prime1: b(jwk.p), prime2: b(jwk.q),
    exp1: b(jwk.dp), exp2: b(jwk.dq), coefficient: b(jwk.qi),
    unwrap: true, decrypt: false, sign: false, signRecover: false, derive: false,
  };
}

/** Parses a recipient/enrollment RSA public key PEM (SPKI or PKCS#1); at least 2048 bits. */
export function parseRsaPublicKey(pem: string, what: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new KeyshardError('INVALID_ARGUMENT', `${what} is not a valid public key PEM`);
  }
  if (key.asymmetricKeyType !== 'rsa') {
    throw new KeyshardError('INVALID_ARGUMENT', `${what} must be an RSA public key`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < 2048 || bits > 8192) {
    throw new KeyshardError('INVALID_ARGUMENT', `${what} must be an RSA key of 2048..8192 bits`);
  }
  return key;
}

export function rsaPublicPem(modulus: Buffer, publicExponent: Buffer): string {
  const key = createPublicKey({
    key: { kty: 'RSA', n: modulus.toString('base64url'), e: publicExponent.toString('base64url') },
    format: 'jwk',
  });
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

/**
 * CKA_EC_POINT of an Ed25519 key to SPKI PEM. SoftHSM 2.6 returns the DER OCTET STRING
 * (04 20 || 32 bytes, as PKCS#11 v2.40 §2.3.3 says for EC points); PKCS#11 v3.0 tokens may
 * return the raw 32 bytes. Both are accepted.
 */
export function ed25519PublicPem(ecPoint: Buffer): string {
  let raw: Buffer;
  if (ecPoint.length === 34 && ecPoint[0] === 0x04 && ecPoint[1] === 0x20) raw = ecPoint.subarray(2);
  else if (ecPoint.length === 32) raw = ecPoint;
  else throw new KeyshardError('INTERNAL', `unexpected Ed25519 CKA_EC_POINT encoding (${ecPoint.length} bytes)`);
  const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
  return key.export({ type: 'spki', format: 'pem' }).toString();
}
