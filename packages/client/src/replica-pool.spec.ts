/** Replica selection, health and retries against in-memory fake channels (no sockets). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { STATUS_DETAILS_KEY, encodeStatusDetails } from '@keyshard/rpc';
import { retryPolicy, statusError, type RetryOptions, type RetryPolicy } from './call-policy.ts';
import { Replica, ReplicaPool, type Transport, type UnaryCallback } from './replica-pool.ts';
import { KeyshardClient } from './index.ts';

const { IDLE, CONNECTING, READY, TRANSIENT_FAILURE, SHUTDOWN } = grpc.connectivityState;
const SEALED = 'keyshard is sealed: a custodian quorum must unseal it';

interface Answer {
  code?: grpc.status;
  details?: string;
  /** The ErrorInfo reason in the status details, as a keyshard server sends it. */
  reason?: string;
  delayMs?: number;
}

/** The status error a server answers `a` with. */
function refusal(a: Answer & { code: grpc.status }): grpc.ServiceError {
  const err = statusError(a.code, a.details ?? 'fake');
  if (a.reason) err.metadata.set(STATUS_DETAILS_KEY, encodeStatusDetails(a.code, a.details ?? 'fake', a.reason));
  return err;
}

interface FakeSpec {
  /** What connecting does: become READY (default), fail (connection refused), or never finish. */
  connect?: 'ready' | 'refused' | 'hang';
  /** The answer to the n-th request this replica receives (1-based); default OK. */
  answer?: (method: string, n: number) => Answer | undefined;
}

interface Send {
  address: string;
  method: string;
  requestId: unknown;
}

/** A channel that connects and answers as its spec says, and logs every request it receives. */
class FakeChannel implements Transport {
  #state: grpc.connectivityState = IDLE;
  #watchers = new Set<{ current: grpc.connectivityState; cb: (err?: Error) => void; timer: NodeJS.Timeout }>();

  constructor(
    readonly address: string,
    readonly spec: FakeSpec,
    readonly log: Send[],
  ) {}

