/**
 * @keyshard/hsm — a custodian's access to its PKCS#11 token (SoftHSM2 in tests, a real HSM in
 * production, same module interface: PKCS#11 v2.40).
 *
 * Invariants:
 * - The custodian's Shamir share exists in plaintext only inside the token: it arrives
 *   RSA-OAEP-encrypted (RFC 8017 §7.1) to the enrollment key and is C_UnwrapKey'd straight into a
 *   sensitive, CKA_WRAP_WITH_TRUSTED token object; it leaves only through C_WrapKey,
 *   RSA-OAEP-encrypted to a key the token's security officer marked CKA_TRUSTED (a coordinator's
 *   transport key or an offline recovery key). The TOKEN enforces this, not this code: a holder
 *   of the user PIN cannot wrap the share to any other key (token.spec.ts shows the attacks).
 * - SO work (enrolling / revoking trusted keys) takes the SO PIN per call and never keeps it.
 *   No method returns, logs or puts into an error message any share, key bytes or PIN.
 * - The enrollment (RSA-2048, decrypt/unwrap) and approval (Ed25519, sign-only) private keys are
 *   generated inside the token, sensitive and non-extractable.
 * - Every object is created with all usage flags set explicitly; objects are found by label.
 * - One operation per PKCS#11 session; a session that saw an error is discarded (see pkcs11.ts).
 * - Calls are synchronous (graphene); custodian operations are rare ceremony steps.
 */
import { createHash } from 'node:crypto';
import graphene from 'graphene-pk11';
import type { Key, Session, SessionObject } from 'graphene-pk11';
import { KeyshardError } from '@keyshard/errors';
import {
  APPROVAL_LABEL, ENROLLMENT_LABEL, SHARE_LABEL_PREFIX, approvalTemplates, checkClusterId, checkOaepHash,
  ed25519PublicPem, enrollmentTemplates, findTemplate, oaepMechanism, parseRsaPublicKey,  rsaPublicPem, recoveryKeyTemplate, shareLabel, sharePersistAttrs, shareTemplate, type OaepHash, checkGeneration, dataTemplate, parseShareLabel, peersLabel, PEERS_LABEL_PREFIX, SEAL_EPOCH_LABEL_PREFIX, SUCCESSION_LABEL_PREFIX,
  parseTrustedLabel, trustedKeyTemplate, trustedLabel, type TrustedKind,
} from './objects.ts';
import { CKA_EC_POINT, CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA, TokenHandle, findAll, findOne, p11Error } from './pkcs11.ts';

export { initSoftHsmToken, SOFTHSM_MODULE, type SoftHsmTokenSpec } from './softhsm.ts';
export { ENROLLMENT_LABEL, APPROVAL_LABEL, SHARE_LABEL_PREFIX, TRANSPORT_LABEL_PREFIX, RECOVERY_LABEL_PREFIX, trustedLabel, type OaepHash, type TrustedKind } from './objects.ts';

/** A key the token's security officer enrolled as CKA_TRUSTED: the only kind a share may be wrapped to. */
export interface TrustedKey {
  kind: TrustedKind;
  /** The coordinator id (transport) or the key's fingerprint (recovery). */
  name: string;
  publicKeyPem: string;
  /** SHA-256 of the SPKI DER encoding, hex. */
  fingerprint: string;
}

/** Where a share may be released: the trusted key enrolled for this coordinator id / recovery fingerprint. */
export interface WrapTarget {
  kind: TrustedKind;
  name: string;
}

const spkiFingerprint = (pem: string) => createHash('sha256').update(createPublicKeyDer(pem)).digest('hex');
function createPublicKeyDer(pem: string): Buffer {
  return parseRsaPublicKey(pem, 'public key').export({ type: 'spki', format: 'der' });
}

export interface TokenConfig {
  modulePath: string;
  tokenLabel: string;
  pin: string;
  /** RSA-OAEP hash for share delivery and release. SoftHSM 2.6 supports only 'sha1' (MGF1-SHA1). */
  oaepHash: OaepHash;
}

export interface CustodianIdentity {
  /** RSA-2048 SPKI PEM: shares are delivered encrypted to it (@keyshard/crypto oaepEncrypt). */
  enrollmentPublicKeyPem: string;
  /** Ed25519 SPKI PEM: verifies the custodian's ceremony approvals. */
  approvalPublicKeyPem: string;
}

const MAX_APPROVAL_MESSAGE = 1 << 20;

function asKey(obj: SessionObject): Key {
  return obj.toType() as Key;
}

