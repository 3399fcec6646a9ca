/**
 * Record MACs against the frozen vectors in ../vectors/record-mac.json (made by an independent
 * implementation), and the properties the format promises.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { deriveRootKey, unwrapRecordMacKey, wrapKek, wrapRecordMacKey } from './key-hierarchy.ts';
import { recordMac, recordMacMessage, verifyRecordMac, withRecordMac } from './record-mac.ts';

interface Vectors {
  root_hex: string;
  cluster_id: string;
  derived: { purpose: 'record-mac'; length: number; key_hex: string }[];
  valid: { name: string; path: string; record: Record<string, unknown>; message_hex: string; mac: string }[];
  invalid: { name: string; path: string; stored: Record<string, unknown> }[];
}
const vectors = JSON.parse(readFileSync(new URL('../vectors/record-mac.json', import.meta.url), 'utf8')) as Vectors;
const root = Buffer.from(vectors.root_hex, 'hex');
const key = deriveRootKey(root, vectors.cluster_id, 'record-mac', 32);

test('deriveRootKey: HKDF-SHA256 (RFC 5869), salt = cluster id, info = keyshard/v1/<purpose>, as the vectors', () => {
  for (const d of vectors.derived) assert.equal(deriveRootKey(root, vectors.cluster_id, d.purpose, d.length).toString('hex'), d.key_hex, d.purpose);
  assert.notEqual(deriveRootKey(root, 'c_other', 'record-mac', 32).toString('hex'), key.toString('hex'), 'another cluster id gives another key');
  assert.throws(() => deriveRootKey(Buffer.alloc(16), vectors.cluster_id, 'record-mac', 32), /32 bytes/);
  assert.throws(() => deriveRootKey(root, '', 'record-mac', 32), /cluster id/);
});

for (const v of vectors.valid)
  test(`vector ${v.name}: message bytes and MAC; it verifies`, () => {
    assert.equal(recordMacMessage(v.path, v.record).toString('hex'), v.message_hex);
    assert.equal(recordMac(key, v.path, v.record), v.mac);
    assert.deepEqual(withRecordMac(key, v.path, v.record), { ...v.record, mac: v.mac });
    const check = verifyRecordMac(key, v.path, { ...v.record, mac: v.mac });
    assert.deepEqual(check, { ok: true, record: v.record }, 'verified, returned without its mac');
  });

for (const v of vectors.invalid)
  test(`vector ${v.name}: refused`, () => {
    const check = verifyRecordMac(key, v.path, v.stored);
    assert.equal(check.ok, false);
  });

test('member order and an existing mac member do not change the MAC; the record object is not modified', () => {
  const v = vectors.valid[0]!;
  const reversed = Object.fromEntries(Object.entries(v.record).reverse());
  assert.equal(recordMac(key, v.path, reversed), v.mac);
  assert.equal(recordMac(key, v.path, { ...v.record, mac: 'ff' }), v.mac);
  const rec = { epoch: 1 };
  withRecordMac(key, 'seal-epoch', rec);
  assert.deepEqual(rec, { epoch: 1 });
});

test('refusals name the kind of failure, never the expected MAC', () => {
  assert.deepEqual(verifyRecordMac(key, 'seal-epoch', { epoch: 7 }), { ok: false, reason: 'no MAC' });
  assert.deepEqual(verifyRecordMac(key, 'seal-epoch', { epoch: 7, mac: 'zz' }), { ok: false, reason: 'MAC mismatch' });
  assert.deepEqual(verifyRecordMac(key, 'seal-epoch', '7'), { ok: false, reason: 'not a JSON object' });
  assert.deepEqual(verifyRecordMac(key, 'seal-epoch', [7]), { ok: false, reason: 'not a JSON object' });
  assert.deepEqual(verifyRecordMac(key, 'seal-epoch', null), { ok: false, reason: 'not a JSON object' });
  assert.equal(verifyRecordMac(randomBytes(32), vectors.valid[2]!.path, { ...vectors.valid[2]!.record, mac: vectors.valid[2]!.mac }).ok, false, 'another key');
});

test('bad inputs at the boundary: key length, path', () => {
  assert.throws(() => recordMac(Buffer.alloc(31), 'seal-epoch', {}), /32 bytes/);
  assert.throws(() => recordMac(key, '', {}), /record path/);
  assert.throws(() => recordMac(key, '/keyshard/c/seal-epoch', {}), /record path/);
});

test('the record MAC key is wrapped under the root with its own AAD: not openable as a KEK, nor under another cluster id', () => {
  const wrapped = wrapRecordMacKey(root, vectors.cluster_id, key);
  assert.deepEqual(unwrapRecordMacKey(root, vectors.cluster_id, wrapped), key);
  assert.throws(() => unwrapRecordMacKey(root, 'c_other', wrapped), { code: 'INTERNAL' });
  assert.throws(() => unwrapRecordMacKey(randomBytes(32), vectors.cluster_id, wrapped), { code: 'INTERNAL' });
  assert.throws(() => unwrapRecordMacKey(root, vectors.cluster_id, wrapKek(root, vectors.cluster_id, 0, key)), { code: 'INTERNAL' }, 'a KEK blob is not a record MAC key');
});