  state(connect: boolean): grpc.connectivityState {
    const s = this.#state;
    if (connect && s === IDLE) {
      this.#set(CONNECTING);
      if (this.spec.connect !== 'hang') setImmediate(() => this.#set(this.spec.connect === 'refused' ? TRANSIENT_FAILURE : READY));
    }
    return s;
  }

  #set(s: grpc.connectivityState): void {
    if (this.#state === SHUTDOWN) return;
    this.#state = s;
    for (const w of this.#watchers)
      if (w.current !== s) {
        this.#watchers.delete(w);
        clearTimeout(w.timer);
        w.cb();
      }
  }

  watch(current: grpc.connectivityState, deadline: number, cb: (err?: Error) => void): void {
    if (this.#state === SHUTDOWN) throw new Error('Channel has been shut down');
    const w = { current, cb, timer: setTimeout(() => this.#watchers.delete(w) && cb(new Error('deadline')), Math.max(0, deadline - Date.now())) };
    this.#watchers.add(w);
  }

  unary(method: string, _request: unknown, metadata: grpc.Metadata, deadline: number, cb: UnaryCallback): void {
    assert.equal(this.#state, READY, 'a request is only handed over on a READY connection');
    this.log.push({ address: this.address, method, requestId: metadata.get('x-request-id')[0] });
    const a = this.spec.answer?.(method, this.log.filter((s) => s.address === this.address).length) ?? {};
    const delay = a.delayMs ?? 0;
    if (Date.now() + delay >= deadline) setTimeout(() => cb(statusError(grpc.status.DEADLINE_EXCEEDED, 'Deadline exceeded')), deadline - Date.now());
    else setTimeout(() => (a.code ? cb(refusal({ ...a, code: a.code })) : cb(null, { from: this.address })), delay);
  }

  close(): void {
    this.#set(SHUTDOWN);
  }
}

function fakeReplica(address: string, spec: FakeSpec, log: Send[], channels = 1): Replica {
  return new Replica(address, Array.from({ length: channels }, () => new FakeChannel(address, spec, log)));
}

function policy(o: RetryOptions = {}, internal: Partial<RetryPolicy> = {}): RetryPolicy {
  return { ...retryPolicy({ initialBackoffMs: 5, maxBackoffMs: 20, connectTimeoutMs: 200, ...o }), ...internal };
}

function pool(specs: Record<string, FakeSpec>, p = policy(), keyOperations = true) {
  const log: Send[] = [];
  const replicas = Object.entries(specs).map(([a, s]) => fakeReplica(a, s, log));
  return { pool: new ReplicaPool(replicas, p, keyOperations), log, replicas };
}

const soon = (ms = 1_000) => Date.now() + ms;
const from = (r: unknown) => (r as { from: string }).from;
const unavailable: FakeSpec = { answer: () => ({ code: grpc.status.UNAVAILABLE, details: 'down' }) };

async function rejection(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as grpc.ServiceError;
  }
  assert.fail('expected the call to fail');
}

describe('ReplicaPool', () => {
  it('retries an idempotent call that got UNAVAILABLE on another replica, with the same request id', async () => {
    const { pool: p, log } = pool({ a: unavailable, b: {} });
    assert.equal(from(await p.call('Encrypt', {}, soon(), 'rid-1')), 'b');
    assert.deepEqual(log, [
      { address: 'a', method: 'Encrypt', requestId: 'rid-1' },
      { address: 'b', method: 'Encrypt', requestId: 'rid-1' },
    ]);
  });

  it('never sends a state change without a request token again once a replica received it, even on UNAVAILABLE', async () => {
    for (const method of ['CancelCeremony', 'NotInTheTable']) {
      const { pool: p, log } = pool({ a: unavailable, b: {} });
      const err = await rejection(p.call(method, {}, soon()));
      assert.equal(err.code, grpc.status.UNAVAILABLE, method);
      assert.deepEqual(log.map((s) => s.address), ['a'], method);
    }
  });

  it('retries a state change that carries a request token on the next replica after UNAVAILABLE, the same request each time', async () => {
    for (const method of ['CreateKey', 'RotateKey', 'CreateAlias', 'ScheduleKeyDestruction', 'StartCeremony', 'StartUnseal', 'Init']) {
      const { pool: p, log } = pool({ a: unavailable, b: {} });
      const request = { name: 'k', request_token: 'tok' };
      assert.equal(from(await p.call(method, request, soon())), 'b', method);
      assert.deepEqual(log.map((s) => s.address), ['a', 'b'], method);
    }
  });

  it('moves a state change to the next replica when the connection was never established', async () => {
    const { pool: p, log } = pool({ a: { connect: 'refused' }, b: {} });
    assert.equal(from(await p.call('CreateKey', {}, soon())), 'b');
    assert.deepEqual(log.map((s) => s.address), ['b'], 'sent exactly once');
  });

  it('gives up on a connection that hangs after connectTimeoutMs, before sending', async () => {
    const { pool: p, log } = pool({ a: { connect: 'hang' }, b: {} }, policy({ connectTimeoutMs: 50 }));
    const t0 = Date.now();
    assert.equal(from(await p.call('CreateKey', {}, soon(5_000))), 'b');
    const took = Date.now() - t0;
    assert.ok(took >= 45 && took < 1_000, `took ${took} ms`);
    assert.deepEqual(log.map((s) => s.address), ['b']);
  });

  it('does not retry DEADLINE_EXCEEDED or any other answer, and those keep the replica healthy', async () => {
    for (const code of [grpc.status.DEADLINE_EXCEEDED, grpc.status.INVALID_ARGUMENT, grpc.status.NOT_FOUND, grpc.status.RESOURCE_EXHAUSTED, grpc.status.INTERNAL]) {
      const { pool: p, log, replicas } = pool({ a: { answer: () => ({ code }) }, b: {} });
      assert.equal((await rejection(p.call('Decrypt', {}, soon()))).code, code);
      assert.deepEqual(log.map((s) => s.address), ['a'], grpc.status[code]);
      assert.equal(replicas[0]!.failures, 0);
    }
  });

  it('keeps every retry within the caller deadline when all replicas are down', async () => {
    for (const spec of [{ connect: 'refused' }, unavailable, { connect: 'hang' }] as FakeSpec[]) {
      const { pool: p, log } = pool({ a: spec, b: spec }, policy({ maxAttempts: 100, connectTimeoutMs: 60 }));
      const t0 = Date.now();
      const err = await rejection(p.call('Encrypt', {}, t0 + 300));
      const took = Date.now() - t0;
      assert.ok([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED].includes(err.code), `${spec.connect}: ${err.message}`);
      // 200 ms of slack for a loaded machine's timers; a retry past the deadline would add a whole attempt (>= 300 ms).
      assert.ok(took <= 300 + 200, `${JSON.stringify(spec)}: took ${took} ms`);
      assert.match(err.details, /after \d+ attempts/);
      if (spec === unavailable) assert.ok(log.length >= 3, `${log.length} sends`);
    }
  });

  it('answers DEADLINE_EXCEEDED at the deadline when the only replica is slow', async () => {
    const { pool: p } = pool({ a: { answer: () => ({ delayMs: 5_000 }) } });
    const t0 = Date.now();
    const err = await rejection(p.call('GetKey', {}, t0 + 100));
    assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
    assert.ok(Date.now() - t0 < 150);
  });

  it('fails fast with one replica that refuses connections: backoff, not the whole deadline', async () => {
    const { pool: p } = pool({ a: { connect: 'refused' } });
    const t0 = Date.now();
    const err = await rejection(p.call('GetKey', {}, soon(10_000)));
    assert.equal(err.code, grpc.status.UNAVAILABLE);
    assert.match(err.details, /no connection to a: .*after 5 attempts/);
    assert.ok(Date.now() - t0 < 500, `took ${Date.now() - t0} ms`);
  });

  it('stops after maxAttempts', async () => {
    const { pool: p, log } = pool({ a: unavailable }, policy({ maxAttempts: 3 }));
    await rejection(p.call('ListKeys', {}, soon(5_000)));
    assert.equal(log.length, 3);
  });

  it('skips a replica that failed while another is healthy, and probes it again later', async () => {
    let aDown = true;
    const { pool: p, log } = pool(
      { a: { answer: () => (aDown ? { code: grpc.status.UNAVAILABLE } : undefined) }, b: {} },
      policy({}, { unhealthyMs: 150, random: () => 1 }),
    );
    await p.call('Encrypt', {}, soon());
    log.length = 0;
    for (let i = 0; i < 10; i++) assert.equal(from(await p.call('Encrypt', {}, soon())), 'b');
    assert.equal(log.length, 10, 'no request went to the unhealthy replica');
    aDown = false;
    await new Promise((r) => setTimeout(r, 200));
    const answered = new Set<string>();
    for (let i = 0; i < 4; i++) answered.add(from(await p.call('Encrypt', {}, soon())));
    assert.deepEqual([...answered].sort(), ['a', 'b'], 'back in rotation once its skip ended');
  });

  it('keeps sending state changes to the live replica while the other one refuses connections', async () => {
    const { pool: p, log } = pool({ a: { connect: 'refused' }, b: {} }, policy({}, { unhealthyMs: 1 }));
    for (let i = 0; i < 20; i++) assert.equal(from(await p.call('CreateKey', {}, soon())), 'b');
    assert.equal(log.length, 20);
  });

  it('balances over replicas and over each replica channels', async () => {
    const log: Send[] = [];
    const replicas = ['a', 'b', 'c'].map((a) => fakeReplica(a, {}, log, 2));
    const p = new ReplicaPool(replicas, policy(), true);
    const counts = new Map<string, number>();
    for (let i = 0; i < 60; i++) {
      const r = from(await p.call('Encrypt', {}, soon()));
      counts.set(r, (counts.get(r) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(counts), { a: 20, b: 20, c: 20 });
  });

  it('avoids a sealed replica for key operations: idempotent and tokened calls move, other state changes do not', async () => {
    const sealed: FakeSpec = { answer: () => ({ code: grpc.status.FAILED_PRECONDITION, details: SEALED, reason: 'SEALED' }) };
    {
      const { pool: p, log } = pool({ a: sealed, b: {} });
      assert.equal(from(await p.call('Sign', {}, soon())), 'b');
      for (let i = 0; i < 5; i++) assert.equal(from(await p.call('Sign', {}, soon())), 'b');
      assert.equal(log.filter((s) => s.address === 'a').length, 1);
    }
    {
      const { pool: p, log } = pool({ a: sealed, b: {} });
      const err = await rejection(p.call('NotInTheTable', {}, soon()));
      assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
      assert.equal(log.length, 1);
      const { pool: p2 } = pool({ a: sealed, b: {} });
      assert.equal(from(await p2.call('CreateKey', {}, soon())), 'b', 'a tokened state change moves on too');
    }
    {
      const { pool: p, log } = pool({ a: sealed, b: sealed });
      const t0 = Date.now();
      const err = await rejection(p.call('Encrypt', {}, soon(5_000)));
      assert.match(err.details, /is sealed/);
      assert.equal(log.length, 2, 'each replica asked once');
      assert.ok(Date.now() - t0 < 500, 'no backoff loop when every replica is sealed');
    }
    {
      // Only the reason says sealed: the same words without it (an older server), or an uninitialized cluster, are final answers.
      for (const answer of [{ details: SEALED }, { details: 'keyshard is not initialized', reason: 'UNINITIALIZED' }]) {
        const { pool: p, log } = pool({ a: { answer: () => ({ code: grpc.status.FAILED_PRECONDITION, ...answer }) }, b: {} });
        assert.equal((await rejection(p.call('Sign', {}, soon()))).code, grpc.status.FAILED_PRECONDITION);
        assert.equal(log.length, 1);
      }
    }
    {
      // Ceremony calls are no key operations: Status on a sealed replica is a normal answer.
      const { pool: p, log } = pool({ a: sealed, b: {} }, policy(), false);
      assert.equal((await rejection(p.call('Status', {}, soon()))).code, grpc.status.FAILED_PRECONDITION);
      assert.equal(log.length, 1);
    }
  });

  it('fails calls cleanly once closed', async () => {
    const { pool: p } = pool({ a: {} });
    p.close();
    assert.equal((await rejection(p.call('Encrypt', {}, soon()))).code, grpc.status.CANCELLED);
  });
});

describe('KeyshardClient options', () => {
  const tls = { ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) };
  it('refuses an empty or repeated address list', () => {
    assert.throws(() => new KeyshardClient({ address: [], tls }), /address/);
    assert.throws(() => new KeyshardClient({ address: ['a:1', ''], tls }), /address/);
    assert.throws(() => new KeyshardClient({ address: ['a:1', 'a:1'], tls }), /twice/);
    assert.throws(() => new KeyshardClient({ address: 'a:1', tls, retry: { maxAttempts: 0 } }), /maxAttempts/);
  });
});
