import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { ceremonyHash, checkCeremonyForCustodian, isExpired, newCeremony, tallyApprovals, type Ceremony } from './ceremony.ts';

const custodian = (id: string) => {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  return { id, approvalPublicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), privateKey };
};
const cs = [custodian('c1'), custodian('c2'), custodian('c3')];
const approve = (c: Ceremony, who: (typeof cs)[number]) => ({ custodianId: who.id, signature: sign(null, Buffer.from(c.hash, 'hex'), who.privateKey) });
const destroyKey = (now?: number) =>
  newCeremony({ operation: 'destroy-key', parameters: { key_id: 'k_x' }, clusterId: 'c-1', initiator: 'admin', ttlSeconds: 60, recipients: [], threshold: 2, now });

describe('ceremony approvals', () => {
  it('counts one valid approval per custodian; duplicates count once', () => {
    const c = destroyKey();
    const t = tallyApprovals(c, cs, [approve(c, cs[0]!), approve(c, cs[0]!), approve(c, cs[1]!)]);
    assert.deepEqual(t.approved, ['c1', 'c2']);
    assert.deepEqual(t.refused, []);
  });

  it('refuses an approval replayed from another ceremony', () => {
    const old = destroyKey();
    const fresh = destroyKey(); // same operation and parameters: only id and nonce differ
    const t = tallyApprovals(fresh, cs, [{ ...approve(old, cs[0]!) }, approve(fresh, cs[1]!)]);
    assert.deepEqual(t.approved, ['c2']);
    assert.match(t.refused[0]!.reason, /does not verify for this ceremony/);
  });

  it('refuses approvals of a ceremony whose parameters changed after signing', () => {
    const c = destroyKey();
    const sig = approve(c, cs[0]!);
    const changed = { ...c, parameters: { key_id: 'k_other' } };
    // The stored hash no longer matches the parameters: custodians and coordinator both refuse it.
    assert.throws(() => checkCeremonyForCustodian(changed, ['c-1']), /hash does not match/);
    const rehashed = newCeremony({ ...c, operation: c.operation, parameters: changed.parameters, clusterId: 'c-1', ttlSeconds: 60, recipients: [], threshold: 2 });
    assert.deepEqual(tallyApprovals(rehashed, cs, [sig]).approved, []);
  });

  it('counts nothing after expiry, and nothing from outside the manifest', () => {
    const c = destroyKey(Date.now() - 120_000);
    assert.deepEqual(tallyApprovals(c, cs, [approve(c, cs[0]!), approve(c, cs[1]!)]).approved, []);
    const live = destroyKey();
    const stranger = custodian('c9');
    const t = tallyApprovals(live, cs, [approve(live, stranger)]);
    assert.match(t.refused[0]!.reason, /not in the share manifest/);
  });

  it('an approval-only ceremony names no recipients; a releasing one must', () => {
    const c = destroyKey();
    checkCeremonyForCustodian(c, ['c-1']);
    const withRecipient = newCeremony({ operation: 'destroy-key', clusterId: 'c-1', initiator: 'a', ttlSeconds: 60, recipients: [{ coordinator_id: 'x', public_key_pem: 'k', ephemeral_public_key_pem: 'e' }], threshold: 2 });
    assert.throws(() => checkCeremonyForCustodian(withRecipient, ['c-1']), /releases no share/);
    const unseal = newCeremony({ operation: 'unseal', clusterId: 'c-1', initiator: 'a', ttlSeconds: 60, recipients: [], threshold: 2 });
    assert.throws(() => checkCeremonyForCustodian(unseal, ['c-1']), /no recipients/);
  });

  it('binds each recipient\'s per-ceremony ephemeral key: swapping it breaks the hash', () => {
    const c = newCeremony({ operation: 'unseal', clusterId: 'c-1', initiator: 'a', ttlSeconds: 60, recipients: [{ coordinator_id: 'x', public_key_pem: 'k', ephemeral_public_key_pem: 'e1' }], threshold: 2 });
    checkCeremonyForCustodian(c, ['c-1']);
    const swapped = { ...c, recipients: [{ ...c.recipients[0]!, ephemeral_public_key_pem: 'attacker' }] };
    assert.throws(() => checkCeremonyForCustodian(swapped, ['c-1']), /hash does not match/);
  });
});

describe("a ceremony's times, as a custodian checks them on its own clock", () => {
  const rehash = (c: Ceremony, patch: Partial<Ceremony>): Ceremony => {
    const x = { ...c, ...patch };
    return { ...x, hash: ceremonyHash(x) };
  };
  const join = (ttlSeconds: number, now?: number) =>
    newCeremony({ operation: 'join', clusterId: 'c-1', initiator: 'coordinator-2', ttlSeconds, threshold: 2, now, recipients: [{ coordinator_id: 'coordinator-2', public_key_pem: 'k', ephemeral_public_key_pem: 'e' }] });

  it('an expiry that is not a time never means "never expires": refused, and isExpired says expired', () => {
    const never = rehash(destroyKey(), { expires_at: 'never' });
    assert.throws(() => checkCeremonyForCustodian(never, ['c-1']), /UTC ISO 8601/);
    assert.equal(isExpired(never), true);
    assert.throws(() => checkCeremonyForCustodian(rehash(destroyKey(), { expires_at: '2030-01-01' }), ['c-1']), /UTC ISO 8601/);
  });

  it('a ceremony created ahead of the custodian clock is refused; its lifetime counts from that clock too', () => {
    const now = Date.now();
    assert.throws(() => checkCeremonyForCustodian(destroyKey(now + 6 * 24 * 3600_000), ['c-1'], now), /created in the future/);
    checkCeremonyForCustodian(destroyKey(now + 30_000), ['c-1'], now); // within the skew
    const ahead = rehash(destroyKey(now), { created_at: new Date(now).toISOString(), expires_at: new Date(now + 8 * 24 * 3600_000).toISOString() });
    assert.throws(() => checkCeremonyForCustodian(ahead, ['c-1'], now), /longer than 10080 minutes/);
  });

  it('a join lives at most 15 minutes', () => {
    checkCeremonyForCustodian(join(900), ['c-1']);
    assert.throws(() => checkCeremonyForCustodian(join(901), ['c-1']), /longer than 15 minutes/);
  });
});
