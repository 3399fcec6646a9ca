import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { decryptWithVersion, encryptWithVersion, parseCiphertext } from './ciphertext.ts';
import { encodeContext } from './context.ts';

const material = randomBytes(32);
const msg = Buffer.from('attack at dawn');

test('ciphertext is self-describing: format, key id, key version', () => {
  const ct = encryptWithVersion(material, { keyId: 'k_abc', keyVersion: 7 }, msg, {});
  assert.equal(ct.subarray(0, 2).toString(), 'ks');
  assert.equal(ct[2], 1);
  const p = parseCiphertext(ct);
  assert.equal(p.keyId, 'k_abc');
  assert.equal(p.keyVersion, 7);
  assert.equal(p.sealed.length, 12 + msg.length + 16);
  assert.deepEqual(decryptWithVersion(material, p, {}), msg);
});

test('encryption context is bound as AAD and required to decrypt', () => {
  const ctx = { tenant: 'acme', purpose: 'billing' };
  const ct = encryptWithVersion(material, { keyId: 'k1', keyVersion: 1 }, msg, ctx);
  const p = parseCiphertext(ct);
  assert.deepEqual(decryptWithVersion(material, p, { purpose: 'billing', tenant: 'acme' }), msg, 'order does not matter');
  assert.throws(() => decryptWithVersion(material, p, {}), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => decryptWithVersion(material, p, { tenant: 'acme' }), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => decryptWithVersion(material, p, { ...ctx, tenant: 'evil' }), { code: 'INVALID_ARGUMENT' });
});

test('the header is authenticated: changing key id or version fails', () => {
  const ct = encryptWithVersion(material, { keyId: 'k1', keyVersion: 1 }, msg, {});
  const otherVersion = Buffer.from(ct);
  otherVersion.writeUInt32BE(2, 4 + 2);
  assert.throws(() => decryptWithVersion(material, parseCiphertext(otherVersion), {}), { code: 'INVALID_ARGUMENT' });
  const otherId = Buffer.from(ct);
  otherId[5] = '2'.charCodeAt(0);
  assert.throws(() => decryptWithVersion(material, parseCiphertext(otherId), {}), { code: 'INVALID_ARGUMENT' });
});

test('malformed and truncated ciphertexts are INVALID_ARGUMENT with a reason', () => {
  const ct = encryptWithVersion(material, { keyId: 'k1', keyVersion: 1 }, msg, {});
  assert.throws(() => parseCiphertext(Buffer.alloc(0)), /truncated/);
  assert.throws(() => parseCiphertext(Buffer.from('hello world, not a ciphertext')), /not a keyshard ciphertext/);
  assert.throws(() => parseCiphertext(ct.subarray(0, 20)), /truncated/);
  const badFormat = Buffer.from(ct);
  badFormat[2] = 9;
  assert.throws(() => parseCiphertext(badFormat), /unsupported ciphertext format/);
  const zeroVersion = Buffer.from(ct);
  zeroVersion.writeUInt32BE(0, 6);
  assert.throws(() => parseCiphertext(zeroVersion), /version 0/);
});

test('context encoding is injective', () => {
  assert.notDeepEqual(encodeContext({ a: 'bc' }), encodeContext({ ab: 'c' }));
  assert.notDeepEqual(encodeContext({}), encodeContext({ '': '' }));
  assert.deepEqual(encodeContext({ x: '1', y: '2' }), encodeContext({ y: '2', x: '1' }));
});
