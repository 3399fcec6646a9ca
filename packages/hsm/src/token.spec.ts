/**
 * CustodianToken against a REAL SoftHSM2 token created in a fresh temp dir.
 * Checks the package invariant: a share's plaintext never leaves the token except wrapped
 * (RSA-OAEP, RFC 8017) to a recipient key; private keys are sensitive and non-extractable.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { constants, createPublicKey, generateKeyPairSync, privateDecrypt, randomBytes, verify } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { KeyshardError } from '@keyshard/errors';
import { CustodianToken, SOFTHSM_MODULE, initSoftHsmToken, type TokenConfig } from './index.ts';
import { oaepEncrypt as oaepEncryptToPem, recoveryKeyFingerprint } from '@keyshard/crypto';
import { overwriteShareForTest, shareAttributesForTest, tryToExfiltrateShareForTest, unwrapShareWithOldTemplateForTest } from './testing.ts';

const execFileAsync = promisify(execFile);
const LABEL = 'custodian-test';
const PIN = '7391-user-pin';
const SO_PIN = '8842-so-pin';

let dir = '';
let confPath = '';
const cfg = (): TokenConfig => ({ modulePath: SOFTHSM_MODULE, tokenLabel: LABEL, pin: PIN, oaepHash: 'sha1' });

function rsaPair(modulusLength = 2048) {
  return generateKeyPairSync('rsa', {
    modulusLength,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
}
let coordinators = 0;
/** A coordinator transport key pair, enrolled as a trusted key by the token's SO. */
function recipient() {
  const kp = rsaPair();
  const to = { kind: 'transport' as const, name: `coordinator-${++coordinators}` };
  assert.equal(withToken((t) => t.enrollTrustedKey(to, kp.publicKey, SO_PIN)), true);
  return { ...kp, to };
}
/** An offline recovery key pair, enrolled by the SO under its fingerprint. */
function recoveryRecipient() {
  const kp = rsaPair();
  const to = { kind: 'recovery' as const, name: recoveryKeyFingerprint(kp.publicKey) };
  withToken((t) => t.enrollTrustedKey(to, kp.publicKey, SO_PIN));
  return { ...kp, to };
}
const unwrapFor = (privateKeyPem: string, wrapped: Buffer) =>
  privateDecrypt({ key: privateKeyPem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, wrapped);

function assertKeyshardError(e: unknown, code: string, ...mustNotContain: string[]): true {
  assert.ok(e instanceof KeyshardError, `expected KeyshardError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  for (const s of mustNotContain) assert.ok(!e.message.includes(s), 'error message leaks a secret');
  return true;
}

function withToken<T>(fn: (t: CustodianToken) => T): T {
  const t = CustodianToken.open(cfg());
  try {
    return fn(t);
  } finally {
    t.close();
  }
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'keyshard-hsm-'));
  ({ confPath } = await initSoftHsmToken({ dir, label: LABEL, pin: PIN, soPin: SO_PIN }));
  process.env.SOFTHSM2_CONF = confPath;
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('initSoftHsmToken', () => {
  it('is idempotent for the same label and dir', async () => {
    const again = await initSoftHsmToken({ dir, label: LABEL, pin: PIN, soPin: SO_PIN });
    assert.equal(again.confPath, confPath);
    const { stdout } = await execFileAsync('softhsm2-util', ['--show-slots'], { env: { ...process.env, SOFTHSM2_CONF: confPath } });
    assert.equal(stdout.split('\n').filter((l) => new RegExp(`^\\s*Label:\\s*${LABEL}\\s*$`).test(l)).length, 1);
  });

  it('rejects bad PINs without echoing them', async () => {
    await assert.rejects(initSoftHsmToken({ dir, label: 'other', pin: 'ab', soPin: SO_PIN }), (e) =>
      assertKeyshardError(e, 'INVALID_ARGUMENT', 'ab', SO_PIN),
    );
  });
});

describe('CustodianToken', () => {
  let identity: { enrollmentPublicKeyPem: string; approvalPublicKeyPem: string };

  it('creates the identity once and returns it unchanged after reopening', () => {
    identity = withToken((t) => {
      const first = t.ensureIdentity();
      assert.deepEqual(t.ensureIdentity(), first);
      return first;
    });
    const enr = createPublicKey(identity.enrollmentPublicKeyPem);
    assert.equal(enr.asymmetricKeyType, 'rsa');
    assert.equal(enr.asymmetricKeyDetails?.modulusLength, 2048);
    assert.equal(createPublicKey(identity.approvalPublicKeyPem).asymmetricKeyType, 'ed25519');
    assert.deepEqual(withToken((t) => t.ensureIdentity()), identity);
  });

  it('signs approvals with Ed25519 inside the token', () => {
    const msg = Buffer.from('ceremony hash 0123456789abcdef');
    const sig = withToken((t) => t.signApproval(msg));
    assert.equal(sig.length, 64);
    assert.ok(verify(null, msg, identity.approvalPublicKeyPem, sig));
    assert.ok(!verify(null, Buffer.from('another ceremony'), identity.approvalPublicKeyPem, sig));
  });

  it('delivers a share and re-releases exactly the same bytes wrapped to a recipient', () => {
    const share = randomBytes(33);
    const delivered = oaepEncryptToPem(identity.enrollmentPublicKeyPem, share, 'sha1');
    const r1 = recipient();
    const r2 = recipient();
    withToken((t) => {
      t.unwrapShare('cluster-a', delivered);
      assert.ok(t.hasShare('cluster-a'));
      assert.ok(!t.hasShare('cluster-b'));
      assert.deepEqual(t.shareClusterIds(), ['cluster-a']);
      const w1 = t.wrapShare('cluster-a', r1.to, r1.publicKey);
      const w2 = t.wrapShare('cluster-a', r2.to, r2.publicKey);
      assert.equal(w1.length, 256);
      assert.ok(unwrapFor(r1.privateKey, w1).equals(share));
      assert.ok(unwrapFor(r2.privateKey, w2).equals(share));
      assert.throws(() => unwrapFor(r2.privateKey, w1));
    });
    // Persistent across reopen (token object).
    assert.ok(unwrapFor(r1.privateKey, withToken((t) => t.wrapShare('cluster-a', r1.to, r1.publicKey))).equals(share));
  });

  it('stores the share as a sensitive object whose value cannot be read', async () => {
    const a = shareAttributesForTest(cfg(), 'cluster-a');
    assert.deepEqual(a, {
      wrapWithTrusted: true, modifiable: false, sensitive: true, extractable: true, token: true, private: true,
      encrypt: false, decrypt: false, sign: false, verify: false, wrap: false, unwrap: false, derive: false,
      valueRead: 'CKR_ATTRIBUTE_SENSITIVE',
    });
    const out = path.join(dir, 'read-object.bin');
    const res = await execFileAsync(
      'pkcs11-tool',
      ['--module', SOFTHSM_MODULE, '--token-label', LABEL, '--login', '--pin', PIN,
        '--read-object', '--type', 'secrkey', '--label', 'keyshard-share:cluster-a', '--output-file', out],
      { env: { ...process.env, SOFTHSM2_CONF: confPath } },
    ).then(() => 'succeeded', (e: { stderr?: string }) => `failed: ${e.stderr ?? ''}`);
    assert.match(res, /^failed: [\s\S]*CKR_ATTRIBUTE_SENSITIVE/, 'pkcs11-tool must not be able to read the share value');
    const written = await stat(out).then((st) => st.size, () => 0);
    assert.equal(written, 0, 'no share bytes may be written out');
  });

  it('refuses a second delivery unless replace, and replace swaps the value', () => {
    const newShare = randomBytes(33);
    const delivered = oaepEncryptToPem(identity.enrollmentPublicKeyPem, newShare, 'sha1');
    const r = recipient();
    withToken((t) => {
      assert.throws(() => t.unwrapShare('cluster-a', delivered), (e) => assertKeyshardError(e, 'FAILED_PRECONDITION'));
      t.unwrapShare('cluster-a', delivered, { replace: true });
      assert.deepEqual(t.shareClusterIds(), ['cluster-a']);
      assert.ok(unwrapFor(r.privateKey, t.wrapShare('cluster-a', r.to, r.publicKey)).equals(newShare));
    });
  });

  it('rejects garbage ciphertext and keeps the token usable afterwards', () => {
    withToken((t) => {
      assert.throws(() => t.unwrapShare('cluster-x', randomBytes(256)), (e) => assertKeyshardError(e, 'INVALID_ARGUMENT'));
      assert.throws(() => t.unwrapShare('cluster-x', randomBytes(17)), (e) => assertKeyshardError(e, 'INVALID_ARGUMENT'));
      assert.ok(!t.hasShare('cluster-x'));
      assert.equal(t.signApproval(Buffer.from('still works')).length, 64);
    });
  });

  it('validates arguments', () => {
    const r0 = recipient();
    withToken((t) => {
      assert.throws(() => t.wrapShare('cluster-a', { kind: 'transport', name: 'coordinator-1' }, 'not a pem'), (e) => assertKeyshardError(e, 'INVALID_ARGUMENT'));
      const ec = generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
      assert.throws(() => t.wrapShare('cluster-a', { kind: 'transport', name: 'coordinator-1' }, ec.publicKey), (e) => assertKeyshardError(e, 'INVALID_ARGUMENT'));
      assert.throws(() => t.wrapShare('missing', r0.to, r0.publicKey), (e) => assertKeyshardError(e, 'NOT_FOUND'));
      assert.throws(() => t.hasShare('bad/id'), (e) => assertKeyshardError(e, 'INVALID_ARGUMENT'));
      assert.throws(() => t.signApproval(Buffer.alloc(0)), (e) => assertKeyshardError(e, 'INVALID_ARGUMENT'));
    });
    assert.throws(() => oaepEncryptToPem(identity.enrollmentPublicKeyPem, randomBytes(300), 'sha1'), (e) =>
      assertKeyshardError(e, 'INVALID_ARGUMENT'),
    );
  });

  it('a tampered share (test helper) is what wrapShare then releases', () => {
    const forged = Buffer.alloc(33, 0x5a);
    const r = recipient();
    withToken((t) => {
      overwriteShareForTest(cfg(), 'cluster-a', forged);
      assert.deepEqual(t.shareClusterIds(), ['cluster-a']);
      assert.ok(unwrapFor(r.privateKey, t.wrapShare('cluster-a', r.to, r.publicKey)).equals(forged));
    });
    assert.equal(shareAttributesForTest(cfg(), 'cluster-a').valueRead, 'CKR_ATTRIBUTE_SENSITIVE');
  });

  it('destroyShare removes the share', () => {
    const r0 = recipient();
    withToken((t) => {
      assert.equal(t.destroyShare('cluster-a'), true);
      assert.equal(t.hasShare('cluster-a'), false);
      assert.equal(t.destroyShare('cluster-a'), false);
      assert.deepEqual(t.shareClusterIds(), []);
      assert.throws(() => t.wrapShare('cluster-a', r0.to, r0.publicKey), (e) => assertKeyshardError(e, 'NOT_FOUND'));
    });
  });

  it('holds several share generations side by side, with their peers records; destroys one or all', () => {
    const g1 = randomBytes(33);
    const g2 = randomBytes(33);
    const r = recipient();
    const peers = Buffer.from(JSON.stringify({ threshold: 2, custodians: [{ id: 'c1', approvalPublicKeyPem: 'pem' }] }));
    withToken((t) => {
      t.unwrapShare('cluster-g', oaepEncryptToPem(identity.enrollmentPublicKeyPem, g1, 'sha1'));
      t.unwrapShare('cluster-g', oaepEncryptToPem(identity.enrollmentPublicKeyPem, g2, 'sha1'), { generation: 2 });
      t.storePeers('cluster-g', 1, peers);
      t.storePeers('cluster-g', 2, peers);
      t.storePeers('cluster-g', 2, Buffer.from('{"replaced":true}'));
      assert.deepEqual(t.shareGenerations('cluster-g'), [1, 2]);
      assert.deepEqual(t.shareClusterIds(), ['cluster-g']);
      assert.ok(unwrapFor(r.privateKey, t.wrapShare('cluster-g', r.to, r.publicKey)).equals(g1));
      assert.ok(unwrapFor(r.privateKey, t.wrapShare('cluster-g', r.to, r.publicKey, 2)).equals(g2));
      assert.deepEqual(t.readPeers('cluster-g', 1), peers);
      assert.equal(t.readPeers('cluster-g', 2)!.toString(), '{"replaced":true}');
      assert.equal(t.readPeers('cluster-g', 3), undefined);
      assert.equal(t.destroyShare('cluster-g', 1), true);
      assert.deepEqual(t.shareGenerations('cluster-g'), [2]);
      assert.equal(t.readPeers('cluster-g', 1), undefined);
      assert.ok(t.readPeers('cluster-g', 2));
      t.unwrapShare('cluster-g', oaepEncryptToPem(identity.enrollmentPublicKeyPem, g1, 'sha1'), { generation: 3 });
      assert.equal(t.destroyShare('cluster-g'), true, 'every generation');
      assert.deepEqual(t.shareGenerations('cluster-g'), []);
      assert.equal(t.readPeers('cluster-g', 2), undefined);
      assert.throws(() => t.hasShare('cluster-g', 0), (e) => assertKeyshardError(e, 'INVALID_ARGUMENT'));
    });
  });

  it('custodian recovery: a share exported to a recovery key is imported with it, the same share, never in the clear', () => {
    const share = randomBytes(33);
    const recovery = recoveryRecipient();
    const check = recipient();
    withToken((t) => {
      t.ensureIdentity();
      t.unwrapShare('cluster-r', oaepEncryptToPem(identity.enrollmentPublicKeyPem, share, 'sha1'));
      const exported = t.wrapShare('cluster-r', recovery.to, recovery.publicKey);
      assert.equal(exported.includes(share), false);
      // Into another share set of the same token (one SoftHSM token per process here).
      t.importRecoveredShare('cluster-r', exported, recovery.privateKey, 2);
      assert.deepEqual(unwrapFor(check.privateKey, t.wrapShare('cluster-r', check.to, check.publicKey, 2)), share);
      assert.throws(() => t.importRecoveredShare('cluster-r', exported, recovery.privateKey, 2), (e) => assertKeyshardError(e, 'FAILED_PRECONDITION'));
      assert.throws(() => t.importRecoveredShare('cluster-r', exported, rsaPair().privateKey, 3), (e) => assertKeyshardError(e, 'INVALID_ARGUMENT'));
      assert.throws(() => t.importRecoveredShare('cluster-r', exported, 'not a key', 3), (e) => assertKeyshardError(e, 'INVALID_ARGUMENT'));
      assert.equal(t.hasShare('cluster-r', 3), false);
      t.destroyShare('cluster-r');
    });
  });

  it('a closed token refuses operations', () => {
    const t = CustodianToken.open(cfg());
    t.close();
    t.close();
    assert.throws(() => t.ensureIdentity(), (e) => assertKeyshardError(e, 'FAILED_PRECONDITION'));
  });

  it('a wrong PIN is a clear error that does not echo the PIN', () => {
    const wrong = 'wrong-pin-9999';
    assert.throws(() => CustodianToken.open({ ...cfg(), pin: wrong }), (e) =>
      assertKeyshardError(e, 'FAILED_PRECONDITION', wrong, PIN) && /PIN_INCORRECT/.test((e as Error).message),
    );
    // Also while another handle of this process is logged in (C_Login would not check it).
    withToken(() =>
      assert.throws(() => CustodianToken.open({ ...cfg(), pin: wrong }), (e) => assertKeyshardError(e, 'FAILED_PRECONDITION', wrong, PIN)),
    );
  });

  it('an unknown token label is NOT_FOUND', () => {
    assert.throws(() => CustodianToken.open({ ...cfg(), tokenLabel: 'no-such-token' }), (e) =>
      assertKeyshardError(e, 'NOT_FOUND', PIN) && /no-such-token/.test((e as Error).message),
    );
  });

  it('RSA-OAEP SHA-256 is refused by SoftHSM with a clear error', () => {
    const share = randomBytes(33);
    const t = CustodianToken.open({ ...cfg(), oaepHash: 'sha256' });
    try {
      const delivered = oaepEncryptToPem(identity.enrollmentPublicKeyPem, share, 'sha256');
      assert.throws(() => t.unwrapShare('cluster-sha256', delivered), (e) => assertKeyshardError(e, 'FAILED_PRECONDITION'));
      assert.equal(t.hasShare('cluster-sha256'), false);
    } finally {
      t.close();
    }
  });

  describe('HSM-enforced release (issue 14, attack 3: the user PIN alone must not get a share out)', () => {
    // SoftHSM's CKM_AES_KEY_WRAP_PAD zero-pads to 8 bytes: the attacker's plaintext starts with the share.
    const got = (o: { share?: Buffer }, share: Buffer) => !!o.share && o.share.subarray(0, share.length).equals(share);
    const refusedAll = (outcomes: { attack: string; outcome: string; share?: Buffer }[], share: Buffer) => {
      for (const o of outcomes) {
        assert.match(o.outcome, /^refused /, `${o.attack}: ${o.outcome}`);
        assert.ok(!got(o, share), o.attack);
      }
    };

    it('with the OLD share template the attacks succeed: the share is wrapped out and decrypted', () => {
      const share = randomBytes(33);
      withToken((t) => t.ensureIdentity());
      unwrapShareWithOldTemplateForTest(cfg(), 'cluster-old', oaepEncryptToPem(identity.enrollmentPublicKeyPem, share, 'sha1'));
      const outcomes = tryToExfiltrateShareForTest(cfg(), 'cluster-old');
      const won = outcomes.filter((o) => got(o, share)).map((o) => o.attack);
      assert.ok(won.some((a) => /imports/.test(a)), 'wrap to an imported RSA key decrypted the share');
      assert.ok(won.some((a) => /AES key the attacker generates/.test(a)), 'wrap to a generated AES key decrypted the share');
      withToken((t) => t.destroyShare('cluster-old'));
    });

    it('with CKA_WRAP_WITH_TRUSTED every attack is refused by SoftHSM itself: wrap, copy, re-flag, self-made trusted keys', () => {
      const share = randomBytes(33);
      withToken((t) => t.unwrapShare('cluster-hsm', oaepEncryptToPem(identity.enrollmentPublicKeyPem, share, 'sha1')));
      const outcomes = tryToExfiltrateShareForTest(cfg(), 'cluster-hsm');
      refusedAll(outcomes, share);
      const by = (re: RegExp) => outcomes.find((o) => re.test(o.attack))!.outcome;
      assert.equal(by(/^C_WrapKey to an RSA public key the attacker imports/), 'refused CKR_KEY_NOT_WRAPPABLE');
      assert.equal(by(/^C_WrapKey to an AES key/), 'refused CKR_KEY_NOT_WRAPPABLE');
      // A copy is possible but identical: it keeps CKA_WRAP_WITH_TRUSTED, so wrapping it fails as well.
      assert.equal(by(/^C_CopyObject \{\}/), 'refused CKR_KEY_NOT_WRAPPABLE');
      assert.equal(by(/^C_CopyObject \{"wrapWithTrusted":false\}/), 'refused CKR_ATTRIBUTE_READ_ONLY');
      assert.equal(by(/^C_CopyObject \{"derive":true\}/), 'refused CKR_ATTRIBUTE_READ_ONLY');
      assert.equal(by(/^C_SetAttributeValue \{"wrapWithTrusted":false\}/), 'refused CKR_ACTION_PROHIBITED');
      assert.equal(by(/^C_SetAttributeValue \{"derive":true\}/), 'refused CKR_ACTION_PROHIBITED');
      // Only the security officer can mark a key trusted.
      assert.equal(by(/^C_CreateObject of an RSA public key with CKA_TRUSTED/), 'refused CKR_ATTRIBUTE_READ_ONLY');
      assert.equal(by(/CKA_TRUSTED=true on an imported RSA key/), 'refused CKR_ATTRIBUTE_READ_ONLY');
      assert.equal(by(/CKA_TRUSTED=true on a generated AES key/), 'refused CKR_ATTRIBUTE_READ_ONLY');
      // The share is still there, unchanged, and released to an SO-enrolled transport key.
      const r = recipient();
      withToken((t) => {
        assert.deepEqual(t.shareGenerations('cluster-hsm'), [1]);
        assert.ok(unwrapFor(r.privateKey, t.wrapShare('cluster-hsm', r.to, r.publicKey)).equals(share));
      });
      assert.deepEqual(shareAttributesForTest(cfg(), 'cluster-hsm').wrapWithTrusted, true);
    });

    it('releases only to the trusted key enrolled for that coordinator: another key or coordinator is PERMISSION_DENIED', () => {
      const share = randomBytes(33);
      const a = recipient();
      const b = recipient();
      const stranger = rsaPair();
      withToken((t) => {
        t.unwrapShare('cluster-p', oaepEncryptToPem(identity.enrollmentPublicKeyPem, share, 'sha1'));
        assert.throws(() => t.wrapShare('cluster-p', a.to, stranger.publicKey), (e) => assertKeyshardError(e, 'PERMISSION_DENIED') && new RegExp(`coordinator ${a.to.name}`).test((e as Error).message));
        assert.throws(() => t.wrapShare('cluster-p', a.to, b.publicKey), (e) => assertKeyshardError(e, 'PERMISSION_DENIED'));
        assert.throws(() => t.wrapShare('cluster-p', { kind: 'transport', name: 'never-enrolled' }, a.publicKey), (e) => assertKeyshardError(e, 'PERMISSION_DENIED') && /never-enrolled/.test((e as Error).message));
        assert.ok(unwrapFor(a.privateKey, t.wrapShare('cluster-p', a.to, a.publicKey)).equals(share));
        t.destroyShare('cluster-p');
      });
    });

    it('enroll / list / rotate / revoke need the SO PIN, which is never echoed; the user session keeps working', () => {
      const k1 = rsaPair(3072);
      const k2 = rsaPair(3072);
      const to = { kind: 'transport' as const, name: 'coordinator-rot' };
      const wrongSo = 'wrong-so-pin-4711';
      withToken((t) => {
        assert.throws(() => t.enrollTrustedKey(to, k1.publicKey, wrongSo), (e) =>
          assertKeyshardError(e, 'PERMISSION_DENIED', wrongSo, SO_PIN, PIN) && /SO login failed/.test((e as Error).message),
        );
        assert.ok(!t.listTrustedKeys().some((k) => k.name === to.name), 'nothing enrolled with a wrong SO PIN');
        assert.equal(t.signApproval(Buffer.from('user session still logged in')).length, 64);
        assert.equal(t.enrollTrustedKey(to, k1.publicKey, SO_PIN), true);
        assert.equal(t.enrollTrustedKey(to, k1.publicKey, SO_PIN), false, 'same key again: already enrolled');
        assert.equal(t.enrollTrustedKey(to, k2.publicKey, SO_PIN), true, 'rotation: the new key beside the old');
        const listed = t.listTrustedKeys().filter((k) => k.name === to.name);
        assert.equal(listed.length, 2);
        assert.ok(listed.every((k) => k.kind === 'transport' && /^[0-9a-f]{64}$/.test(k.fingerprint)));
        assert.throws(() => t.revokeTrustedKey(to, wrongSo), (e) => assertKeyshardError(e, 'PERMISSION_DENIED', wrongSo));
        assert.equal(t.revokeTrustedKey(to, SO_PIN, k1.publicKey), 1, 'rotation: the old key revoked');
        assert.deepEqual(t.listTrustedKeys().filter((k) => k.name === to.name).map((k) => k.publicKeyPem), [createPublicKey(k2.publicKey).export({ type: 'spki', format: 'pem' }).toString()]);
        assert.equal(t.revokeTrustedKey(to, SO_PIN), 1);
        assert.equal(t.revokeTrustedKey(to, SO_PIN), 0);
        assert.equal(t.signApproval(Buffer.from('user session still logged in')).length, 64);
      });
    });
  });
});
