/**
 * Custody against a REAL SoftHSM2 token (fresh temp dir): who may plant a share set, and what a
 * set's peers record may authorise. The reviewer's attack with one coordinator certificate:
 *  1. propose a reshare naming `new_generation` 99 (manual policy: it stays pending);
 *  2. DeliverShare generation 99 within it, peers carrying the attacker's approval and vouch keys;
 *  3. DestroyShare with approvals the attacker signed, counted against the planted set.
 * Each step must be refused and the real share must still release (byte for byte).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { constants, generateKeyPairSync, privateDecrypt, randomBytes, sign } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { KeyshardError } from '@keyshard/errors';
import { CustodianToken, SOFTHSM_MODULE, initSoftHsmToken } from '@keyshard/hsm';
import {
  newCeremony, newEphemeralKeyPair, oaepEncrypt, openFromEphemeral, peersDigest, signVouch, vouchPublicKeyPem, type Ceremony,
} from '@keyshard/crypto';
import { Custody, type Approvals, type ShareSetPeers } from './custody.ts';

const PIN = '5511-user-pin';
const SO_PIN = '6622-so-pin';
const CLUSTER = 'c-0123456789abcdef';
const COORD = 'coordinator-1';

let dir = '';
const tokens: CustodianToken[] = [];
async function openToken(label: string): Promise<CustodianToken> {
  const t = CustodianToken.open({ modulePath: SOFTHSM_MODULE, tokenLabel: label, pin: PIN, oaepHash: 'sha1' });
  tokens.push(t);
  return t;
}

/** A custodian approval key outside any token (the other custodians of the set, or the attacker's). */
function approver(id: string) {
  const kp = generateKeyPairSync('ed25519', { publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  return { id, approvalPublicKeyPem: kp.publicKey, approve: (c: Ceremony) => ({ custodianId: id, signature: sign(null, Buffer.from(c.hash, 'hex'), kp.privateKey) }) };
}

function reshare(params: Record<string, string>): Ceremony {
  return newCeremony({ operation: 'reshare', parameters: params, clusterId: CLUSTER, initiator: COORD, ttlSeconds: 600, recipients: [], threshold: 2 });
}

function rejectsCode(fn: () => unknown, code: string, re: RegExp): void {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof KeyshardError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    return true;
  });
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'keyshard-custody-'));
  // Both tokens exist before the module first loads (it lists slots once).
  const { confPath } = await initSoftHsmToken({ dir, label: 'custody-a', pin: PIN, soPin: SO_PIN });
  await initSoftHsmToken({ dir, label: 'custody-b', pin: PIN, soPin: SO_PIN });
  process.env.SOFTHSM2_CONF = confPath;
});

