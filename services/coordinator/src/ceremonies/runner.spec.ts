/**
 * Module tests of the ceremony runner: every transition of the table in runner.ts's header,
 * and every custodian outcome. LABELLED FAKES: custodians are scripted answer queues, the audit
 * recorder collects events (and can be told to fail), the kind counts what it was asked; the
 * records are in memory. The real custodian protocol and etcd are in ceremony-store.spec.ts and
 * the integration tests (test/ha.test.ts, governance, disaster-recovery, hsm-release).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ceremonyHash, newCeremony, type Ceremony } from '@keyshard/crypto';
import * as grpc from '@grpc/grpc-js';
import { KeyshardError } from '@keyshard/errors';
import { createLogger, type Logger } from '@keyshard/config';
import { STATUS_DETAILS_KEY, encodeStatusDetails } from '@keyshard/rpc';
import type { AuditEventInput } from '@keyshard/audit-client';
import { custodianError, type ReleaseResponse } from './custodian-link.ts';
import { runCeremony, type CeremonyKind, type CustodianPort, type RunContext } from './runner.ts';
import { MISMATCH, type CeremonyRecords } from './ceremony-store.ts';

const log = createLogger('runner-spec', 'silent');
const released = (tag: string): ReleaseResponse => ({ ceremony_id: '', status: 'released', releases: [], approval_signature: Buffer.from(tag), reason: '', succession: null });
const pending: ReleaseResponse = { ...released(''), status: 'pending' };
const denied: ReleaseResponse = { ...released(''), status: 'denied', reason: 'not today' };
type Answer = ReleaseResponse | Error;

/** FAKE custodian: answers from a script, the last answer repeating; counts its calls. */
class ScriptedCustodian implements CustodianPort {
  proposals = 0;
  releases = 0;
  constructor(readonly id: string, private script: Answer[]) {}
  async propose(): Promise<ReleaseResponse> {
    this.proposals++;
    return this.#next();
  }
  async release(): Promise<ReleaseResponse> {
    this.releases++;
    return this.#next();
  }
  #next(): Promise<ReleaseResponse> {
    const a = this.script.length > 1 ? this.script.shift()! : this.script[0]!;
    return a instanceof Error ? Promise.reject(a) : Promise.resolve(a);
  }
}

/** FAKE kind: accepts an answer whose signature bytes read "good"; records what it was asked. */
function fakeKind() {
  const seen = { accepted: [] as string[], completed: [] as string[][], disposed: [] as string[][] };
  const kind: CeremonyKind<string> = {
    events: { accepted: 'share_accepted', rejected: 'share_rejected' },
    unit: 'valid shares',
    async accept(_c, id, res) {
      seen.accepted.push(id);
      if (res.approval_signature.toString() !== 'good') throw new KeyshardError('FAILED_PRECONDITION', `bad answer from ${id}`);
      return `value-${id}`;
    },
    async complete(_c, accepted) {
      seen.completed.push(accepted.map((a) => a.custodianId));
      return { done: 'yes' };
    },
    dispose: (values) => void seen.disposed.push(values),
  };
  return { kind, seen };
}

/** In-memory records (FAKE of ceremony-store.ts): the stored copy can be altered by a test. */
function memoryRecords(c: Ceremony) {
  const stored = { current: structuredClone(c) as Ceremony | undefined, progress: 0, finals: [] as string[] };
  const records: CeremonyRecords = {
    current: async () => (stored.current ? structuredClone(stored.current) : undefined),
    progress: async (x) => {
      stored.progress++;
      stored.current = structuredClone(x);
    },
    final: async (x) => {
      stored.finals.push(x.state);
      stored.current = structuredClone(x);
    },
  };
  return { stored, records };
}

function ceremony(threshold = 2, ttlSeconds = 60): Ceremony {
  return newCeremony({ operation: 'unseal', clusterId: 'c-1', initiator: 'admin', ttlSeconds, threshold, recipients: [] });
}

function setup(links: CustodianPort[], opts: Partial<RunContext> & { threshold?: number; failAudit?: string } = {}) {
  const c = ceremony(opts.threshold ?? 2);
  const { stored, records } = memoryRecords(c);
  const events: AuditEventInput[] = [];
  const audit = {
    record: async (e: AuditEventInput) => {
      if (opts.failAudit && e.operation.endsWith(opts.failAudit)) throw new KeyshardError('UNAVAILABLE', 'audit sink unreachable');
      events.push(e);
    },
  };
  const o: RunContext = { role: 'driver', links, records, audit, log, pollMs: 5, refusalsFinal: true, ...opts };
  return { c, stored, events, o, ops: () => events.map((e) => e.operation) };
}

