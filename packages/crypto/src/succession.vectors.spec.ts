/**
 * Custodian succession against the frozen vectors in ../vectors/succession.json, computed by
 * ../vectors/generate.py (Python: messages and RSASSA-PSS encoding written out, Ed25519 and RSA
 * from pyca/cryptography, no keyshard code). The RSA-PSS certificate is randomized in keyshard
 * (a fresh salt): the vector's certificate must verify, and a fresh one must too.
 * Format: ../VECTORS.md, "Custodian succession".
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { recoveryKeyFingerprint } from './rsa-oaep.ts';
import { approvalKeyOf, certifySuccessor, successionStatement } from './succession.ts';
import { flipped, hex, loadVectors } from './test-vectors.ts';

const v = loadVectors<{
  cluster_id: string; custodian_id: string; old_approval_public_key_pem: string; recovery_private_key_pem: string; recovery_public_key_pem: string;
  recovery_key_fingerprint: string; statement_hex: string; statement_signature_hex: string; new_approval_public_key_pem: string; certificate_hex: string;
}>('succession.json');
const custodian = { id: v.custodian_id, approvalPublicKeyPem: v.old_approval_public_key_pem };
const succession = (certificate: Buffer, statement = hex(v.statement_signature_hex)) => ({
  statement_signature: statement, recovery_public_key_pem: v.recovery_public_key_pem, certificate, approval_public_key_pem: v.new_approval_public_key_pem,
});

describe('custodian succession (frozen vectors packages/crypto/vectors/succession.json)', () => {
  it('the statement bytes and the recovery key fingerprint', () => {
    assert.equal(recoveryKeyFingerprint(v.recovery_public_key_pem), v.recovery_key_fingerprint);
    assert.equal(successionStatement(v.cluster_id, v.custodian_id, v.recovery_public_key_pem).toString('hex'), v.statement_hex);
  });

  it('the frozen chain names the successor key; a fresh certificate does too', () => {
    assert.equal(approvalKeyOf(v.cluster_id, custodian, succession(hex(v.certificate_hex))), v.new_approval_public_key_pem);
    const fresh = certifySuccessor(v.recovery_private_key_pem, v.cluster_id, v.custodian_id, v.new_approval_public_key_pem);
    assert.equal(approvalKeyOf(v.cluster_id, custodian, succession(fresh)), v.new_approval_public_key_pem);
  });

  it('a broken link, another cluster or custodian keeps the recorded key', () => {
    const old = v.old_approval_public_key_pem;
    assert.equal(approvalKeyOf(v.cluster_id, custodian, succession(flipped(hex(v.certificate_hex), 10))), old, 'certificate');
    assert.equal(approvalKeyOf(v.cluster_id, custodian, succession(hex(v.certificate_hex), flipped(hex(v.statement_signature_hex), 3))), old, 'statement');
    assert.equal(approvalKeyOf('c-other', custodian, succession(hex(v.certificate_hex))), old, 'cluster');
    assert.equal(approvalKeyOf(v.cluster_id, { ...custodian, id: 'custodian-9' }, succession(hex(v.certificate_hex))), old, 'custodian');
  });
});
