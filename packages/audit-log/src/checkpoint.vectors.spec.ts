/**
 * Signed checkpoints against the frozen vector vectors/checkpoint.json (VECTORS.md): the body
 * bytes, the key id and the Ed25519 signature (deterministic, RFC 8032 §5.1.6) are recomputed
 * from the fixed key and fields, and every field is shown to be covered by the signature.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { describe, it } from 'node:test';
import { checkpointBody, checkpointProblem, fromCheckpointMsg, keyIdOf, publicKeyFromPem, signCheckpoint, toCheckpointMsg, type SignedCheckpoint } from './checkpoint.ts';
import { checkpointLine } from './log-dir.ts';
import { loadVectors } from './test-vectors.ts';

const vector = loadVectors<{
  ed25519_seed_hex: string;
  public_key_spki_der_hex: string;
  public_key_pem: string;
  checkpoint: SignedCheckpoint;
  body: string;
  body_hex: string;
  stored_line: string;
}>('checkpoint.json');

// RFC 8410 §7: an Ed25519 private key in PKCS#8 is this DER prefix followed by the 32-byte seed.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, Buffer.from(vector.ed25519_seed_hex, 'hex')]), format: 'der', type: 'pkcs8' });
const publicKey = createPublicKey(privateKey);
const cp = vector.checkpoint;

describe('checkpoint (frozen vector packages/audit-log/vectors/checkpoint.json)', () => {
  it('derives the public key and key id of the vector from its seed', () => {
    assert.equal(publicKey.export({ type: 'spki', format: 'der' }).toString('hex'), vector.public_key_spki_der_hex);
    assert.equal(publicKey.export({ type: 'spki', format: 'pem' }), vector.public_key_pem);
    assert.equal(keyIdOf(publicKey), cp.key_id);
    assert.deepEqual(publicKeyFromPem(vector.public_key_pem).id, cp.key_id);
  });

  it('writes the body bytes, the signature and the stored line of the vector', () => {
    assert.equal(checkpointBody(cp).toString('hex'), vector.body_hex);
    assert.equal(checkpointBody(cp).toString('utf8'), vector.body);
    const signed = signCheckpoint(privateKey, cp.key_id, cp.tree_size, Buffer.from(cp.root_hash, 'hex'), new Date(cp.time));
    assert.deepEqual(signed, cp);
    assert.equal(checkpointLine(cp), vector.stored_line);
    assert.deepEqual(fromCheckpointMsg(toCheckpointMsg(cp)), cp);
  });

  it('verifies under the vector key, and not once any signed field, the signature or the key changes', () => {
    const keys = new Map([[cp.key_id, publicKeyFromPem(vector.public_key_pem).key]]);
    assert.equal(checkpointProblem(cp, keys), undefined);
    const otherRoot = `${cp.root_hash.slice(0, -1)}${cp.root_hash.endsWith('0') ? '1' : '0'}`;
    const sig = Buffer.from(cp.signature, 'base64');
    sig[0]! ^= 1;
    const changed: [string, SignedCheckpoint][] = [
      ['tree_size', { ...cp, tree_size: cp.tree_size + 1 }],
      ['root_hash', { ...cp, root_hash: otherRoot }],
      ['time', { ...cp, time: '2026-12-06T10:00:05.000Z' }],
      ['signature', { ...cp, signature: sig.toString('base64') }],
    ];
    for (const [what, c] of changed) assert.match(checkpointProblem(c, keys) ?? '', /does not verify/, what);
    assert.match(checkpointProblem({ ...cp, key_id: '0000000000000000' }, keys) ?? '', /no public key/, 'key id');
  });
});
