/**
 * Canonical JSON against the frozen vectors in ../vectors/canonical-json.json, computed by
 * ../vectors/generate.py (ECMAScript JSON.stringify and the member sort written out in Python,
 * no keyshard code). Format: ../VECTORS.md, "Canonical JSON".
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { canonicalJson } from './canonical-json.ts';
import { loadVectors } from './test-vectors.ts';

const vectors = loadVectors<{ cases: { name: string; value: unknown; canonical: string; sha256: string }[] }>('canonical-json.json');

for (const v of vectors.cases)
  test(`canonical JSON vector: ${v.name}`, () => {
    const text = canonicalJson(v.value);
    assert.equal(text, v.canonical);
    assert.equal(createHash('sha256').update(text).digest('hex'), v.sha256, 'the hashed bytes are the UTF-8 of the text');
    assert.equal(canonicalJson(JSON.parse(text)), text, 'canonical JSON is a fixed point');
  });

test('canonical JSON: undefined members are dropped; non-JSON values are refused', () => {
  assert.equal(canonicalJson({ b: undefined, a: 1 }), '{"a":1}');
  for (const bad of [NaN, Infinity, -Infinity, [undefined], () => 1, Symbol('s'), 1n])
    assert.throws(() => canonicalJson(bad), { code: 'INVALID_ARGUMENT' }, String(typeof bad));
});