function pemOf(obj: SessionObject): string {
  const a = obj.getAttribute({ modulus: null, publicExponent: null }) as { modulus: Buffer; publicExponent: Buffer };
  return rsaPublicPem(a.modulus, a.publicExponent);
}

function describeTarget(to: WrapTarget): string {
  return to.kind === 'transport' ? `coordinator ${to.name}` : `recovery key ${to.name.slice(0, 16)}…`;
}

export class CustodianToken {
  private constructor(
    private readonly handle: TokenHandle,
    private readonly oaepHash: OaepHash,
  ) {}

  /**
   * Loads the module (SOFTHSM2_CONF must already be in the environment for SoftHSM), finds the
   * token by label and logs in with the user PIN.
   */
  static open(cfg: TokenConfig): CustodianToken {
    if (!cfg || typeof cfg !== 'object') throw new KeyshardError('INVALID_ARGUMENT', 'token config is required');
    checkOaepHash(cfg.oaepHash);
    return new CustodianToken(TokenHandle.open(cfg.modulePath, cfg.tokenLabel, cfg.pin), cfg.oaepHash);
  }

  /** Creates the enrollment and approval key pairs on first use; returns their public keys. */
  ensureIdentity(): CustodianIdentity {
    return this.handle.withSession('create or read the custodian identity', (s) => {
      let enr = this.findPair(s, ENROLLMENT_LABEL);
      if (!enr) {
        const t = enrollmentTemplates();
        s.generateKeyPair(graphene.KeyGenMechanism.RSA, t.pub, t.priv);
        enr = this.findPair(s, ENROLLMENT_LABEL);
      }
      let appr = this.findPair(s, APPROVAL_LABEL);
      if (!appr) {
        const t = approvalTemplates();
        s.generateKeyPair({ name: CKM_EC_EDWARDS_KEY_PAIR_GEN, params: null }, t.pub, t.priv);
        appr = this.findPair(s, APPROVAL_LABEL);
      }
      if (!enr || !appr) throw new KeyshardError('INTERNAL', 'generated identity keys are not found in the token');

      const rsa = enr.pub.getAttribute({ modulus: null, publicExponent: null }) as { modulus: Buffer; publicExponent: Buffer };
      if (rsa.modulus.length !== 256) {
        throw new KeyshardError('FAILED_PRECONDITION', `${ENROLLMENT_LABEL} is not an RSA-2048 key`);
      }
      return {
        enrollmentPublicKeyPem: rsaPublicPem(rsa.modulus, rsa.publicExponent),
        approvalPublicKeyPem: ed25519PublicPem(appr.pub.getAttribute(CKA_EC_POINT)),
      };
    });
  }

  /**
   * C_UnwrapKey (RSA-OAEP with the enrollment key) of a delivered share into a sensitive token
   * object `keyshard-share:<clusterId>`. Refuses if one exists unless `replace`, in which case the
   * old object is destroyed only after the new one was created.
   */
  unwrapShare(clusterId: string, encryptedShare: Buffer, opts: { replace?: boolean; generation?: number } = {}): void {
    this.#unwrapInto(clusterId, encryptedShare, opts, 'not encrypted to this token\'s enrollment key?', (s) => ({ key: this.enrollmentPrivateKey(s), done: () => {} }));
  }

