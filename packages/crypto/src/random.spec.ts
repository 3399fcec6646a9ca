import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pooledRandomBytes } from './random.ts';

test('pooled random values have the asked length, never repeat, and span pool refills', () => {
  const seen = new Set<string>();
  // 4 KiB pool / 16 bytes: 1,000 draws refill it about four times.
  for (let i = 0; i < 1000; i++) {
    const v = pooledRandomBytes(16);
    assert.equal(v.length, 16);
    const hex = v.toString('hex');
    assert.ok(!seen.has(hex), 'a value was handed out twice');
    seen.add(hex);
  }
  assert.equal(pooledRandomBytes(1024).length, 1024, 'larger requests bypass the pool');
  assert.notDeepEqual(pooledRandomBytes(32), Buffer.alloc(32));
});