describe('ceremony runner: transitions', () => {
  it('t accepted: complete runs once with exactly t answers, COMPLETED is recorded and audited; releases past t stay unopened', async () => {
    const links = ['a', 'b', 'c'].map((id) => new ScriptedCustodian(id, [released('good')]));
    const { kind, seen } = fakeKind();
    const { c, stored, ops, o } = setup(links, { threshold: 2 });
    const out = await runCeremony(c, kind, o);
    assert.equal(out.state, 'CEREMONY_STATE_COMPLETED');
    assert.deepEqual(seen.completed, [['a', 'b']]);
    assert.deepEqual(seen.accepted, ['a', 'b'], 'the third release is never opened');
    assert.deepEqual(stored.finals, ['CEREMONY_STATE_COMPLETED']);
    assert.deepEqual(ops(), ['ceremony.unseal.share_accepted', 'ceremony.unseal.share_accepted', 'ceremony.unseal.completed']);
    assert.deepEqual(c.approved_by, ['a', 'b']);
    assert.deepEqual(seen.disposed, [['value-a', 'value-b']], 'accepted values are disposed of');
  });

  it('pending answers are asked again by release (proposed once); progress is recorded only in rounds that decided something', async () => {
    const a = new ScriptedCustodian('a', [pending, pending, released('good')]);
    const b = new ScriptedCustodian('b', [pending, released('good')]);
    const { kind } = fakeKind();
    const { c, stored, o } = setup([a, b]);
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_COMPLETED');
    assert.equal(a.proposals, 1);
    assert.equal(a.releases, 2);
    assert.equal(b.proposals, 1);
    assert.equal(stored.progress, 2, 'round 2 (b) and round 3 (a) decided something; round 1 did not');
  });

  it('below t possible (denied + rejected): FAILED with the reason; complete never runs', async () => {
    const links = [new ScriptedCustodian('a', [released('good')]), new ScriptedCustodian('b', [denied]), new ScriptedCustodian('c', [released('forged')])];
    const { kind, seen } = fakeKind();
    const { c, stored, ops, o } = setup(links, { threshold: 2 });
    const out = await runCeremony(c, kind, o);
    assert.equal(out.state, 'CEREMONY_STATE_FAILED');
    assert.match(c.error, /only 1 valid shares can still be collected, 2 needed/);
    assert.equal(c.error_reason, 'QUORUM_NOT_MET');
    assert.deepEqual(seen.completed, []);
    assert.deepEqual(c.denied_by, ['b']);
    assert.deepEqual(c.failures, [{ custodian_id: 'c', reason: 'bad answer from c', error_reason: 'FAILED_PRECONDITION' }]);
    assert.deepEqual(stored.finals, ['CEREMONY_STATE_FAILED']);
    assert.ok(ops().includes('ceremony.unseal.denied') && ops().includes('ceremony.unseal.share_rejected') && ops().at(-1) === 'ceremony.unseal.failed');
    assert.deepEqual(seen.disposed, [['value-a']], 'the share accepted before the failure is disposed of');
  });

  it('expired: EXPIRED recorded and audited, no custodian asked', async () => {
    const a = new ScriptedCustodian('a', [released('good')]);
    const { kind } = fakeKind();
    const { c, stored, ops, o } = setup([a]);
    c.expires_at = new Date(Date.now() - 1000).toISOString();
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_EXPIRED');
    assert.equal(c.error_reason, 'CEREMONY_EXPIRED');
    assert.equal(a.proposals, 0);
    assert.deepEqual(stored.finals, ['CEREMONY_STATE_EXPIRED']);
    assert.deepEqual(ops(), ['ceremony.unseal.expired']);
  });

  it('cancelled by the caller: CANCELLED with its reason, recorded and audited', async () => {
    const { kind } = fakeKind();
    const { c, stored, ops, o } = setup([new ScriptedCustodian('a', [pending])], { cancelled: () => 'the client went away' });
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_CANCELLED');
    assert.equal(c.error, 'the client went away');
    assert.equal(c.error_reason, 'CANCELLED');
    assert.deepEqual(stored.finals, ['CEREMONY_STATE_CANCELLED']);
    assert.deepEqual(ops(), ['ceremony.unseal.cancelled']);
  });

  it('driver: the stored record ended elsewhere (an admin cancelled through another replica): the run takes its state, writes and audits nothing', async () => {
    const { kind, seen } = fakeKind();
    const a = new ScriptedCustodian('a', [pending]);
    const { c, stored, ops, o } = setup([a, new ScriptedCustodian('b', [pending])]);
    setTimeout(() => (stored.current = { ...stored.current!, state: 'CEREMONY_STATE_CANCELLED', error: 'cancelled by admin', error_reason: 'CANCELLED' }), 30);
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_CANCELLED');
    assert.deepEqual([c.error, c.error_reason], ['cancelled by admin', 'CANCELLED']);
    assert.deepEqual(stored.finals, []);
    assert.deepEqual(ops(), []);
    assert.deepEqual(seen.completed, []);
  });

  it('t accepted but the stored bound fields changed: FAILED, nothing done', async () => {
    const { kind, seen } = fakeKind();
    const links = ['a', 'b'].map((id) => new ScriptedCustodian(id, [released('good')]));
    const { c, stored, o } = setup(links);
    const altered = { ...stored.current!, parameters: { generation: '7' } };
    altered.hash = ceremonyHash(altered); // a consistent record, but not what the custodians signed
    o.records = { ...o.records, current: async () => structuredClone(altered), progress: async () => {} };
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_FAILED');
    assert.deepEqual([c.error, c.error_reason], [MISMATCH, 'INTEGRITY_FAILURE']);
    assert.deepEqual(seen.completed, []);
    assert.deepEqual(stored.finals, ['CEREMONY_STATE_FAILED']);
  });

  it('t accepted but the stored record ended meanwhile: the run takes its state; complete never runs', async () => {
    const { kind, seen } = fakeKind();
    const links = ['a', 'b'].map((id) => new ScriptedCustodian(id, [released('good')]));
    const { c, stored, o } = setup(links);
    let reads = 0;
    const records = o.records;
    o.records = { ...records, current: async (x) => (++reads === 1 ? records.current(x) : { ...stored.current!, state: 'CEREMONY_STATE_CANCELLED', error: 'sealed' }) };
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_CANCELLED');
    assert.deepEqual(seen.completed, []);
    assert.deepEqual(stored.finals, []);
  });

  it('cancelled while the quorum\'s answers are recorded: CANCELLED, complete never runs', async () => {
    const { kind, seen } = fakeKind();
    const links = ['a', 'b'].map((id) => new ScriptedCustodian(id, [released('good')]));
    let cancel: string | undefined;
    const { c, stored, o } = setup(links, { cancelled: () => cancel });
    const records = o.records;
    o.records = { ...records, progress: async (x) => ((cancel = 'sealed by an admin'), records.progress(x)) };
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_CANCELLED');
    assert.deepEqual(seen.completed, []);
    assert.deepEqual(stored.finals, ['CEREMONY_STATE_CANCELLED']);
  });

  it('a kind that accepts beyond the quorum (approvals) counts every valid answer of the round; one that does not leaves them unopened', async () => {
    const { kind, seen } = fakeKind();
    const links = ['a', 'b', 'c'].map((id) => new ScriptedCustodian(id, [released('good')]));
    const { c, o } = setup(links, { threshold: 2 });
    assert.equal((await runCeremony(c, { ...kind, acceptsBeyondQuorum: true }, o)).state, 'CEREMONY_STATE_COMPLETED');
    assert.deepEqual(seen.completed, [['a', 'b', 'c']]);
  });

  it('an audit that cannot be recorded stops the ceremony: FAILED (fail closed), the error is returned, complete never runs', async () => {
    const { kind, seen } = fakeKind();
    const links = ['a', 'b'].map((id) => new ScriptedCustodian(id, [released('good')]));
    const { c, stored, o } = setup(links, { failAudit: 'share_accepted' });
    const out = await runCeremony(c, kind, o);
    assert.equal(out.state, 'CEREMONY_STATE_FAILED');
    assert.match((out.error as Error).message, /audit sink unreachable/);
    assert.deepEqual([c.error, c.error_reason], ['audit sink unreachable', 'UNAVAILABLE'], 'the reason of the error that stopped it');
    assert.deepEqual(seen.completed, []);
    assert.deepEqual(stored.finals, ['CEREMONY_STATE_FAILED']);
    assert.deepEqual(seen.disposed, [['value-a']]);
  });

  it('a follower stops when abandoned, recording nothing', async () => {
    const { kind } = fakeKind();
    let rounds = 0;
    const a = new ScriptedCustodian('a', [pending]);
    const { c, stored, ops, o } = setup([a], { role: 'follower', threshold: 1, abandoned: () => ++rounds > 3 });
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_OPEN');
    assert.equal(a.proposals, 0, 'a follower never proposes');
    assert.equal(a.releases, 3);
    assert.deepEqual(stored.finals, []);
    assert.equal(stored.progress, 0);
    assert.deepEqual(ops(), []);
  });
});

