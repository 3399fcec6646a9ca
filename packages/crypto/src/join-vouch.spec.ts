import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { VOUCH_VALIDITY_MS, sealNoticeMessage, sealNoticeSigner, signVouch, verifySealNotice, verifyVouch, vouchMessage, vouchPublicKeyPem, vouchStaleness } from './join-vouch.ts';
import type { Ceremony } from './ceremony.ts';

/** Frozen vector: a second implementation must produce exactly these bytes. */
const vector = JSON.parse(readFileSync(new URL('../vectors/join-vouch.json', import.meta.url), 'utf8')) as {
  root_hex: string;
  ceremony: Ceremony;
  voucher: string;
  seal_epoch: number;
  not_after: string;
  vouch_public_key_pem: string;
  message_hex: string;
  signature_hex: string;
  seal_notice: { cluster_id: string; generation: number; seal_epoch: number; message_hex: string; signature_hex: string };
};
const root = Buffer.from(vector.root_hex, 'hex');
const c = { ...vector.ceremony, operation: 'join' } as Ceremony;

describe('join vouch (frozen vector packages/crypto/vectors/join-vouch.json)', () => {
  it('derives the vouch public key, the signed message and the signature of the vector', () => {
    assert.equal(vouchPublicKeyPem(root), vector.vouch_public_key_pem);
    assert.equal(vouchMessage(c, vector.voucher, vector.seal_epoch, vector.not_after).toString('hex'), vector.message_hex);
    const v = signVouch(root, c, vector.voucher, vector.seal_epoch, vector.not_after);
    assert.equal(v.signature.toString('hex'), vector.signature_hex, 'Ed25519 is deterministic (RFC 8032 §5.1.6)');
    assert.equal(verifyVouch(c, v, vector.vouch_public_key_pem), true);
  });

  it('does not verify for another ceremony, joiner key, epoch, voucher or root', () => {
    const v = { voucher: vector.voucher, seal_epoch: vector.seal_epoch, not_after: vector.not_after, signature: Buffer.from(vector.signature_hex, 'hex') };
    const key = vector.vouch_public_key_pem;
    assert.equal(verifyVouch({ ...c, hash: 'b'.repeat(64) }, v, key), false, 'another ceremony');
    assert.equal(verifyVouch({ ...c, recipients: [{ ...c.recipients[0]!, public_key_pem: 'planted' }] }, v, key), false, 'a planted joiner key');
    assert.equal(verifyVouch({ ...c, recipients: [{ ...c.recipients[0]!, coordinator_id: 'coordinator-3' }] }, v, key), false, 'another joiner');
    assert.equal(verifyVouch({ ...c, parameters: { generation: '2' } }, v, key), false, 'another share set');
    assert.equal(verifyVouch(c, { ...v, seal_epoch: 8 }, key), false, 'another epoch');
    assert.equal(verifyVouch(c, { ...v, voucher: 'coordinator-3' }, key), false, 'another voucher');
    assert.equal(verifyVouch(c, { ...v, not_after: '2036-12-06T00:02:00.000Z' }, key), false, 'a longer life');
    assert.equal(verifyVouch(c, v, vouchPublicKeyPem(Buffer.alloc(32, 9))), false, 'another root');
  });

  it('lives from signing until not_after, never longer than VOUCH_VALIDITY_MS ahead of the checking clock', () => {
    const now = Date.parse('2030-01-01T00:00:00.000Z');
    const v = signVouch(root, c, 'coordinator-1', 1, new Date(now + VOUCH_VALIDITY_MS).toISOString());
    assert.equal(vouchStaleness(v, now), '');
    assert.equal(vouchStaleness(v, now + VOUCH_VALIDITY_MS), '');
    assert.match(vouchStaleness(v, now + VOUCH_VALIDITY_MS + 1), /expired/, 'a vouch made before a seal dies with its time');
    assert.match(vouchStaleness(v, now - 3_600_000), /longer than 120 s/, 'a vouch that claims a long life is refused');
    assert.match(vouchStaleness({ ...v, not_after: 'never' }, now), /no valid not_after/);
  });

  it('refuses malformed vouches without throwing', () => {
    const key = vector.vouch_public_key_pem;
    assert.equal(verifyVouch(c, undefined, key), false);
    assert.equal(verifyVouch(c, { voucher: '', seal_epoch: 1, not_after: '', signature: Buffer.alloc(64) }, key), false);
    assert.equal(verifyVouch(c, { voucher: 'x', seal_epoch: -1, not_after: '', signature: Buffer.alloc(64) }, key), false);
    assert.equal(verifyVouch(c, { voucher: 'x', seal_epoch: 1, not_after: '', signature: Buffer.alloc(10) }, key), false);
    assert.equal(verifyVouch(c, { voucher: 'x', seal_epoch: 1, not_after: '', signature: Buffer.alloc(64) }, 'not a key'), false);
    assert.equal(verifyVouch(c, { voucher: 'x', seal_epoch: 1, not_after: '', signature: Buffer.alloc(64) }, undefined), false);
  });
});

describe('seal notice (frozen vector: seal_notice in packages/crypto/vectors/join-vouch.json)', () => {
  const n = vector.seal_notice;
  it('signs the vector with the root vouch key under its own domain', () => {
    assert.equal(sealNoticeMessage(n.cluster_id, n.generation, n.seal_epoch).toString('hex'), n.message_hex);
    const made = sealNoticeSigner(root, n.cluster_id, n.generation)(n.seal_epoch);
    assert.equal(made.signature.toString('hex'), n.signature_hex);
    assert.equal(verifySealNotice(made, vector.vouch_public_key_pem), true);
  });

  it('does not verify for another epoch, cluster, set or root, nor as a vouch', () => {
    const made = { cluster_id: n.cluster_id, generation: n.generation, seal_epoch: n.seal_epoch, signature: Buffer.from(n.signature_hex, 'hex') };
    assert.equal(verifySealNotice({ ...made, seal_epoch: n.seal_epoch + 1 }, vector.vouch_public_key_pem), false);
    assert.equal(verifySealNotice({ ...made, cluster_id: 'c-other' }, vector.vouch_public_key_pem), false);
    assert.equal(verifySealNotice({ ...made, generation: 2 }, vector.vouch_public_key_pem), false);
    assert.equal(verifySealNotice(made, vouchPublicKeyPem(Buffer.alloc(32, 9))), false);
    assert.equal(verifyVouch(c, { voucher: vector.voucher, seal_epoch: n.seal_epoch, not_after: vector.not_after, signature: made.signature }, vector.vouch_public_key_pem), false, 'domains are separate');
  });
});
