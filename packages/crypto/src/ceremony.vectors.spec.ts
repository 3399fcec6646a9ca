/**
 * The ceremony hash and approval signatures against the frozen vectors in
 * ../vectors/ceremony.json, computed by ../vectors/generate.py (Python: canonical JSON and
 * SHA-256 written out, Ed25519 from pyca/cryptography, no keyshard code). Ed25519 is
 * deterministic (RFC 8032 §5.1.6), so approvals are reproduced exactly.
 * Format: ../VECTORS.md, "Ceremony hash and approvals".
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, sign } from 'node:crypto';
import { canonicalJson } from './canonical-json.ts';
import { ceremonyHash, checkCeremonyForCustodian, tallyApprovals, verifyApproval, type Ceremony } from './ceremony.ts';
import { hex, loadVectors } from './test-vectors.ts';

const v = loadVectors<{
  ceremonies: { name: string; ceremony: Ceremony; bound_canonical_json: string; hash: string }[];
  approvals: { ceremony: string; custodian_id: string; approval_seed_hex: string; approval_public_key_pem: string; signature_hex: string }[];
}>('ceremony.json');
const ED25519_PKCS8_PREFIX = hex('302e020100300506032b657004220420'); // RFC 8410 §7
const byName = (name: string) => v.ceremonies.find((c) => c.name === name)!.ceremony;

describe('ceremony hash (frozen vectors packages/crypto/vectors/ceremony.json)', () => {
  for (const c of v.ceremonies)
    it(`${c.name}: the hash of the bound fields`, () => {
      assert.equal(ceremonyHash(c.ceremony), c.hash);
      assert.equal(c.ceremony.hash, c.hash);
      const bound = JSON.parse(c.bound_canonical_json) as Record<string, unknown>;
      assert.equal(canonicalJson(bound), c.bound_canonical_json);
      assert.deepEqual(Object.keys(bound).sort(), ['cluster_id', 'created_at', 'expires_at', 'id', 'initiator', 'nonce', 'operation', 'parameters', 'recipients', 'threshold']);
      const now = Date.parse(c.ceremony.created_at);
      assert.doesNotThrow(() => checkCeremonyForCustodian(c.ceremony, [c.ceremony.cluster_id], now), 'a custodian accepts it at its creation time');
    });

  it('state fields are not bound; every bound field is', () => {
    const c = v.ceremonies[0]!.ceremony;
    const same = { ...c, hash: '', state: 'CEREMONY_STATE_FAILED', approved_by: ['x'], failures: [{ custodian_id: 'x', reason: 'y' }], denied_by: ['z'], error: 'e' } as Ceremony;
    assert.equal(ceremonyHash(same), c.hash);
    const changes: Partial<Ceremony>[] = [
      { id: `${c.id}0` }, { operation: 'join' }, { parameters: { generation: '2' } }, { cluster_id: 'c-other' }, { initiator: 'other' },
      { created_at: '2026-12-06T00:00:00.001Z' }, { expires_at: '2026-12-06T01:00:00.001Z' }, { nonce: '0'.repeat(32) }, { threshold: 3 },
      { recipients: c.recipients.slice(1) }, { recipients: [{ ...c.recipients[0]!, ephemeral_public_key_pem: '' }, c.recipients[1]!] },
    ];
    for (const change of changes) assert.notEqual(ceremonyHash({ ...c, ...change }), c.hash, JSON.stringify(change).slice(0, 60));
  });

  it('a recipient without ephemeral_public_key_pem hashes as one with ""', () => {
    const c = v.ceremonies.find((x) => x.ceremony.recipients.length > 0 && !('ephemeral_public_key_pem' in x.ceremony.recipients[0]!))!;
    const explicit = { ...c.ceremony, recipients: [{ ...c.ceremony.recipients[0]!, ephemeral_public_key_pem: '' }] };
    assert.equal(ceremonyHash(explicit), c.hash);
  });

  for (const a of v.approvals)
    it(`approval by ${a.custodian_id} of "${a.ceremony}": Ed25519 over the 32 hash bytes`, () => {
      const c = byName(a.ceremony);
      const key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, hex(a.approval_seed_hex)]), format: 'der', type: 'pkcs8' });
      assert.equal(sign(null, hex(c.hash), key).toString('hex'), a.signature_hex);
      assert.equal(verifyApproval(c, a.approval_public_key_pem, hex(a.signature_hex)), true);
      assert.equal(verifyApproval({ ...c, hash: v.ceremonies.find((x) => x.ceremony.id !== c.id)!.hash }, a.approval_public_key_pem, hex(a.signature_hex)), false, 'not for another ceremony');
    });

  it('the frozen approvals tally to the quorum', () => {
    const c = v.ceremonies[0]!.ceremony;
    const mine = v.approvals.filter((a) => a.ceremony === v.ceremonies[0]!.name);
    const custodians = mine.map((a) => ({ id: a.custodian_id, approvalPublicKeyPem: a.approval_public_key_pem }));
    const tally = tallyApprovals(c, custodians, mine.map((a) => ({ custodianId: a.custodian_id, signature: hex(a.signature_hex) })), Date.parse(c.created_at));
    assert.deepEqual(tally, { approved: ['custodian-1', 'custodian-2'], refused: [] });
  });
});