describe('ceremony runner: custodian outcomes', () => {
  const refusal = () => new KeyshardError('PERMISSION_DENIED', 'custodian a: transport key not enrolled', { reason: 'NOT_ENROLLED' });

  it('a refusal is final when the caller says so: in failures, audited as refused, never asked again', async () => {
    const a = new ScriptedCustodian('a', [refusal()]);
    const { kind } = fakeKind();
    const { c, ops, events, o } = setup([a, new ScriptedCustodian('b', [released('good')])], { threshold: 2, refusalsFinal: true });
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_FAILED');
    assert.equal(a.proposals + a.releases, 1);
    assert.deepEqual(c.failures, [{ custodian_id: 'a', reason: 'custodian a: transport key not enrolled', error_reason: 'NOT_ENROLLED' }]);
    assert.deepEqual([c.error_reason, ops()], ['QUORUM_NOT_MET', ['ceremony.unseal.refused', 'ceremony.unseal.share_accepted', 'ceremony.unseal.failed']]);
    const refused = events.find((e) => e.operation === 'ceremony.unseal.refused')!;
    assert.deepEqual([refused.code, refused.details?.error_reason], ['PERMISSION_DENIED', 'NOT_ENROLLED']);
  });

  it('otherwise a refusal is retried like an unreachable custodian, until it answers', async () => {
    const a = new ScriptedCustodian('a', [refusal(), refusal(), released('good')]);
    const { kind } = fakeKind();
    const { c, o } = setup([a, new ScriptedCustodian('b', [released('good')])], { refusalsFinal: false });
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_COMPLETED');
    assert.equal(a.proposals, 3, 'not yet proposed successfully: proposed again');
    assert.deepEqual(c.failures, []);
  });

  it('an unreachable custodian (UNAVAILABLE) is asked again, even when refusals are final', async () => {
    const a = new ScriptedCustodian('a', [new KeyshardError('UNAVAILABLE', 'custodian a: unreachable'), released('good')]);
    const { kind } = fakeKind();
    const { c, o } = setup([a, new ScriptedCustodian('b', [released('good')])]);
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_COMPLETED');
    assert.equal(a.proposals, 2);
  });

  it('a follower never takes a refusal as final (the driver may not have proposed yet) and audits no denial', async () => {
    const a = new ScriptedCustodian('a', [refusal(), denied]);
    const { kind } = fakeKind();
    const { c, ops, o } = setup([a], { role: 'follower', threshold: 1 });
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_FAILED');
    assert.deepEqual(c.failures, []);
    assert.deepEqual(c.denied_by, ['a']);
    assert.deepEqual(ops(), [], 'a follower records and audits no denial or end');
  });
});

