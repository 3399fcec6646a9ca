import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { approvalKeyOf, certifySuccessor, successionStatement, type Succession } from './succession.ts';
import { newCeremony, tallyApprovals } from './ceremony.ts';

const pems = (type: 'ed25519' | 'rsa') => {
  const k = type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
  return { pub: k.publicKey.export({ type: 'spki', format: 'pem' }).toString(), priv: k.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
};

test('a restored custodian counts with its new key only through the whole chain from the recorded key', () => {
  const old = pems('ed25519');
  const fresh = pems('ed25519');
  const recovery = pems('rsa');
  const recorded = { id: 'custodian-1', approvalPublicKeyPem: old.pub };
  const succession: Succession = {
    statement_signature: sign(null, successionStatement('c-1', 'custodian-1', recovery.pub), old.priv),
    recovery_public_key_pem: recovery.pub,
    certificate: certifySuccessor(recovery.priv, 'c-1', 'custodian-1', fresh.pub),
    approval_public_key_pem: fresh.pub,
  };
  assert.equal(approvalKeyOf('c-1', recorded, succession), fresh.pub);
  assert.equal(approvalKeyOf('c-1', recorded, null), old.pub);
  // Every broken link falls back to the recorded key.
  assert.equal(approvalKeyOf('c-2', recorded, succession), old.pub, 'another cluster');
  assert.equal(approvalKeyOf('c-1', { ...recorded, id: 'custodian-2' }, succession), old.pub, 'another custodian');
  const other = pems('ed25519').pub;
  assert.equal(approvalKeyOf('c-1', { ...recorded, approvalPublicKeyPem: other }, succession), other, 'statement by a key not recorded');
  assert.equal(approvalKeyOf('c-1', recorded, { ...succession, recovery_public_key_pem: pems('rsa').pub }), old.pub, 'another recovery key');
  assert.equal(approvalKeyOf('c-1', recorded, { ...succession, approval_public_key_pem: pems('ed25519').pub }), old.pub, 'a key the recovery key did not certify');
  const forged = Buffer.from(succession.certificate);
  forged[10]! ^= 1;
  assert.equal(approvalKeyOf('c-1', recorded, { ...succession, certificate: forged }), old.pub, 'a forged certificate');

  const c = newCeremony({ operation: 'destroy-key', parameters: {}, clusterId: 'c-1', initiator: 'admin', ttlSeconds: 60, threshold: 2, recipients: [] });
  const signature = sign(null, Buffer.from(c.hash, 'hex'), fresh.priv);
  assert.deepEqual(tallyApprovals(c, [recorded], [{ custodianId: 'custodian-1', signature, succession }]).approved, ['custodian-1']);
  assert.deepEqual(tallyApprovals(c, [recorded], [{ custodianId: 'custodian-1', signature }]).approved, []);
});
