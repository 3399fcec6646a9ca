/**
 * The authorization table of key-policy.ts, principal by principal and operation by operation:
 * use and administration are separate; cluster admins administer every key and use none its
 * policy does not name them for; the default (empty) policy; self-grants and aliases.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isKeyshardError } from '@keyshard/errors';
import {
  ADMIN_OPERATIONS, USE_OPERATIONS, authorizeAdmin, authorizeUse, mayAdminister, mayUse, refuseAliasToUsable, refuseSelfGrant, validatePolicy, type PolicyHolder,
} from './key-policy.ts';

const ADMINS: ReadonlySet<string> = new Set(['admin', 'admin-2']);
const key = (policy: Record<string, string[]>, createdBy = 'app'): PolicyHolder => ({ id: 'k_1', name: 'invoices', policy, createdBy });

/** principal -> the use operations it holds and whether it administers / rotates. */
function table(k: PolicyHolder, principals: string[]) {
  return Object.fromEntries(
    principals.map((p) => [p, { uses: USE_OPERATIONS.filter((op) => mayUse(k, p, op, ADMINS)).join(' '), admin: mayAdminister(k, p, ADMINS), rotate: mayAdminister(k, p, ADMINS, 'rotate') }]),
  );
}

const ALL_USES = USE_OPERATIONS.join(' ');
const refusal = (f: () => void) => {
  try {
    f();
  } catch (e) {
    assert.ok(isKeyshardError(e));
    return { code: e.code, reason: e.reason, message: e.message };
  }
  assert.fail('not refused');
};

