/** Sensitive-field HMACs against the frozen vector vectors/sensitive.json (VECTORS.md). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEvent } from './audit-event.ts';
import { SensitiveFields, hmacValue, type SensitiveConfig } from './sensitive.ts';
import { loadVectors } from './test-vectors.ts';

const vector = loadVectors<{
  key_hex: string;
  values: { value: string; stored: string }[];
  apply: { config: SensitiveConfig; event: AuditEvent; stored: AuditEvent };
}>('sensitive.json');
const key = Buffer.from(vector.key_hex, 'hex');

describe('sensitive fields (frozen vector packages/audit-log/vectors/sensitive.json)', () => {
  it('stores each value of the vector as its HMAC', () => {
    for (const v of vector.values) assert.equal(hmacValue(key, v.value), v.stored, JSON.stringify(v.value));
  });

  it('hides exactly the marked and configured fields of the vector event', () => {
    const ev = structuredClone(vector.apply.event);
    assert.deepEqual(new SensitiveFields(key, vector.apply.config).apply(ev), vector.apply.stored);
  });
});
