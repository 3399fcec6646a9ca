import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openAesGcm, sealAesGcm } from './aead.ts';

// The GCM specification's Test Case 16 (AES-256, 96-bit IV, with AAD), as used by NIST SP 800-38D validation.
const K = Buffer.from('feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308', 'hex');
const P = Buffer.from(
  'd9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39',
  'hex',
);
const A = Buffer.from('feedfacedeadbeeffeedfacedeadbeefabaddad2', 'hex');
const IV = Buffer.from('cafebabefacedbaddecaf888', 'hex');
const C = '522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662';
const T = '76fc6ece0f4e1768cddf8853bb2d551b';

test('AES-256-GCM matches the known-answer vector', () => {
  const sealed = sealAesGcm(K, P, A, IV);
  assert.equal(sealed.subarray(12, sealed.length - 16).toString('hex'), C);
  assert.equal(sealed.subarray(sealed.length - 16).toString('hex'), T);
  assert.deepEqual(openAesGcm(K, sealed, A), P);
});

test('any modified byte, AAD or key is refused with INVALID_ARGUMENT', () => {
  const sealed = sealAesGcm(K, P, A);
  for (const i of [0, 12, sealed.length - 1]) {
    const bad = Buffer.from(sealed);
    bad[i]! ^= 1;
    assert.throws(() => openAesGcm(K, bad, A), { code: 'INVALID_ARGUMENT' });
  }
  assert.throws(() => openAesGcm(K, sealed, Buffer.from('other')), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => openAesGcm(Buffer.alloc(32), sealed, A), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => openAesGcm(K, sealed.subarray(0, 20), A), /truncated/);
});