describe('key policy: who may use and who may administer a key', () => {
  it('use and administration are separate operation classes', () => {
    assert.deepEqual([...USE_OPERATIONS], ['encrypt', 'decrypt', 'sign', 'verify', 'mac', 'generate_data_key']);
    assert.deepEqual([...ADMIN_OPERATIONS], ['rotate', 'admin']);
  });

  it('default policy, made by a key user: the creator uses and administers; cluster admins only administer; others nothing', () => {
    assert.deepEqual(table(key({}, 'app'), ['app', 'admin', 'other']), {
      app: { uses: ALL_USES, admin: true, rotate: true },
      admin: { uses: '', admin: true, rotate: true },
      other: { uses: '', admin: false, rotate: false },
    });
  });

  it('default policy, made by a cluster admin: nobody uses it until a policy names someone', () => {
    assert.deepEqual(table(key({}, 'admin'), ['admin', 'admin-2', 'app']), {
      admin: { uses: '', admin: true, rotate: true },
      'admin-2': { uses: '', admin: true, rotate: true },
      app: { uses: '', admin: false, rotate: false },
    });
  });

  it('default policy made by a cluster admin: still unusable by its creator after it leaves `admins` (recorded at creation)', () => {
    const made = { ...key({}, 'former-admin'), creatorAdmin: true as const };
    // `former-admin` is no longer in ADMINS: without the record it would now use the key as its creator.
    assert.deepEqual(table(made, ['former-admin']), { 'former-admin': { uses: '', admin: true, rotate: true } });
    assert.equal(mayUse(key({}, 'former-admin'), 'former-admin', 'decrypt', ADMINS), true, 'an older record without the flag follows the current admins');
  });

  it('an explicit policy: exactly who it names, per operation; admin implies rotate; cluster admins administer and use only what names them', () => {
    const k = key({ encrypt: ['app', 'admin'], decrypt: ['app'], rotate: ['rotator'], admin: ['ops'] }, 'app');
    assert.deepEqual(table(k, ['app', 'admin', 'admin-2', 'ops', 'rotator', 'other']), {
      app: { uses: 'encrypt decrypt', admin: false, rotate: false }, // the creator has only what the policy names
      admin: { uses: 'encrypt', admin: true, rotate: true },
      'admin-2': { uses: '', admin: true, rotate: true },
      ops: { uses: '', admin: true, rotate: true },
      rotator: { uses: '', admin: false, rotate: true },
      other: { uses: '', admin: false, rotate: false },
    });
  });

  it('a refused use is PERMISSION_DENIED, KEY_POLICY_DENIED; a cluster admin is told why', () => {
    const k = key({ encrypt: ['app'], decrypt: ['app'] });
    assert.deepEqual(refusal(() => authorizeUse(k, 'other', 'decrypt', ADMINS)), { code: 'PERMISSION_DENIED', reason: 'KEY_POLICY_DENIED', message: 'other may not decrypt with key invoices' });
    const admin = refusal(() => authorizeUse(k, 'admin', 'generate_data_key', ADMINS));
    assert.deepEqual([admin.code, admin.reason], ['PERMISSION_DENIED', 'KEY_POLICY_DENIED']);
    assert.match(admin.message, /^admin may not generate data key with key invoices: cluster admins administer keys but use one only when its policy names them .*separation of duties/);
    assert.deepEqual(refusal(() => authorizeAdmin(k, 'app', ADMINS)), { code: 'PERMISSION_DENIED', reason: 'KEY_POLICY_DENIED', message: 'app may not administer key invoices' });
    authorizeAdmin(k, 'admin', ADMINS);
    authorizeUse(k, 'app', 'encrypt', ADMINS);
  });

  it('nobody may grant itself a use it did not hold: not on creation, not by a policy change', () => {
    const created = (policy: Record<string, string[]>, by: string) => refuseSelfGrant({ policy: {}, createdBy: by }, { policy, createdBy: by, name: 'n' }, by, ADMINS);
    const denied = refusal(() => created({ decrypt: ['admin'] }, 'admin'));
    assert.deepEqual([denied.code, denied.reason], ['PERMISSION_DENIED', 'SEPARATION_OF_DUTIES']);
    assert.match(denied.message, /^separation of duties: admin may not grant itself decrypt on key n; another administrator, or a user of the key who administers it, must/);
    created({ encrypt: ['app'], decrypt: ['app'] }, 'admin'); // naming others
    created({ encrypt: ['app'], decrypt: ['app'], admin: ['app'] }, 'app'); // a key user names itself for what the default gives it

    const before = key({ encrypt: ['app'], decrypt: ['app'], admin: ['app'] });
    const change = (policy: Record<string, string[]>, by: string) => refuseSelfGrant(before, { ...before, policy }, by, ADMINS);
    assert.equal(refusal(() => change({ encrypt: ['app'], decrypt: ['app', 'admin'] }, 'admin')).reason, 'SEPARATION_OF_DUTIES');
    assert.equal(refusal(() => change({ encrypt: ['app'], decrypt: ['app'], sign: ['app'], admin: ['app'] }, 'app')).reason, 'SEPARATION_OF_DUTIES');
    change({ encrypt: ['app'], decrypt: ['app', 'admin'] }, 'admin-2'); // dual control: another admin may
    change({ encrypt: ['app'], admin: ['app'] }, 'app'); // dropping a use
    change({ encrypt: ['app', 'admin'], decrypt: ['app'] }, 'admin-2');
  });

  it('an alias never points at a key its maker may use', () => {
    assert.equal(refusal(() => refuseAliasToUsable(key({ decrypt: ['admin'] }), 'billing', 'admin', ADMINS)).reason, 'SEPARATION_OF_DUTIES');
    assert.equal(refusal(() => refuseAliasToUsable(key({}, 'app'), 'billing', 'app', ADMINS)).reason, 'SEPARATION_OF_DUTIES');
    refuseAliasToUsable(key({}, 'app'), 'billing', 'admin', ADMINS);
    refuseAliasToUsable(key({ encrypt: ['app'], admin: ['ops'] }), 'billing', 'ops', ADMINS);
  });

  it('validates operations and limits', () => {
    assert.equal(refusal(() => validatePolicy({ explode: ['x'] })).code, 'INVALID_ARGUMENT');
    assert.equal(refusal(() => validatePolicy({ decrypt: [''] })).code, 'INVALID_ARGUMENT');
    assert.deepEqual(validatePolicy({ decrypt: ['app'], admin: ['ops'] }), { decrypt: ['app'], admin: ['ops'] });
  });
});
