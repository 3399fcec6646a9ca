/**
 * Witness cosignatures against the frozen vector vectors/cosignature.json (VECTORS.md §7): the
 * C2SP tlog-checkpoint note, the tlog-cosignature v1 signed message, key id, vkey and signature
 * line are recomputed from the fixed key and checkpoint (Ed25519 is deterministic, RFC 8032
 * §5.1.6), and every way of altering them is refused.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import type { SignedCheckpoint } from './checkpoint.ts';
import { checkpointNote, cosign, cosignerKeyId, parseVkey, verifyCosignature, verifyCosignedCheckpoint, vkeyOf, type CosignedCheckpoint } from './cosignature.ts';
import { loadVectors } from './test-vectors.ts';

const v = loadVectors<{
  ed25519_seed_hex: string;
  public_key_hex: string;
  name: string;
  timestamp: number;
  checkpoint: SignedCheckpoint;
  note: string;
  signed_message_hex: string;
  key_id_hex: string;
  vkey: string;
  cosignature: string;
}>('cosignature.json');
const sinkVector = loadVectors<{ public_key_pem: string }>('checkpoint.json');

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const witnessKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, Buffer.from(v.ed25519_seed_hex, 'hex')]), format: 'der', type: 'pkcs8' });
const sinkPub = createPublicKey(sinkVector.public_key_pem);
const sinkKeys = new Map([[v.checkpoint.key_id, sinkPub]]);

describe('witness cosignature (frozen vector packages/audit-log/vectors/cosignature.json)', () => {
  it('writes the note body, key id, vkey and signature line of the vector', () => {
    assert.equal(checkpointNote(v.checkpoint), v.note);
    assert.equal(cosignerKeyId(v.name, createPublicKey(witnessKey)).toString('hex'), v.key_id_hex);
    assert.equal(vkeyOf(v.name, createPublicKey(witnessKey)), v.vkey);
    assert.equal(cosign(witnessKey, v.name, v.note, v.timestamp), v.cosignature);
    assert.equal(Buffer.from(`cosignature/v1\ntime ${v.timestamp}\n${v.note}`).toString('hex'), v.signed_message_hex);
  });

  it('verifies the vector through its vkey, and the whole cosigned checkpoint', () => {
    const w = parseVkey(v.vkey);
    assert.deepEqual(verifyCosignature(v.cosignature, v.note, w), { timestamp: v.timestamp });
    const c: CosignedCheckpoint = { checkpoint: v.checkpoint, note: v.note, cosignatures: [v.cosignature] };
    const verdict = verifyCosignedCheckpoint(c, sinkKeys, [w], 1);
    assert.equal(verdict.problem, undefined);
    assert.deepEqual(verdict.witnesses, [{ name: v.name, timestamp: v.timestamp }]);
  });

  it('refuses an altered note, timestamp, signature, name or key', () => {
    const w = parseVkey(v.vkey);
    const altered = v.note.replace('\n4\n', '\n5\n');
    assert.deepEqual(verifyCosignature(v.cosignature, altered, w), { problem: `cosignature of ${v.name} does not verify` });
    const raw = Buffer.from(v.cosignature.split(' ')[2]!, 'base64');
    const ts = Buffer.from(raw);
    ts.writeBigUInt64BE(BigInt(v.timestamp + 1), 4);
    assert.ok('problem' in verifyCosignature(`— ${v.name} ${ts.toString('base64')}`, v.note, w)!);
    const sig = Buffer.from(raw);
    sig[20]! ^= 1;
    assert.ok('problem' in verifyCosignature(`— ${v.name} ${sig.toString('base64')}`, v.note, w)!);
    // Another name or another key id is not this witness's line at all.
    assert.equal(verifyCosignature(v.cosignature.replace('coordinator-1', 'coordinator-2'), v.note, w), undefined);
    const other = generateKeyPairSync('ed25519');
    const stranger = parseVkey(vkeyOf(v.name, other.publicKey));
    assert.equal(verifyCosignature(v.cosignature, v.note, stranger), undefined);
    // A vkey whose key id does not match its key, or of another type, is refused.
    assert.throws(() => parseVkey(v.vkey.replace(v.key_id_hex, '00000000')), /does not match/);
    assert.throws(() => parseVkey(v.vkey.replace('+BD1', '+BT1')), /not an Ed25519/);
    assert.throws(() => parseVkey('no-plus-signs'), /not a witness verifier key/);
  });

  it("parses vkeys whose base64 key holds '+' (signed-note: split at the first two '+' only)", () => {
    let withPlus = 0;
    for (let i = 0; i < 64; i++) {
      const { publicKey } = generateKeyPairSync('ed25519');
      const vkey = vkeyOf(v.name, publicKey);
      if (vkey.split('+').length > 3) withPlus++;
      assert.ok(parseVkey(vkey).publicKey.equals(publicKey), vkey);
    }
    assert.ok(withPlus > 0, "some of 64 random keys have a '+' in their base64 (before: refused as not a vkey)");
  });

  it('refuses a cosigned checkpoint below quorum, with a note not matching, or signed by an untrusted sink key', () => {
    const w = parseVkey(v.vkey);
    const c: CosignedCheckpoint = { checkpoint: v.checkpoint, note: v.note, cosignatures: [v.cosignature] };
    assert.match(verifyCosignedCheckpoint(c, sinkKeys, [w], 2).problem ?? '', /1 trusted witness\(es\), 2 required/);
    assert.match(verifyCosignedCheckpoint({ ...c, cosignatures: [] }, sinkKeys, [w], 1).problem ?? '', /0 trusted/);
    assert.match(verifyCosignedCheckpoint({ ...c, note: v.note.replace('\n4\n', '\n3\n') }, sinkKeys, [w], 1).problem ?? '', /note body does not match/);
    const planted = generateKeyPairSync('ed25519').publicKey;
    assert.match(verifyCosignedCheckpoint(c, new Map([[v.checkpoint.key_id, planted]]), [w], 1).problem ?? '', /sink signature/);
    assert.match(verifyCosignedCheckpoint({ ...c, checkpoint: { ...v.checkpoint, tree_size: 5 } }, sinkKeys, [w], 1).problem ?? '', /sink signature/);
  });
});
