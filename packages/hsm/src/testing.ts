/**
 * Test-only helpers for @keyshard/hsm. NOT exported from the package index and never used by
 * services: they exist to simulate a tampered or misbehaving custodian token in tests.
 *
 * Invariant kept even here: nothing reads a share's value out of the token. The overwrite helper
 * only injects a value the TEST chose (C_CreateObject, PKCS#11 v2.40 §5.7) with the exact share
 * template, so later wrapShare() calls release the forged value like a real share.
 */
import { KeyshardError } from '@keyshard/errors';
import type { TokenConfig } from './index.ts';
import { checkClusterId, findTemplate, shareLabel, shareTemplate } from './objects.ts';
import { TokenHandle, findAll } from './pkcs11.ts';

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
        sensitive: null, extractable: null, token: null, private: null, encrypt: null, decrypt: null,
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