  /**
   * Custodian recovery: a share exported by another token (C_WrapKey, RSA-OAEP to an offline
   * recovery key) is C_UnwrapKey'd into this token with that recovery key, imported for the
   * one operation as a sensitive, non-extractable, unwrap-only SESSION object and destroyed
   * after. The share's plaintext exists only inside the two tokens. Refuses if a share of
   * that set is already held.
   */
  importRecoveredShare(clusterId: string, wrappedShare: Buffer, recoveryPrivateKeyPem: string, generation: number): void {
    const template = recoveryKeyTemplate(recoveryPrivateKeyPem);
    try {
      this.#unwrapInto(clusterId, wrappedShare, { generation }, 'not wrapped to this recovery key?', (s) => {
        const key = s.create(template);
        return { key: asKey(key), done: () => key.destroy() };
      });
    } finally {
      for (const v of Object.values(template)) if (Buffer.isBuffer(v)) v.fill(0); // the private key's components
    }
  }

  #unwrapInto(
    clusterId: string,
    encryptedShare: Buffer,
    opts: { replace?: boolean; generation?: number },
    hint: string,
    unwrappingKey: (s: Session) => { key: Key; done: () => void },
  ): void {
    checkClusterId(clusterId);
    const generation = opts.generation ?? 1;
    checkGeneration(generation);
    if (!Buffer.isBuffer(encryptedShare) || encryptedShare.length === 0) {
      throw new KeyshardError('INVALID_ARGUMENT', 'encryptedShare must be a non-empty Buffer');
    }
    this.handle.withSession(`unwrap the share for cluster ${clusterId}`, (s) => {
      const existing = findAll(s, findTemplate('secret', shareLabel(clusterId, generation)));
      if (existing.length > 0 && !opts.replace) {
        throw new KeyshardError('FAILED_PRECONDITION', `a share for cluster ${clusterId} is already held (use replace)`);
      }
      const unwrapping = unwrappingKey(s);
      // Stage as a session object (gone with the session if anything fails), then persist.
      let staged: Key;
      try {
        staged = s.unwrapKey(oaepMechanism(this.oaepHash), unwrapping.key, encryptedShare, shareTemplate(clusterId, { stage: true, generation }));
      } catch (e) {
        // SoftHSM reports an OAEP decoding failure (wrong key/hash, corrupted data) as CKR_GENERAL_ERROR.
        throw p11Error(`unwrap the share for cluster ${clusterId} (${hint})`, e, {
          CKR_GENERAL_ERROR: 'INVALID_ARGUMENT',
          CKR_ENCRYPTED_DATA_INVALID: 'INVALID_ARGUMENT',
        });
      } finally {
        unwrapping.done();
      }
      const created = staged.copy(sharePersistAttrs());
      staged.destroy();
      try {
        for (const old of existing) old.destroy();
      } catch (e) {
        // Never leave two shares for one cluster: drop the new one and report.
        try {
          created.destroy();
        } catch {
          /* reported below */
        }
        throw e;
      }
    });
  }

  hasShare(clusterId: string, generation = 1): boolean {
    checkClusterId(clusterId);
    return this.handle.withSession('look up a share', (s) => s.find(findTemplate('secret', shareLabel(clusterId, generation))).length > 0);
  }

  /** The share generations this token holds for `clusterId`, ascending. */
  shareGenerations(clusterId: string): number[] {
    checkClusterId(clusterId);
    return this.handle.withSession('list share generations', (s) =>
      findAll(s, { class: graphene.ObjectClass.SECRET_KEY, token: true })
        .map((o) => parseShareLabel(String(o.getAttribute('label') ?? '')))
        .filter((p) => p?.clusterId === clusterId)
        .map((p) => p!.generation)
        .sort((a, b) => a - b),
    );
  }

  /** Stores (replacing) the non-secret description of a share set: its custodians and threshold. */
  storePeers(clusterId: string, generation: number, value: Buffer): void {
    checkClusterId(clusterId);
    checkGeneration(generation);
    this.#storeData('store share-set peers', peersLabel(clusterId, generation), value);
  }

  readPeers(clusterId: string, generation: number): Buffer | undefined {
    checkClusterId(clusterId);
    checkGeneration(generation);
    return this.#readData('read share-set peers', peersLabel(clusterId, generation));
  }

  /** Stores (replacing) this custodian's succession record for a cluster (custodian recovery; not secret). */
  storeSuccession(clusterId: string, value: Buffer): void {
    checkClusterId(clusterId);
    this.#storeData('store the succession record', `${SUCCESSION_LABEL_PREFIX}${clusterId}`, value);
  }

  /** Stores (replacing) the highest seal epoch this custodian was told of for a cluster. */
  storeSealEpoch(clusterId: string, epoch: number): void {
    checkClusterId(clusterId);
    this.#storeData('store the seal epoch', `${SEAL_EPOCH_LABEL_PREFIX}${clusterId}`, Buffer.from(String(epoch)));
  }

  readSealEpoch(clusterId: string): number {
    checkClusterId(clusterId);
    const raw = this.#readData('read the seal epoch', `${SEAL_EPOCH_LABEL_PREFIX}${clusterId}`);
    const n = raw ? Number(raw.toString()) : 0;
    return Number.isSafeInteger(n) && n > 0 ? n : 0;
  }

  readSuccession(clusterId: string): Buffer | undefined {
    checkClusterId(clusterId);
    return this.#readData('read the succession record', `${SUCCESSION_LABEL_PREFIX}${clusterId}`);
  }

  #storeData(what: string, label: string, value: Buffer): void {
    this.handle.withSession(what, (s) => {
      const old = findAll(s, { class: graphene.ObjectClass.DATA, token: true, label });
      s.create(dataTemplate(label, value));
      for (const o of old) o.destroy();
    });
  }

  #readData(what: string, label: string): Buffer | undefined {
    return this.handle.withSession(what, (s) => {
      const o = findOne(s, { class: graphene.ObjectClass.DATA, token: true, label }, what);
      return o ? Buffer.from(o.getAttribute('value') as Buffer) : undefined;
    });
  }

  /** Cluster ids for which this token holds a share, sorted. */
  shareClusterIds(): string[] {
    return this.handle.withSession('list shares', (s) => {
      const ids = new Set<string>();
      for (const obj of findAll(s, { class: graphene.ObjectClass.SECRET_KEY, token: true })) {
        const parsed = parseShareLabel(String(obj.getAttribute('label') ?? ''));
        if (parsed) ids.add(parsed.clusterId);
      }
      return [...ids].sort();
    });
  }

  /**
   * Releases the share wrapped (C_WrapKey, RSA-OAEP with cfg.oaepHash) to the trusted key the SO
   * enrolled for `to` whose public key is `publicKeyPem`. No such key: PERMISSION_DENIED naming
   * the coordinator (or recovery key); nothing is released. The token itself refuses any
   * untrusted wrapping key (CKA_WRAP_WITH_TRUSTED), this lookup only picks the right trusted one.
   */
  wrapShare(clusterId: string, to: WrapTarget, publicKeyPem: string, generation = 1): Buffer {
    checkClusterId(clusterId);
    const label = trustedLabel(to.kind, to.name);
    const wanted = parseRsaPublicKey(publicKeyPem, `${to.kind} public key`).export({ type: 'spki', format: 'pem' }).toString();
    return this.handle.withSession(`wrap the share for cluster ${clusterId}`, (s) => {
      const share = findOne(s, findTemplate('secret', shareLabel(clusterId, generation)), `cluster ${clusterId}'s share`);
      if (!share) throw new KeyshardError('NOT_FOUND', `no share for cluster ${clusterId} in this token`);
      const trusted = this.#trustedObjects(s, label).find((o) => o.publicKeyPem === wanted);
      if (!trusted)
        throw new KeyshardError('PERMISSION_DENIED', `${describeTarget(to)} has no ${to.kind === 'transport' ? 'transport' : 'trusted'} key enrolled in this custodian's token matching the requested one (its security officer enrolls it)`, { reason: 'NOT_ENROLLED' });
      return Buffer.from(s.wrapKey(oaepMechanism(this.oaepHash), asKey(trusted.obj), asKey(share)));
    });
  }

  /** Every trusted key the SO enrolled (readable in a user session: they are public objects). */
  listTrustedKeys(): TrustedKey[] {
    return this.handle.withSession('list trusted keys', (s) =>
      findAll(s, { class: graphene.ObjectClass.PUBLIC_KEY, token: true, trusted: true })
        .map((o) => ({ o, parsed: parseTrustedLabel(String(o.getAttribute('label') ?? '')) }))
        .filter((x) => x.parsed)
        .map(({ o, parsed }) => {
          const pem = pemOf(o);
          return { kind: parsed!.kind, name: parsed!.name, publicKeyPem: pem, fingerprint: spkiFingerprint(pem) };
        })
        .sort((a, b) => (a.kind + a.name + a.fingerprint < b.kind + b.name + b.fingerprint ? -1 : 1)),
    );
  }

  /**
   * Enrolls `publicKeyPem` as a trusted wrapping key for `to` (a coordinator's transport key, or
   * an offline recovery key named by its fingerprint) in a security-officer session. The SO PIN
   * is used for this call only. Returns false if exactly this key was already enrolled for `to`.
   * Several keys may be enrolled for one coordinator (a rotation enrolls the new before revoking the old).
   */
  enrollTrustedKey(to: WrapTarget, publicKeyPem: string, soPin: string): boolean {
    const key = parseRsaPublicKey(publicKeyPem, `${to.kind} public key`);
    const pem = key.export({ type: 'spki', format: 'pem' }).toString();
    if (to.kind === 'recovery' && spkiFingerprint(pem) !== to.name) throw new KeyshardError('INVALID_ARGUMENT', 'the recovery key does not match the fingerprint it is enrolled under');
    const label = trustedLabel(to.kind, to.name);
    return this.handle.asSecurityOfficer(`enroll a trusted ${to.kind} key`, soPin, (s) => {
      const existing = this.#trustedObjects(s, label);
      if (existing.some((e) => e.publicKeyPem === pem)) return false;
      if (existing.length >= 4) throw new KeyshardError('FAILED_PRECONDITION', `${describeTarget(to)} already has ${existing.length} trusted keys enrolled; revoke one first`);
      s.create(trustedKeyTemplate(label, key));
      return true;
    });
  }

  /**
   * Revokes (destroys, in an SO session) the trusted keys enrolled for `to` — only the one equal
   * to `publicKeyPem` when given (the old key of a rotation). Returns how many were destroyed.
   */
  revokeTrustedKey(to: WrapTarget, soPin: string, publicKeyPem?: string): number {
    const label = trustedLabel(to.kind, to.name);
    const only = publicKeyPem ? parseRsaPublicKey(publicKeyPem, `${to.kind} public key`).export({ type: 'spki', format: 'pem' }).toString() : undefined;
    return this.handle.asSecurityOfficer(`revoke a trusted ${to.kind} key`, soPin, (s) => {
      const doomed = this.#trustedObjects(s, label).filter((e) => !only || e.publicKeyPem === only);
      for (const d of doomed) d.obj.destroy();
      return doomed.length;
    });
  }

  #trustedObjects(s: Session, label: string): { obj: SessionObject; publicKeyPem: string }[] {
    return findAll(s, { class: graphene.ObjectClass.PUBLIC_KEY, token: true, trusted: true, label }).map((obj) => ({ obj, publicKeyPem: pemOf(obj) }));
  }

  /** Ed25519 (CKM_EDDSA, pure) signature by the approval key, made inside the token. */
  signApproval(message: Buffer): Buffer {
    if (!Buffer.isBuffer(message) || message.length === 0 || message.length > MAX_APPROVAL_MESSAGE) {
      throw new KeyshardError('INVALID_ARGUMENT', 'approval message must be a non-empty Buffer of at most 1 MiB');
    }
    return this.handle.withSession('sign an approval', (s) => {
      const priv = findOne(s, findTemplate('private', APPROVAL_LABEL), 'the approval key');
      if (!priv) throw new KeyshardError('FAILED_PRECONDITION', 'approval key not created yet (ensureIdentity)');
      const sig = s.createSign({ name: CKM_EDDSA, params: null }, asKey(priv)).once(message);
      if (sig.length !== 64) throw new KeyshardError('INTERNAL', 'token returned a malformed Ed25519 signature');
      return Buffer.from(sig);
    });
  }

  /**
   * Destroys the share object(s) of `clusterId` — of one generation, or of every generation when
   * none is given — and their peers records; false if there was no share.
   */
  destroyShare(clusterId: string, generation?: number): boolean {
    checkClusterId(clusterId);
    if (generation !== undefined) checkGeneration(generation);
    return this.handle.withSession(`destroy the share for cluster ${clusterId}`, (s) => {
      const found = findAll(s, { class: graphene.ObjectClass.SECRET_KEY, token: true }).filter((o) => {
        const p = parseShareLabel(String(o.getAttribute('label') ?? ''));
        return p?.clusterId === clusterId && (generation === undefined || p.generation === generation);
      });
      const peers = findAll(s, { class: graphene.ObjectClass.DATA, token: true }).filter((o) => {
        const label = String(o.getAttribute('label') ?? '');
        return generation === undefined ? label.startsWith(`${PEERS_LABEL_PREFIX}${clusterId}#`) : label === peersLabel(clusterId, generation);
      });
      for (const obj of [...found, ...peers]) obj.destroy();
      return found.length > 0;
    });
  }

  /** Logs out (when no other handle of this process uses the token) and finalizes the module. */
  close(): void {
    this.handle.close();
  }

  private findPair(s: Session, label: string): { pub: SessionObject; priv: SessionObject } | null {
    const pub = findOne(s, findTemplate('public', label), `public key ${label}`);
    const priv = findOne(s, findTemplate('private', label), `private key ${label}`);
    if (!pub && !priv) return null;
    if (!pub || !priv) {
      throw new KeyshardError('FAILED_PRECONDITION', `token holds only half of the ${label} key pair`);
    }
    const a = priv.getAttribute({ sensitive: null, extractable: null }) as { sensitive: boolean; extractable: boolean };
    if (!a.sensitive || a.extractable) {
      throw new KeyshardError('FAILED_PRECONDITION', `${label} private key is extractable or not sensitive`);
    }
    return { pub, priv };
  }

  private enrollmentPrivateKey(s: Session): Key {
    const priv = findOne(s, findTemplate('private', ENROLLMENT_LABEL), 'the enrollment key');
    if (!priv) throw new KeyshardError('FAILED_PRECONDITION', 'enrollment key not created yet (ensureIdentity)');
    return asKey(priv);
  }
}
