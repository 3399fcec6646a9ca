/**
 * Test-only helpers for @keyshard/hsm. NOT exported from the package index and never used by
 * services: they exist to simulate a tampered or misbehaving custodian token in tests.
 *
 * Invariant kept even here: nothing reads a share's value out of the token. The overwrite helper
 * only injects a value the TEST chose (C_CreateObject, PKCS#11 v2.40 §5.7) with the exact share
 * template, so later wrapShare() calls release the forged value like a real share.
 */
import { constants, createDecipheriv, generateKeyPairSync, privateDecrypt } from 'node:crypto';
import graphene from 'graphene-pk11';
import type { Key, Session, SessionObject } from 'graphene-pk11';
import { KeyshardError } from '@keyshard/errors';
import type { TokenConfig } from './index.ts';
import { checkClusterId, findTemplate, oaepMechanism, recipientTemplate, rsaComponents, shareLabel, sharePersistAttrs, shareTemplate } from './objects.ts';
import { TokenHandle, ckrName, findAll } from './pkcs11.ts';

function withToken<T>(cfg: TokenConfig, fn: (h: TokenHandle) => T): T {
  const h = TokenHandle.open(cfg.modulePath, cfg.tokenLabel, cfg.pin);
  try {
    return fn(h);
  } finally {
    h.close();
  }
}

/**
 * Replaces the share object of `clusterId` by a generic-secret object holding `value`, with the
 * same label and attributes (simulates a tampered token). Throws NOT_FOUND if no share is held.
 */
export function overwriteShareForTest(cfg: TokenConfig, clusterId: string, value: Buffer): void {
  checkClusterId(clusterId);
  if (!Buffer.isBuffer(value) || value.length === 0) throw new KeyshardError('INVALID_ARGUMENT', 'value must be a non-empty Buffer');
  withToken(cfg, (h) =>
    h.withSession('overwrite a share (test)', (s) => {
      const existing = findAll(s, findTemplate('secret', shareLabel(clusterId)));
      if (existing.length === 0) throw new KeyshardError('NOT_FOUND', `no share for cluster ${clusterId} in this token`);
      for (const obj of existing) obj.destroy();
      s.create(shareTemplate(clusterId, { value }));
    }),
  );
}

export interface ShareAttributes {
  wrapWithTrusted: boolean;
  modifiable: boolean;
  sensitive: boolean;
  extractable: boolean;
  token: boolean;
  private: boolean;
  encrypt: boolean;
  decrypt: boolean;
  sign: boolean;
  verify: boolean;
  wrap: boolean;
  unwrap: boolean;
  derive: boolean;
  /** Outcome of asking for CKA_VALUE: the CKR_* name of the refusal, or 'READABLE' (a failure). */
  valueRead: string;
}

/** Reads the security-relevant attributes of a share object (tests assert on them). */
export function shareAttributesForTest(cfg: TokenConfig, clusterId: string): ShareAttributes {
  checkClusterId(clusterId);
  return withToken(cfg, (h) =>
    h.withSession('read share attributes (test)', (s) => {
      const found = findAll(s, findTemplate('secret', shareLabel(clusterId)));
      const obj = found[0];
      if (!obj || found.length !== 1) throw new KeyshardError('NOT_FOUND', `expected exactly one share for ${clusterId}`);
      const a = obj.getAttribute({
        wrapWithTrusted: null, modifiable: null, sensitive: null, extractable: null, token: null, private: null, encrypt: null, decrypt: null,
        sign: null, verify: null, wrap: null, unwrap: null, derive: null,
      }) as Omit<ShareAttributes, 'valueRead'>;
      let valueRead = 'READABLE';
      try {
        obj.getAttribute('value');
      } catch (e) {
        valueRead = /\bCKR_[A-Z0-9_]+\b/.exec(e instanceof Error ? e.message : '')?.[0] ?? 'ERROR';
      }
      return { ...a, valueRead };
    }),
  );
}

/**
 * The share template BEFORE HSM-enforced release (CKA_WRAP_WITH_TRUSTED=false): delivers a share
 * the way the old code did, so a test can show that the attacks below then succeed.
 */
export function unwrapShareWithOldTemplateForTest(cfg: TokenConfig, clusterId: string, encryptedShare: Buffer, enrollmentLabel = 'keyshard-enrollment'): void {
  checkClusterId(clusterId);
  withToken(cfg, (h) =>
    h.withSession('deliver a share with the old template (test)', (s) => {
      const priv = s.find(findTemplate('private', enrollmentLabel)).items(0).toType() as Key;
      const staged = s.unwrapKey(oaepMechanism(cfg.oaepHash), priv, encryptedShare, shareTemplate(clusterId, { stage: true, wrapWithTrusted: false }));
      staged.copy(sharePersistAttrs());
      staged.destroy();
    }),
  );
}

export interface AttackOutcome {
  attack: string;
  /** `refused CKR_…` (or the step that was refused), or `succeeded`. */
  outcome: string;
  /** The share's plaintext, when the attack got it out. */
  share?: Buffer;
}

