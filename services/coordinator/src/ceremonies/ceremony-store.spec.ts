/**
 * The ceremony aggregate's persistence (ceremony-store.ts) and opening under a lock (open.ts),
 * against a real single-member etcd (TestEtcd, through etcdForTests). No custodians, no HSM. The audit recorder is a
 * LABELLED FAKE that collects events.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { newCeremony, type Ceremony } from '@keyshard/crypto';
import { isKeyshardError } from '@keyshard/errors';
import { paths, type Namespace } from '@keyshard/store';
import type { AuditEventInput } from '@keyshard/audit-client';
import type { IntegrityViolation } from '../cluster/record-integrity.ts';
import { etcdForTests, unsealed } from '../cluster/test-support.ts';
import { CeremonyStore, MISMATCH } from './ceremony-store.ts';
import { openCeremony } from './open.ts';

const local = etcdForTests();
let n = 0;
let reports: IntegrityViolation[] = [];

function fresh(): { ns: Namespace; store: CeremonyStore } {
  const ns = local.etcd.namespace(`store-${++n}`);
  const { integrity, reports: refused } = unsealed();
  reports = refused;
  const store = new CeremonyStore(ns, integrity);
  return { ns, store };
}

const approval = (ttlSeconds = 60): Ceremony =>
  newCeremony({ operation: 'destroy-key', parameters: { key: 'k-1', driver: 'coordinator-1/abc' }, clusterId: 'c-1', initiator: 'admin', ttlSeconds, threshold: 2, recipients: [] });
const join = (): Ceremony =>
  newCeremony({ operation: 'join', clusterId: 'c-1', initiator: 'coordinator-2', ttlSeconds: 60, threshold: 2, recipients: [{ coordinator_id: 'coordinator-2', public_key_pem: 'pem', ephemeral_public_key_pem: 'eph' }] });


describe('ceremony store', () => {
  it('create takes the kind lock with the record in one transaction; a second ceremony of the kind is refused', async () => {
    const { ns, store } = fresh();
    const c = approval();
    assert.equal(await store.create(c), true);
    assert.equal(await store.lockHolder('destroy-key'), c.id);
    assert.equal(await store.create(approval()), false);
    assert.equal((await store.read(c.id, 'destroy-key'))?.id, c.id);
    assert.equal(Object.keys(await ns.getAll().prefix('ceremonies/').strings()).length, 1, 'the refused one left no record');
  });

  it('an approval ceremony is stored with a record MAC: altered in etcd, read refuses it (integrity error, reported), peek reads it as gone', async () => {
    const { ns, store } = fresh();
    const c = approval();
    await store.create(c);
    const raw = JSON.parse((await ns.get(paths.ceremony(c.id)).string())!) as Record<string, unknown>;
    assert.equal(typeof raw.mac, 'string');
    await ns.put(paths.ceremony(c.id)).value(JSON.stringify({ ...raw, threshold: 1 }));
    const before = reports.length;
    await assert.rejects(store.read(c.id, 'approval'), (e) => isKeyshardError(e) && e.code === 'FAILED_PRECONDITION');
    assert.equal(await store.peek(c.id, 'destroy-key'), undefined);
    assert.ok(reports.length > before);
    await assert.rejects(store.show(c.id), (e) => isKeyshardError(e) && e.code === 'FAILED_PRECONDITION');
    assert.deepEqual(await store.list(true), [], 'left out of the list');
  });

  it('progress is a compare-and-swap on an OPEN record whose bound fields still hash to the ceremony; a changed one is never written over', async () => {
    const { ns, store } = fresh();
    const c = join(); // share-releasing: no MAC; the hash binds it
    await store.create(c);
    c.approved_by.push('custodian-a');
    await store.progress(c);
    assert.deepEqual((await store.read(c.id, 'join'))?.approved_by, ['custodian-a']);
    const stored = (await store.read(c.id, 'join'))!;
    await ns.put(paths.ceremony(c.id)).value(JSON.stringify({ ...stored, threshold: 1 }));
    c.approved_by.push('custodian-b');
    await assert.rejects(store.progress(c), new RegExp(MISMATCH));
    assert.equal((await store.read(c.id, 'join'))?.threshold, 1, 'the altered record was not overwritten');
  });

  it('progress does not reopen a ceremony that ended in etcd', async () => {
    const { store } = fresh();
    const c = approval();
    await store.create(c);
    await store.final({ ...c, state: 'CEREMONY_STATE_CANCELLED', error: 'cancelled by admin' });
    c.approved_by.push('custodian-a');
    await store.progress(c);
    const stored = await store.read(c.id, 'destroy-key');
    assert.equal(stored?.state, 'CEREMONY_STATE_CANCELLED');
    assert.deepEqual(stored?.approved_by, []);
  });

  it('final releases the lock (only its own) and drops a join\'s vouches; a vouch is never overwritten', async () => {
    const { store } = fresh();
    const c = join();
    await store.create(c);
    assert.equal(await store.lockHolder('join-coordinator-2'), c.id);
    const vouch = { voucher: 'coordinator-1', seal_epoch: 3, not_after: new Date().toISOString(), signature: 'c2ln' };
    await store.putVouch(c.id, 'coordinator-1', vouch);
    await store.putVouch(c.id, 'coordinator-1', { ...vouch, seal_epoch: 9 });
    assert.deepEqual(await store.vouches(c.id), [vouch]);
    await store.final({ ...c, state: 'CEREMONY_STATE_COMPLETED' });
    assert.equal(await store.lockHolder('join-coordinator-2'), undefined);
    assert.deepEqual(await store.vouches(c.id), []);
    assert.equal((await store.read(c.id, 'join'))?.state, 'CEREMONY_STATE_COMPLETED');
  });
});

describe('opening a ceremony under its lock', () => {
  const events: AuditEventInput[] = [];
  const audit = { record: async (e: AuditEventInput) => void events.push(e) }; // FAKE recorder

  it('a live ceremony holding the lock is returned and nothing is created', async () => {
    const { store } = fresh();
    const live = approval();
    assert.equal(await openCeremony(live, {}, { store, audit, alive: async () => true }), live);
    const next = approval();
    assert.equal((await openCeremony(next, {}, { store, audit, alive: async () => true }))?.id, live.id);
    assert.equal(await store.read(next.id, 'destroy-key'), undefined);
  });

  it('an expired holder is closed EXPIRED (audited) and the new ceremony opens', async () => {
    const { store } = fresh();
    const old = approval();
    old.expires_at = new Date(Date.now() - 1000).toISOString(); // left open by a driver that crashed
    assert.equal(await store.create(old), true);
    const c = approval();
    assert.equal(await openCeremony(c, { why: 'test' }, { store, audit, alive: async () => true }), c);
    assert.equal((await store.read(old.id, 'destroy-key'))?.state, 'CEREMONY_STATE_EXPIRED');
    assert.equal(await store.lockHolder('destroy-key'), c.id);
    assert.ok(events.some((e) => e.operation === 'ceremony.destroy-key.expired' && e.ceremony_id === old.id));
    assert.ok(events.some((e) => e.operation === 'ceremony.destroy-key.created' && e.ceremony_id === c.id && e.details?.why === 'test'));
  });

  it('a lock pointed at a ceremony of another kind (altered in etcd) is not taken as the live one: released, the new ceremony opens', async () => {
    const { ns, store } = fresh();
    const other = approval(); // an open, MAC'd destroy-key ceremony whose driver lives
    assert.equal(await store.create(other), true);
    await ns.put(paths.ceremonyLock('unseal')).value(other.id);
    const unseal = newCeremony({ operation: 'unseal', clusterId: 'c-1', initiator: 'admin', ttlSeconds: 60, threshold: 2, recipients: [{ coordinator_id: 'coordinator-1', public_key_pem: 'pem', ephemeral_public_key_pem: 'eph' }] });
    assert.equal(await openCeremony(unseal, {}, { store, audit, alive: async () => true }), unseal, 'not the destroy-key ceremony as "the unseal under way"');
    assert.equal((await store.read(other.id, 'destroy-key'))?.state, 'CEREMONY_STATE_OPEN', 'the destroy-key ceremony was not touched');
    assert.equal(await store.lockHolder('unseal'), unseal.id);
  });

  it('a holder whose driver is gone is closed FAILED and the new ceremony opens', async () => {
    const { store } = fresh();
    const old = approval();
    await openCeremony(old, {}, { store, audit, alive: async () => true });
    const c = approval();
    assert.equal(await openCeremony(c, {}, { store, audit, alive: async (held) => held.id !== old.id }), c);
    const closed = await store.read(old.id, 'destroy-key');
    assert.equal(closed?.state, 'CEREMONY_STATE_FAILED');
    assert.match(closed!.error, /stopped/);
  });
});