after(async () => {
  for (const t of tokens) t.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('Custody: share sets only on a quorum of the set they replace', () => {
  let token: CustodianToken;
  let custody: Custody;
  let self: { id: string; approvalPublicKeyPem: string };
  const c2 = approver('custodian-2');
  const c3 = approver('custodian-3');
  const evil2 = approver('custodian-2'); // the attacker's keys under real custodian ids
  const evil3 = approver('custodian-3');
  const share = randomBytes(33);
  const realRoot = randomBytes(32);
  let realPeers: ShareSetPeers;
  const transport = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });

  /** What an unseal of set `generation` releases to the coordinator, opened and unwrapped as it would. */
  async function releaseOf(generation: number): Promise<Buffer> {
    const eph = newEphemeralKeyPair();
    const c = newCeremony({
      operation: 'unseal', parameters: { generation: String(generation) }, clusterId: CLUSTER, initiator: COORD, ttlSeconds: 600, threshold: 2,
      recipients: [{ coordinator_id: COORD, public_key_pem: transport.publicKey, ephemeral_public_key_pem: eph.publicKeyPem }],
    });
    await custody.propose(c, COORD);
    const r = await custody.approve(c.id);
    const blob = await openFromEphemeral(eph, r.releases[0]!.wrapped_share, { ceremonyHash: c.hash, coordinatorId: COORD, custodianId: 'custodian-1' });
    return privateDecrypt({ key: transport.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, blob);
  }

  before(async () => {
    token = await openToken('custody-a');
    const id = token.ensureIdentity();
    self = { id: 'custodian-1', approvalPublicKeyPem: id.approvalPublicKeyPem };
    assert.equal(token.enrollTrustedKey({ kind: 'transport', name: COORD }, transport.publicKey, SO_PIN), true);
    custody = new Custody(token, 'custodian-1', { approval: 'manual', join: 'auto' }, new Set([COORD]));
    realPeers = { threshold: 2, custodians: [self, c2, c3].map(({ id, approvalPublicKeyPem }) => ({ id, approvalPublicKeyPem })), vouchPublicKeyPem: vouchPublicKeyPem(realRoot) };
    custody.deliver({ clusterId: CLUSTER, encryptedShare: oaepEncrypt(id.enrollmentPublicKeyPem, share, 'sha1'), replace: false, generation: 1, peers: realPeers });
    assert.deepEqual(await releaseOf(1), share);
  });

  it('refuses the planted set 99 (steps 1-2), its destroy (step 3) and its vouch; the real share still releases', async () => {
    const enrollment = token.ensureIdentity().enrollmentPublicKeyPem; // public (GetIdentity)
    const fakeRoot = randomBytes(32);
    const planted: ShareSetPeers = {
      threshold: 2,
      custodians: [self, evil2, evil3].map(({ id, approvalPublicKeyPem }) => ({ id, approvalPublicKeyPem })),
      vouchPublicKeyPem: vouchPublicKeyPem(fakeRoot),
    };
    // 1 — proposed with only a coordinator certificate; manual policy: pending, never approved.
    const c = reshare({
      generation: '1', new_generation: '99', custodians: 'custodian-1,custodian-2,custodian-3', threshold: '2',
      new_peers_digest: peersDigest(planted.threshold, planted.custodians), previous_peers_digest: peersDigest(realPeers.threshold, realPeers.custodians),
    });
    assert.equal((await custody.propose(c, COORD)).status, 'pending');
    const evilApprovals: Approvals = [evil2.approve(c), evil3.approve(c)];
    // 2 — the delivery: without approvals, and with the attacker's, it lacks a quorum of set 1.
    const delivery = { clusterId: CLUSTER, encryptedShare: oaepEncrypt(enrollment, randomBytes(33), 'sha1'), replace: false, generation: 99, peers: planted, ceremonyId: c.id };
    rejectsCode(() => custody.deliver(delivery), 'PERMISSION_DENIED', /needs a quorum of valid approvals of reshare ceremony .* by share set 1: got 0 of 2/);
    rejectsCode(() => custody.deliver({ ...delivery, approvals: evilApprovals }), 'PERMISSION_DENIED', /quorum .* by share set 1: got 0 of 2/);
    // Naming a set this custodian does not hold (nothing to count against) is refused too.
    const elsewhere = reshare({ generation: '7', new_generation: '99', custodians: 'custodian-1,custodian-2,custodian-3', threshold: '2', new_peers_digest: peersDigest(2, planted.custodians) });
    await custody.propose(elsewhere, COORD);
    rejectsCode(() => custody.deliver({ ...delivery, ceremonyId: elsewhere.id, approvals: [evil2.approve(elsewhere), evil3.approve(elsewhere)] }), 'FAILED_PRECONDITION', /made from set 7, of which this custodian holds no record/);
    assert.deepEqual(token.shareGenerations(CLUSTER), [1], 'nothing planted');
    // 3 — the destroy: the attacker's approvals count for nothing against set 1's record.
    rejectsCode(() => custody.destroy(CLUSTER, c.id, evilApprovals), 'PERMISSION_DENIED', /needs a quorum of valid approvals of share set 1: got 0 of 2/);
    // The join vouch: no set 99, so no vouch key the attacker made.
    const eph = newEphemeralKeyPair();
    const join = newCeremony({
      operation: 'join', parameters: { generation: '99' }, clusterId: CLUSTER, initiator: COORD, ttlSeconds: 600, threshold: 2,
      recipients: [{ coordinator_id: COORD, public_key_pem: transport.publicKey, ephemeral_public_key_pem: eph.publicKeyPem }],
    });
    await assert.rejects(custody.propose(join, COORD, Date.now(), signVouch(fakeRoot, join, 'coordinator-2', 1)), (e) => {
      assert.ok(e instanceof KeyshardError && e.code === 'FAILED_PRECONDITION', String(e));
      return /no vouch key for share set 99/.test(e.message);
    });
    // The real share is intact.
    assert.deepEqual(token.shareGenerations(CLUSTER), [1]);
    assert.deepEqual(await releaseOf(1), share);
  });

  it("a ceremony's lifetime counts from this custodian's clock: 6 days ahead is refused; none outlives first sight + 7 days", async () => {
    const T = Date.now();
    const day = 24 * 3600_000;
    const destroyKey = (now: number, ttlSeconds: number) =>
      newCeremony({ operation: 'destroy-key', parameters: { key: 'k' }, clusterId: CLUSTER, initiator: COORD, ttlSeconds, recipients: [], threshold: 2, now });
    // The finding: dated 6 days ahead, asking for 7 days — it would have stayed open 13 days by this clock.
    await assert.rejects(custody.propose(destroyKey(T + 6 * day, 7 * 24 * 3600 - 1), COORD, T), (e) => {
      assert.ok(e instanceof KeyshardError && e.code === 'INVALID_ARGUMENT', String(e));
      return /created in the future/.test(e.message);
    });
    // Within the skew (30 s ahead) but asking for the full 7 days: it would end 30 s past first sight + 7 days — refused.
    await assert.rejects(custody.propose(destroyKey(T + 30_000, 7 * 24 * 3600), COORD, T), /would stay open longer/);
    // Accepted at the longest: the deadline is min(claimed expiry, first sight + 7 days), and it holds whatever is asked later.
    const c = destroyKey(T + 30_000, 7 * 24 * 3600 - 60);
    const r = await custody.propose(c, COORD, T);
    assert.equal(r.first_seen, T);
    assert.ok(r.deadline <= T + 7 * day && r.deadline <= Date.parse(c.expires_at));
    assert.ok(custody.pending(r.deadline - 1).some((p) => p.id === c.id));
    assert.ok(!custody.pending(r.deadline).some((p) => p.id === c.id), 'gone at the deadline');
    await assert.rejects(custody.approve(c.id, r.deadline), /has expired/);
    await assert.rejects(custody.propose(c, COORD, r.deadline), /has expired/);
    // Proposed again later, or with this clock set back (within the skew), the deadline stays the one fixed at first sight.
    const late = destroyKey(T, 3600);
    const rl = await custody.propose(late, COORD, T);
    assert.equal(rl.deadline, Math.min(Date.parse(late.expires_at), T + 7 * day));
    assert.equal((await custody.propose(late, COORD, T - 30_000)).first_seen, T);
    assert.equal((await custody.propose(late, COORD, T + 1000)).deadline, rl.deadline);
  });

  it('a real reshare (quorum of set 1) is taken; its destroy retires set 1 only on that quorum', async () => {
    const next = randomBytes(33);
    const newPeers: ShareSetPeers = { ...realPeers };
    const c = reshare({
      generation: '1', new_generation: '2', custodians: 'custodian-1,custodian-2,custodian-3', threshold: '2',
      new_peers_digest: peersDigest(2, newPeers.custodians), previous_peers_digest: peersDigest(2, realPeers.custodians),
    });
    await custody.propose(c, COORD);
    const quorum: Approvals = [c2.approve(c), c3.approve(c)];
    const delivery = { clusterId: CLUSTER, encryptedShare: oaepEncrypt(token.ensureIdentity().enrollmentPublicKeyPem, next, 'sha1'), replace: false, generation: 2, peers: newPeers, ceremonyId: c.id };
    // Peers other than the ones the ceremony binds are refused even with the quorum.
    rejectsCode(() => custody.deliver({ ...delivery, peers: { ...newPeers, custodians: [self, evil2, evil3] }, approvals: quorum }), 'PERMISSION_DENIED', /not the one ceremony .* binds/);
    custody.deliver({ ...delivery, approvals: quorum });
    assert.deepEqual(token.shareGenerations(CLUSTER), [1, 2]);
    rejectsCode(() => custody.destroy(CLUSTER, c.id, [c2.approve(c)]), 'PERMISSION_DENIED', /got 1 of 2/);
    assert.deepEqual(custody.destroy(CLUSTER, c.id, quorum), [1]);
    assert.deepEqual(token.shareGenerations(CLUSTER), [2]);
    assert.deepEqual(await releaseOf(2), next);
  });
});

describe('Custody: a new custodian (no share of the cluster)', () => {
  it('takes a reshare set unchecked, but then nothing can be planted beside it or reach it', async () => {
    const token = await openToken('custody-b');
    const id = token.ensureIdentity();
    const custody = new Custody(token, 'custodian-4', { approval: 'manual', join: 'auto' }, new Set([COORD]));
    const self = { id: 'custodian-4', approvalPublicKeyPem: id.approvalPublicKeyPem };
    const [a, b] = [approver('custodian-1'), approver('custodian-2')];
    const [evilA, evilB] = [approver('custodian-1'), approver('custodian-2')];
    const peers: ShareSetPeers = { threshold: 2, custodians: [self, a, b].map(({ id, approvalPublicKeyPem }) => ({ id, approvalPublicKeyPem })) };
    const c = reshare({ generation: '3', new_generation: '4', custodians: 'custodian-4,custodian-1,custodian-2', threshold: '2', new_peers_digest: peersDigest(2, peers.custodians) });
    await custody.propose(c, COORD);
    custody.deliver({ clusterId: CLUSTER, encryptedShare: oaepEncrypt(id.enrollmentPublicKeyPem, randomBytes(33), 'sha1'), replace: false, generation: 4, peers, ceremonyId: c.id });
    assert.deepEqual(token.shareGenerations(CLUSTER), [4]);
    // Init's set 1 is no longer taken (it would be a second, unchecked record).
    rejectsCode(
      () => custody.deliver({ clusterId: CLUSTER, encryptedShare: oaepEncrypt(id.enrollmentPublicKeyPem, randomBytes(33), 'sha1'), replace: false, generation: 1, peers }),
      'FAILED_PRECONDITION', /in use/,
    );
    // A planted set from set 4 needs set 4's quorum; from an older set, a record this custodian does not hold.
    const planted: ShareSetPeers = { threshold: 2, custodians: [self, evilA, evilB].map(({ id, approvalPublicKeyPem }) => ({ id, approvalPublicKeyPem })) };
    for (const from of ['4', '3']) {
      const evil = reshare({ generation: from, new_generation: '50', custodians: 'custodian-4,custodian-1,custodian-2', threshold: '2', new_peers_digest: peersDigest(2, planted.custodians), previous_peers_digest: peersDigest(2, peers.custodians) });
      await custody.propose(evil, COORD);
      assert.throws(() =>
        custody.deliver({ clusterId: CLUSTER, encryptedShare: oaepEncrypt(id.enrollmentPublicKeyPem, randomBytes(33), 'sha1'), replace: false, generation: 50, peers: planted, ceremonyId: evil.id, approvals: [evilA.approve(evil), evilB.approve(evil)] }),
      );
      assert.throws(() => custody.destroy(CLUSTER, evil.id, [evilA.approve(evil), evilB.approve(evil)]));
    }
    assert.deepEqual(token.shareGenerations(CLUSTER), [4]);
    // Its own set's quorum does retire it (a later reshare or destroy-cluster acting on set 4).
    const destroy = newCeremony({ operation: 'destroy-cluster', parameters: { generation: '4' }, clusterId: CLUSTER, initiator: COORD, ttlSeconds: 600, recipients: [], threshold: 2 });
    await custody.propose(destroy, COORD);
    assert.deepEqual(custody.destroy(CLUSTER, destroy.id, [a.approve(destroy), b.approve(destroy)]), [4]);
  });
});