/**
 * What a holder of the token's USER PIN can try, with raw PKCS#11 calls in sessions of their
 * own, to get a share out (issue 14, attack 3): wrap it to an RSA key they import or an AES key
 * they generate; first copy or re-flag it (C_CopyObject / C_SetAttributeValue) to drop
 * CKA_WRAP_WITH_TRUSTED; make their own key CKA_TRUSTED. Each outcome is reported; an attack
 * that succeeds also decrypts the share, as the attacker would.
 */
export function tryToExfiltrateShareForTest(cfg: TokenConfig, clusterId: string, generation = 1): AttackOutcome[] {
  checkClusterId(clusterId);
  const attacker = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const out: AttackOutcome[] = [];
  return withToken(cfg, (h) => {
    const attempt = (attack: string, fn: (s: Session, share: Key) => Buffer | void) => {
      try {
        const got = h.withSession(`attack: ${attack}`, (s) => {
          const found = s.find(findTemplate('secret', shareLabel(clusterId, generation)));
          if (found.length === 0) throw new KeyshardError('NOT_FOUND', 'no share');
          return fn(s, found.items(0).toType() as Key);
        });
        out.push({ attack, outcome: 'succeeded', ...(got ? { share: got } : {}) });
      } catch (e) {
        const cause = (e as Error).cause ?? e;
        out.push({ attack, outcome: `refused ${ckrName(cause) ?? ckrName(e) ?? (e as Error).message}` });
      }
    };
    const importAttackerKey = (s: Session, extra: Record<string, unknown> = {}) =>
      s.create({ ...recipientTemplate(attacker.publicKey), ...extra } as graphene.ITemplate).toType() as Key;
    const wrapToAttackerRsa = (s: Session, share: Key | SessionObject) =>
      privateDecrypt({ key: attacker.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: cfg.oaepHash }, s.wrapKey(oaepMechanism(cfg.oaepHash), importAttackerKey(s), (share as SessionObject).toType() as Key));
    const aesKey = (s: Session) =>
      s.generateKey(graphene.KeyGenMechanism.AES, { class: graphene.ObjectClass.SECRET_KEY, keyType: graphene.KeyType.AES, token: false, valueLen: 32, wrap: true, encrypt: true, extractable: true, sensitive: false });

    attempt('C_WrapKey to an RSA public key the attacker imports', (s, share) => wrapToAttackerRsa(s, share));
    attempt('C_WrapKey to an AES key the attacker generates (CKM_AES_KEY_WRAP_PAD)', (s, share) => {
      const kek = aesKey(s);
      const wrapped = s.wrapKey({ name: 'AES_KEY_WRAP_PAD', params: null }, kek, share);
      const value = kek.getAttribute('value') as Buffer; // the attacker's own, non-sensitive key
      const d = createDecipheriv('id-aes256-wrap-pad', value, Buffer.from('a65959a6', 'hex'));
      return Buffer.concat([d.update(wrapped), d.final()]);
    });
    for (const template of [{ wrapWithTrusted: false }, {}, { token: false }, { modifiable: true }, { derive: true }])
      attempt(`C_CopyObject ${JSON.stringify(template)}, then C_WrapKey the copy to an imported RSA key`, (s, share) => {
        const copy = share.copy(template as graphene.ITemplate);
        try {
          return wrapToAttackerRsa(s, copy);
        } finally {
          copy.destroy();
        }
      });
    for (const template of [{ wrapWithTrusted: false }, { modifiable: true }, { derive: true }])
      attempt(`C_SetAttributeValue ${JSON.stringify(template)}, then C_WrapKey to an imported RSA key`, (s, share) => {
        share.setAttribute(template as graphene.ITemplate);
        return wrapToAttackerRsa(s, share);
      });
    attempt('C_CreateObject of an RSA public key with CKA_TRUSTED=true, then C_WrapKey to it', (s, share) => {
      const mine = importAttackerKey(s, { trusted: true });
      return privateDecrypt({ key: attacker.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: cfg.oaepHash }, s.wrapKey(oaepMechanism(cfg.oaepHash), mine, share));
    });
    attempt('C_SetAttributeValue CKA_TRUSTED=true on an imported RSA key, then C_WrapKey to it', (s, share) => {
      const mine = importAttackerKey(s);
      mine.setAttribute({ trusted: true });
      return privateDecrypt({ key: attacker.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: cfg.oaepHash }, s.wrapKey(oaepMechanism(cfg.oaepHash), mine, share));
    });
    attempt('C_SetAttributeValue CKA_TRUSTED=true on a generated AES key, then C_WrapKey to it', (s, share) => {
      const kek = aesKey(s);
      kek.setAttribute({ trusted: true });
      s.wrapKey({ name: 'AES_KEY_WRAP_PAD', params: null }, kek, share);
    });
    return out;
  });
}

/** An RSA public key's PKCS#11 components (tests compare them with what a token holds). */
export { rsaComponents };