describe('ceremony runner: what custodians answer with, through CustodianLink\'s mapping (custodianError)', () => {
  /** A status as a custodian sends it (grpc-js ServiceError shape), its reason in the details when given. */
  function custodianStatus(code: grpc.status, details: string, reason?: string): grpc.ServiceError {
    const metadata = new grpc.Metadata();
    if (reason) metadata.set(STATUS_DETAILS_KEY, encodeStatusDetails(code, details, reason));
    return Object.assign(new Error(`${code} ${grpc.status[code]}: ${details}`), { code, details, metadata });
  }
  /** FAKE logger: collects warnings. */
  function warnings() {
    const seen: { msg: string; fields: Record<string, unknown> }[] = [];
    const log = { debug() {}, info() {}, error() {}, warn: (fields: Record<string, unknown>, msg: string) => void seen.push({ msg, fields }) } as unknown as Logger;
    return { log, seen };
  }

  it('keeps a refusing custodian\'s reason; its INVALID_ARGUMENT (its check of the ceremony) is a refusal too, recorded with its reason', async () => {
    const wrong = custodianError('a', custodianStatus(grpc.status.FAILED_PRECONDITION, 'ceremony cer-1 belongs to another cluster', 'WRONG_CLUSTER'));
    const enrolled = custodianError('b', custodianStatus(grpc.status.PERMISSION_DENIED, 'coordinator-1 has no transport key enrolled', 'NOT_ENROLLED'));
    const hash = custodianError('c', custodianStatus(grpc.status.INVALID_ARGUMENT, 'ceremony hash does not match its parameters')); // no details: an older custodian
    assert.deepEqual([wrong.code, wrong.reason, enrolled.code, enrolled.reason, hash.code, hash.reason], [
      'FAILED_PRECONDITION', 'WRONG_CLUSTER', 'PERMISSION_DENIED', 'NOT_ENROLLED', 'FAILED_PRECONDITION', 'INVALID_ARGUMENT',
    ]);
    const links = [new ScriptedCustodian('a', [wrong]), new ScriptedCustodian('b', [enrolled]), new ScriptedCustodian('c', [hash]), new ScriptedCustodian('d', [released('good')])];
    const { kind } = fakeKind();
    const { c, o, stored } = setup(links, { threshold: 2 });
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_FAILED');
    assert.deepEqual(links.map((l) => l.proposals + l.releases), [1, 1, 1, 1], 'each refusal is final: never asked again');
    assert.deepEqual(c.failures, [
      { custodian_id: 'a', reason: 'custodian a: ceremony cer-1 belongs to another cluster', error_reason: 'WRONG_CLUSTER' },
      { custodian_id: 'b', reason: 'custodian b: coordinator-1 has no transport key enrolled', error_reason: 'NOT_ENROLLED' },
      { custodian_id: 'c', reason: 'custodian c: ceremony hash does not match its parameters', error_reason: 'INVALID_ARGUMENT' },
    ]);
    assert.deepEqual([c.error_reason, stored.current?.error_reason], ['QUORUM_NOT_MET', 'QUORUM_NOT_MET'], 'recorded with the final state');
  });

  it('an unreachable custodian and one that answers INTERNAL or NOT_FOUND are asked again (UNAVAILABLE); only the answering one is a warning, once', async () => {
    const internal = custodianError('a', custodianStatus(grpc.status.INTERNAL, 'internal error'));
    const unreachable = custodianError('b', custodianStatus(grpc.status.UNAVAILABLE, 'No connection established'));
    const late = custodianError('b', custodianStatus(grpc.status.DEADLINE_EXCEEDED, 'Deadline exceeded'));
    const unknown = custodianError('c', custodianStatus(grpc.status.NOT_FOUND, 'ceremony cer-1 has not been proposed to this custodian', 'CEREMONY_NOT_FOUND'));
    assert.deepEqual([internal.code, internal.metadata, unreachable.code, unreachable.metadata, late.code, unknown.code, unknown.metadata], [
      'UNAVAILABLE', { custodian_status: 'INTERNAL' }, 'UNAVAILABLE', {}, 'UNAVAILABLE', 'UNAVAILABLE', { custodian_status: 'NOT_FOUND' },
    ]);
    assert.match(internal.message, /^custodian a answered INTERNAL: internal error$/);
    const a = new ScriptedCustodian('a', [internal, internal, internal, released('good')]);
    const b = new ScriptedCustodian('b', [unreachable, late, released('good')]);
    const { kind } = fakeKind();
    const { log, seen } = warnings();
    const { c, o } = setup([a, b], { threshold: 2, log });
    assert.equal((await runCeremony(c, kind, o)).state, 'CEREMONY_STATE_COMPLETED');
    assert.deepEqual([a.proposals, b.proposals], [4, 3]);
    assert.deepEqual(c.failures, []);
    assert.deepEqual(seen.map((w) => [w.msg, w.fields.custodian]), [['custodian answered with an error; asking again', 'a']]);
  });
});
