/** The idempotency table covers the whole API; backoff stays within its bounds. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { STATUS_DETAILS_KEY, encodeStatusDetails, keyshardProto } from '@keyshard/rpc';
import { methodSafety, newRequestToken, outcomeOf, takesRequestToken, retryDelayMs, retryPolicy, sealedForMs, statusError, unhealthyForMs } from './call-policy.ts';

describe('call policy', () => {
  it('classifies every KeyService and CeremonyService method from the protos; anything else is sent once', () => {
    const proto = keyshardProto();
    const methods = [...Object.keys(proto.KeyService.service), ...Object.keys(proto.CeremonyService.service)];
    for (const m of methods) assert.ok(['idempotent', 'once'].includes(methodSafety(m)), m);
    assert.equal(methodSafety('NoSuchMethod'), 'once');
    assert.equal(methodSafety('DeliverShare'), 'once', 'custodian methods are not the SDK\'s');
  });

  const TOKENED = [
    'CreateKey', 'RotateKey', 'UpdateKey', 'EnableKey', 'DisableKey', 'CreateAlias', 'UpdateAlias', 'DeleteAlias', 'ScheduleKeyDestruction', 'CancelKeyDestruction', 'SetRotationPolicy',
    'Init', 'StartUnseal', 'StartCeremony',
  ];

  it('repeats reads, pure crypto, and state changes that carry a request token; nothing else', () => {
    const proto = keyshardProto();
    const methods = [...Object.keys(proto.KeyService.service), ...Object.keys(proto.CeremonyService.service)];
    const idempotent = methods.filter((m) => methodSafety(m) === 'idempotent' && !TOKENED.includes(m));
    for (const m of idempotent) assert.match(m, /^(Get|List|Status$|Encrypt|Decrypt|ReEncrypt|GenerateDataKey|Sign$|Verify|Mac$|VerifyMac$|Seal$)/, m);
    assert.equal(idempotent.length, 20);
    assert.deepEqual([methodSafety('Seal'), takesRequestToken('Seal')], ['idempotent', false], 'sealed stays sealed');
    for (const m of TOKENED) assert.deepEqual([methodSafety(m), takesRequestToken(m)], ['idempotent', true], m);
    assert.deepEqual([methodSafety('CancelCeremony'), takesRequestToken('CancelCeremony')], ['once', false]);
    assert.equal(takesRequestToken('Encrypt'), false);
  });

  it('a fresh request token per call: 128 random bits, base64url', () => {
    const tokens = new Set(Array.from({ length: 1000 }, newRequestToken));
    assert.equal(tokens.size, 1000);
    for (const t of tokens) assert.match(t, /^[A-Za-z0-9_-]{22}$/);
  });

  it('full-jitter backoff doubles up to its cap', () => {
    const p = { ...retryPolicy({ initialBackoffMs: 100, maxBackoffMs: 1_000 }), random: () => 1 };
    assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => retryDelayMs(p, n)), [100, 200, 400, 800, 1_000, 1_000]);
    assert.equal(retryDelayMs({ ...p, random: () => 0 }, 3), 0);
  });

  it('skips a failing replica longer per failure, jittered, at most maxUnhealthyMs', () => {
    const p = retryPolicy({ maxUnhealthyMs: 3_000 });
    for (let failures = 1; failures < 40; failures++) {
      const ms = unhealthyForMs(p, failures);
      const cap = Math.min(3_000, 200 * 2 ** (failures - 1));
      assert.ok(ms >= cap / 2 && ms <= cap, `${failures}: ${ms}`);
    }
    const sealed = sealedForMs(p);
    assert.ok(sealed >= 1_500 && sealed <= 3_000, `sealed: ${sealed}`);
  });

  it('tells UNAVAILABLE and a sealed key operation (by its reason, never its message) from final answers', () => {
    const e = (code: grpc.status, details = 'x', reason?: string) => {
      const err = statusError(code, details);
      if (reason) err.metadata.set(STATUS_DETAILS_KEY, encodeStatusDetails(code, details, reason));
      return err;
    };
    const sealed = 'keyshard is sealed: a custodian quorum must unseal it';
    assert.equal(outcomeOf(e(grpc.status.UNAVAILABLE), false), 'unavailable');
    assert.equal(outcomeOf(e(grpc.status.FAILED_PRECONDITION, sealed, 'SEALED'), true), 'sealed');
    assert.equal(outcomeOf(e(grpc.status.FAILED_PRECONDITION, sealed, 'SEALED'), false), 'final');
    assert.equal(outcomeOf(e(grpc.status.FAILED_PRECONDITION, 'whatever the words', 'SEALED'), true), 'sealed');
    assert.equal(outcomeOf(e(grpc.status.FAILED_PRECONDITION, sealed), true), 'final', 'the message alone says nothing');
    assert.equal(outcomeOf(e(grpc.status.FAILED_PRECONDITION, 'keyshard is not initialized', 'UNINITIALIZED'), true), 'final');
    assert.equal(outcomeOf(e(grpc.status.FAILED_PRECONDITION, 'key sealed-box is destroyed', 'KEY_DESTROYED'), true), 'final');
    assert.equal(outcomeOf(e(grpc.status.DEADLINE_EXCEEDED), true), 'final');
    assert.equal(e(grpc.status.UNAVAILABLE, 'down').message, '14 UNAVAILABLE: down');
  });

  it('validates its options', () => {
    assert.throws(() => retryPolicy({ maxAttempts: 0 }), /maxAttempts/);
    assert.throws(() => retryPolicy({ maxAttempts: 1.5 }), /maxAttempts/);
    assert.throws(() => retryPolicy({ connectTimeoutMs: -1 }), /connectTimeoutMs/);
    assert.throws(() => retryPolicy({ maxBackoffMs: Number.NaN }), /maxBackoffMs/);
  });
});
