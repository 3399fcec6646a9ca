import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ShareRejected, checkShare, combineShares, splitRootKey, validateQuorum, type CustodianKeys } from './share-manifest.ts';

const custodians: CustodianKeys[] = ['c1', 'c2', 'c3', 'c4', 'c5'].map((id) => ({
  id,
  enrollmentPublicKeyPem: `enroll-${id}`,
  approvalPublicKeyPem: `approve-${id}`,
}));

async function fixture() {
  const root = randomBytes(32);
  const { manifest, shares } = await splitRootKey(root, 'c-test', custodians, 3);
  const byId = (i: number) => ({ custodianId: custodians[i]!.id, share: shares[i]! });
  return { root, manifest, shares, byId };
}

function rejectedFor(custodianId: string, reason: RegExp) {
  return (e: unknown) => e instanceof ShareRejected && e.custodianId === custodianId && reason.test(e.message);
}

test('any t valid shares reconstruct the root key', async () => {
  const { root, manifest, byId } = await fixture();
  assert.deepEqual(await combineShares(manifest, [byId(0), byId(1), byId(2)]), root);
  assert.deepEqual(await combineShares(manifest, [byId(4), byId(2), byId(3)]), root);
  assert.equal(new Set(manifest.custodians.map((c) => c.x)).size, 5);
  assert.ok(manifest.custodians.every((c) => c.x !== 0));
});

test('a tampered share is refused and its custodian named', async () => {
  const { manifest, byId } = await fixture();
  const s = byId(1);
  const tampered = new Uint8Array(s.share);
  tampered[0]! ^= 0x80;
  assert.throws(() => checkShare(manifest, s.custodianId, tampered), rejectedFor('c2', /commitment/));
});

test('a share with x = 0 is refused', async () => {
  const { manifest, byId } = await fixture();
  const forged = new Uint8Array(byId(2).share);
  forged[32] = 0;
  assert.throws(() => checkShare(manifest, 'c3', forged), rejectedFor('c3', /x = 0/));
});

test('a share with an unregistered x is refused', async () => {
  const { manifest, byId } = await fixture();
  // c4 presenting c1's (valid) share: right bytes, wrong custodian.
  assert.throws(() => checkShare(manifest, 'c4', byId(0).share), rejectedFor('c4', /unregistered x/));
  assert.throws(() => checkShare(manifest, 'c9', byId(0).share), rejectedFor('c9', /not in the share manifest/));
  assert.throws(() => checkShare(manifest, 'c1', byId(0).share.subarray(0, 20)), rejectedFor('c1', /bytes/));
});

test('fewer than t shares are refused before anything is combined', async () => {
  const { manifest, byId } = await fixture();
  await assert.rejects(combineShares(manifest, [byId(0), byId(1)]), /need 3 valid shares, have 2/);
  await assert.rejects(combineShares(manifest, [byId(0), byId(0), byId(1)]), /have 2/, 'duplicates count once');
});

test('a manifest edited after init is detected after reconstruction', async () => {
  const { manifest, byId } = await fixture();
  const edited = { ...manifest, custodians: manifest.custodians.map((c) => (c.id === 'c5' ? { ...c, approvalPublicKeyPem: 'attacker' } : c)) };
  await assert.rejects(combineShares(edited, [byId(0), byId(1), byId(2)]), /MAC does not verify/);
  const wrongKcv = { ...manifest, kcv: '00'.repeat(32) };
  await assert.rejects(combineShares(wrongKcv, [byId(0), byId(1), byId(2)]), /key check value/);
});

test('invalid n or t are INVALID_ARGUMENT', () => {
  for (const [n, t] of [[5, 1], [2, 3], [256, 3], [3.5, 2]] as const)
    assert.throws(() => validateQuorum(n, t), { code: 'INVALID_ARGUMENT' });
  validateQuorum(2, 2);
  validateQuorum(255, 255);
});
