import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clearRandomPool, pooledRandomBytes } from './random.ts';

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

test('a pooled value has its own memory, not a slice of a shared pool; clearing the pool keeps values fresh', () => {
  const v = pooledRandomBytes(32);
  assert.equal(v.byteOffset, 0);
  assert.equal(v.buffer.byteLength, 32, 'key material shares no ArrayBuffer with other data');
  clearRandomPool();
  const after = pooledRandomBytes(32);
  assert.notDeepEqual(after, Buffer.alloc(32), 'the next value is fresh CSPRNG output, not the zeroed pool');
  assert.notDeepEqual(after, v);
});
