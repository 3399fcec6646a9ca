/**
 * Bounded inputs of the key domain (issue 17, item 6): policies, labels and encryption contexts
 * have documented maxima, enforced before use; a refusal is INVALID_ARGUMENT and quotes at most
 * ~128 characters of what the caller sent.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KeyshardError } from '@keyshard/errors';
import { MAX_POLICY_PRINCIPALS, MAX_PRINCIPALS_PER_GRANT, validatePolicy } from './key-policy.ts';
import { validateLabels } from './key-record.ts';
import { MAX_CONTEXT_ENCODED_BYTES, MAX_CONTEXT_PAIRS, validateNewContext } from './key-operations.ts';

function refused(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof KeyshardError, String(e));
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.equal(e.reason, 'INVALID_ARGUMENT');
    assert.ok(e.message.length < 300, `message of ${e.message.length} characters`);
    assert.match(e.message, re);
    return true;
  });
}

const names = (n: number, prefix = 'p') => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe('key policy bounds', () => {
  it('takes 64 principals per operation and 256 in all; refuses more (the 100,000-principal policy)', () => {
    validatePolicy({ encrypt: names(MAX_PRINCIPALS_PER_GRANT) });
    validatePolicy({ encrypt: names(64, 'a'), decrypt: names(64, 'b'), sign: names(64, 'c'), verify: names(64, 'd') });
    refused(() => validatePolicy({ encrypt: names(100_000) }), /100000 principals; at most 64 per operation/);
    refused(() => validatePolicy({ encrypt: names(64, 'a'), decrypt: names(64, 'b'), sign: names(64, 'c'), verify: names(64, 'd'), mac: ['e'] }), new RegExp(`at most ${MAX_POLICY_PRINCIPALS} principals`));
  });
  it('refuses a principal longer than 128 characters, quoting at most 128 of it', () => {
    validatePolicy({ encrypt: ['x'.repeat(128)] });
    refused(() => validatePolicy({ encrypt: ['x'.repeat(1_000_000)] }), /principal .* is not a name of 1 to 128 characters/);
    refused(() => validatePolicy({ encrypt: [''] }), /1 to 128/);
    refused(() => validatePolicy({ ['y'.repeat(1_000_000)]: ['a'] }), /unknown policy operation/);
  });
});

describe('label bounds', () => {
  it('64 labels, names up to 63 characters, values up to 256', () => {
    validateLabels(Object.fromEntries(names(64).map((n) => [n, 'v'])));
    validateLabels({ ['k'.repeat(63)]: 'v'.repeat(256) });
    refused(() => validateLabels(Object.fromEntries(names(65).map((n) => [n, 'v']))), /at most 64 labels/);
    refused(() => validateLabels({ ['k'.repeat(64)]: 'v' }), /1 to 63 characters/);
    refused(() => validateLabels({ ['k'.repeat(1_000_000)]: 'v' }), /1 to 63 characters/);
    refused(() => validateLabels({ k: 'v'.repeat(257) }), /limited to 256 characters/);
    refused(() => validateLabels({ k: 'v'.repeat(1_000_000) }), /limited to 256 characters/);
  });
});

describe('encryption context bounds (new ciphertexts)', () => {
  it('32 pairs and 4 KiB encoded; a 1 MB value is refused without being echoed', () => {
    validateNewContext(Object.fromEntries(names(MAX_CONTEXT_PAIRS).map((n) => [n, 'v'])));
    refused(() => validateNewContext(Object.fromEntries(names(33).map((n) => [n, 'v']))), /33 entries; at most 32/);
    // 4 pairs of 1000-byte values: each entry within the per-string limit, the whole over 4 KiB.
    refused(() => validateNewContext(Object.fromEntries(names(5).map((n) => [n, 'v'.repeat(1000)]))), new RegExp(`at most ${MAX_CONTEXT_ENCODED_BYTES}`));
    refused(() => validateNewContext({ k: 'v'.repeat(1_000_000) }), /limited to 1024 bytes/);
  });
});
