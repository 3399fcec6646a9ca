import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DEFAULT_REASON, KeyshardError, MAX_QUOTED, REASONS, ceremonyNotFound, failedPrecondition, isReason, keyNotFound, permissionDenied, quote, reasonOf, sealedError,
  uninitializedError, type ErrorCode,
} from './index.ts';

describe('KeyshardError', () => {
  it('carries a code, a reason (the code\'s default unless given), metadata and a cause', () => {
    const cause = new Error('etcd said no');
    const e = new KeyshardError('UNAVAILABLE', 'state store unavailable', { reason: 'STORE_UNAVAILABLE', metadata: { op: 'read' }, cause });
    assert.deepEqual([e.code, e.reason, e.metadata, e.cause, e.message], ['UNAVAILABLE', 'STORE_UNAVAILABLE', { op: 'read' }, cause, 'state store unavailable']);
    assert.ok(e instanceof Error);
    const plain = permissionDenied('app may not decrypt');
    assert.deepEqual([plain.reason, plain.metadata, 'cause' in plain], ['NOT_AUTHORIZED', {}, false]);
  });

  it('has a default reason for every code, and every default is a listed reason', () => {
    const codes: ErrorCode[] = ['INVALID_ARGUMENT', 'NOT_FOUND', 'ALREADY_EXISTS', 'FAILED_PRECONDITION', 'PERMISSION_DENIED', 'UNAUTHENTICATED', 'RESOURCE_EXHAUSTED', 'UNAVAILABLE', 'DEADLINE_EXCEEDED', 'UNIMPLEMENTED', 'INTERNAL'];
    for (const c of codes) {
      assert.ok(isReason(DEFAULT_REASON[c]), c);
      assert.equal(new KeyshardError(c, 'x').reason, DEFAULT_REASON[c]);
    }
  });

  it('lists each reason once, UPPER_SNAKE, with a one-line meaning', () => {
    for (const [reason, meaning] of Object.entries(REASONS)) {
      assert.match(reason, /^[A-Z][A-Z0-9_]{1,62}[A-Z0-9]$/, reason); // google.rpc.ErrorInfo's rule for reasons
      assert.ok(meaning.length > 10 && !meaning.includes('\n'), reason);
    }
    assert.equal(isReason('toString'), false);
    assert.equal(isReason('SEALED'), true);
  });

  it('tells sealed from uninitialized by reason, not by words', () => {
    assert.deepEqual([sealedError().code, sealedError().reason], ['FAILED_PRECONDITION', 'SEALED']);
    assert.deepEqual([uninitializedError().code, uninitializedError().reason], ['FAILED_PRECONDITION', 'UNINITIALIZED']);
    assert.doesNotMatch(uninitializedError().message, /sealed/);
    assert.equal(reasonOf(new Error('boom')), 'INTERNAL');
    assert.equal(reasonOf(failedPrecondition('x', { reason: 'KEY_DISABLED' })), 'KEY_DISABLED');
  });

  it('quotes at most MAX_QUOTED characters of caller input, escaped', () => {
    const long = 'x'.repeat(10_000);
    assert.equal(quote('a\nb'), '"a\\nb"');
    assert.equal(quote(long).length, MAX_QUOTED + 3); // quotes and the ellipsis
    const nf = keyNotFound(long);
    assert.ok(nf.message.length < MAX_QUOTED + 20, nf.message);
    assert.equal(nf.reason, 'KEY_NOT_FOUND');
    assert.ok(nf.metadata.key!.length <= MAX_QUOTED + 1);
    const c = ceremonyNotFound(long);
    assert.deepEqual([c.code, c.reason], ['NOT_FOUND', 'CEREMONY_NOT_FOUND']);
    assert.ok(c.message.length < MAX_QUOTED + 20);
  });
});
