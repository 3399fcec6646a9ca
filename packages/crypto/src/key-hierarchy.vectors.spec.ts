/**
 * The key hierarchy against the frozen vectors in ../vectors/key-hierarchy.json, computed by
 * ../vectors/generate.py (Python: AAD layouts and RFC 5869 HKDF written out, AES-256-GCM and
 * Ed25519 from pyca/cryptography, no keyshard code). Wrap nonces are random in keyshard, so each
 * blob names its nonce: sealing with it gives the frozen blob, and the frozen blob unwraps.
 * Format: ../VECTORS.md, "Key hierarchy".
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { sealAesGcm } from './aead.ts';
import { backupSigner } from './backup-file.ts';
import { vouchPublicKeyPem } from './join-vouch.ts';
import {
  deriveRootKey, deriveSubkey, kekAad, recordMacKeyAad, rootSigningKey, unwrapKek, unwrapRecordMacKey, unwrapVersion, versionAad,
  wrapKek, wrapRecordMacKey, wrapVersion,
} from './key-hierarchy.ts';
import { flipped, hex, loadVectors } from './test-vectors.ts';

interface Wrapped { aad_hex: string; nonce_hex: string; wrapped_hex: string }
const v = loadVectors<{
  root_hex: string;
  cluster_id: string;
  keks: (Wrapped & { epoch: number; kek_hex: string; wrapped_b64: string })[];
  versions: (Wrapped & { key_id: string; version: number; kek_epoch: number; material_hex: string })[];
  record_mac_key: Wrapped & { key_hex: string };
  subkeys: { purpose: string; salt_hex: string; length: number; key_hex: string }[];
  root_signing_keys: { purpose: string; seed_hex: string; public_spki_der_b64: string; public_key_pem: string }[];
}>('key-hierarchy.json');
const root = hex(v.root_hex);
const kekOf = (epoch: number) => hex(v.keks.find((k) => k.epoch === epoch)!.kek_hex);

describe('key hierarchy (frozen vectors packages/crypto/vectors/key-hierarchy.json)', () => {
  it('KEKs: AAD, the blob sealed under the root with the named nonce, and unwrapping it', () => {
    for (const k of v.keks) {
      assert.equal(kekAad(v.cluster_id, k.epoch).toString('hex'), k.aad_hex, `epoch ${k.epoch}`);
      assert.equal(sealAesGcm(root, hex(k.kek_hex), hex(k.aad_hex), hex(k.nonce_hex)).toString('hex'), k.wrapped_hex);
      assert.equal(Buffer.from(k.wrapped_b64, 'base64').toString('hex'), k.wrapped_hex, 'etcd holds the blob as base64');
      assert.deepEqual(unwrapKek(root, v.cluster_id, k.epoch, hex(k.wrapped_hex)), hex(k.kek_hex));
    }
  });

  it('key versions: AAD, the blob sealed under its epoch KEK, and unwrapping it', () => {
    for (const k of v.versions) {
      assert.equal(versionAad(v.cluster_id, k.key_id, k.version).toString('hex'), k.aad_hex, `${k.key_id} v${k.version}`);
      assert.equal(sealAesGcm(kekOf(k.kek_epoch), hex(k.material_hex), hex(k.aad_hex), hex(k.nonce_hex)).toString('hex'), k.wrapped_hex);
      assert.deepEqual(unwrapVersion(kekOf(k.kek_epoch), v.cluster_id, k.key_id, k.version, hex(k.wrapped_hex)), hex(k.material_hex));
    }
  });

  it('the record MAC key: AAD, the blob under the root, unwrapping it', () => {
    const r = v.record_mac_key;
    assert.equal(recordMacKeyAad(v.cluster_id).toString('hex'), r.aad_hex);
    assert.equal(sealAesGcm(root, hex(r.key_hex), hex(r.aad_hex), hex(r.nonce_hex)).toString('hex'), r.wrapped_hex);
    assert.deepEqual(unwrapRecordMacKey(root, v.cluster_id, hex(r.wrapped_hex)), hex(r.key_hex));
  });

  it('wrapKek, wrapVersion and wrapRecordMacKey are that seal with a fresh nonce: nonce || ciphertext || tag', () => {
    const resealed = (key: Buffer, blob: Buffer, plain: Buffer, aad: string) => sealAesGcm(key, plain, hex(aad), blob.subarray(0, 12));
    const [k] = v.keks as [(typeof v.keks)[0]];
    const kb = wrapKek(root, v.cluster_id, k.epoch, hex(k.kek_hex));
    assert.deepEqual(kb, resealed(root, kb, hex(k.kek_hex), k.aad_hex));
    for (const x of v.versions) {
      const vb = wrapVersion(kekOf(x.kek_epoch), v.cluster_id, x.key_id, x.version, hex(x.material_hex));
      assert.deepEqual(vb, resealed(kekOf(x.kek_epoch), vb, hex(x.material_hex), x.aad_hex));
    }
    const r = v.record_mac_key;
    const rb = wrapRecordMacKey(root, v.cluster_id, hex(r.key_hex));
    assert.deepEqual(rb, resealed(root, rb, hex(r.key_hex), r.aad_hex));
  });

  it('a frozen blob moved to another position, cluster or root, or modified, does not unwrap', () => {
    const [k1, k12] = v.keks as [(typeof v.keks)[0], (typeof v.keks)[0]];
    const [kv] = v.versions as [(typeof v.versions)[0]];
    const internal = { code: 'INTERNAL' };
    assert.throws(() => unwrapKek(root, v.cluster_id, k12.epoch, hex(k1.wrapped_hex)), internal, 'another epoch');
    assert.throws(() => unwrapKek(root, 'c-other', k1.epoch, hex(k1.wrapped_hex)), internal, 'another cluster');
    assert.throws(() => unwrapKek(Buffer.alloc(32, 7), v.cluster_id, k1.epoch, hex(k1.wrapped_hex)), internal, 'another root');
    assert.throws(() => unwrapKek(root, v.cluster_id, k1.epoch, flipped(hex(k1.wrapped_hex), 20)), internal, 'a modified byte');
    assert.throws(() => unwrapVersion(kekOf(kv.kek_epoch), v.cluster_id, kv.key_id, kv.version + 1, hex(kv.wrapped_hex)), internal, 'another version');
    assert.throws(() => unwrapRecordMacKey(root, v.cluster_id, hex(k1.wrapped_hex)), internal, 'a KEK blob is not the record MAC key');
  });

  it('HKDF-SHA256 subkeys of the root, per purpose and salt', () => {
    for (const s of v.subkeys) {
      const salt = hex(s.salt_hex);
      const derived = s.purpose === 'record-mac' ? deriveRootKey(root, salt.toString('utf8'), 'record-mac', s.length) : deriveSubkey(root, s.purpose, s.length, salt);
      assert.equal(derived.toString('hex'), s.key_hex, s.purpose);
    }
  });

  it('Ed25519 keys of the root: the seed is the purpose subkey; backup signer and vouch key agree', () => {
    for (const s of v.root_signing_keys) {
      assert.equal(deriveSubkey(root, s.purpose).toString('hex'), s.seed_hex, s.purpose);
      assert.equal(rootSigningKey(root, s.purpose).publicDer.toString('base64'), s.public_spki_der_b64, s.purpose);
      assert.equal(createPublicKey(s.public_key_pem).export({ type: 'spki', format: 'der' }).toString('base64'), s.public_spki_der_b64);
    }
    assert.equal(backupSigner(root), v.root_signing_keys.find((s) => s.purpose === 'backup-signing')!.public_spki_der_b64);
    assert.equal(vouchPublicKeyPem(root), v.root_signing_keys.find((s) => s.purpose === 'join-vouch')!.public_key_pem);
  });
});
