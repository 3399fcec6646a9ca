/**
 * The checks a recover ceremony makes on each custodian's release, against the BACKUP's
 * manifest (restore.ts → shareFromRelease), with real keys: a custodian outside the manifest,
 * a share that is not its own, and an approval signature that does not verify are refused,
 * each naming the custodian; a release sealed for another ceremony or coordinator, or opened
 * after the ceremony's ephemeral key was retired, is refused; the header checks refuse a backup
 * of another cluster.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { combineShares, ephemeralRecipientKey, newCeremony, oaepEncrypt, sealToEphemeral, splitRootKey, type BackupHeader } from '@keyshard/crypto';
import { myEphemeralIn, recipientOf, shareFromRelease } from '../ceremonies/share-release.ts';
import { EphemeralKeys } from '../ceremonies/transport-key.ts';
import { checkRestorable } from './backup.ts';
import type { ReleaseResponse } from '../ceremonies/custodian-link.ts';

const approver = () => {
  const k = generateKeyPairSync('ed25519');
  return { pub: k.publicKey.export({ type: 'spki', format: 'pem' }).toString(), priv: k.privateKey };
};

test('a recover ceremony accepts only shares of the backup manifest, from their own custodians, with valid approvals', async () => {
  const ids = ['custodian-1', 'custodian-2', 'custodian-3'];
  const keys = Object.fromEntries([...ids, 'custodian-9'].map((id) => [id, approver()]));
  const root = randomBytes(32);
  const { manifest, shares } = await splitRootKey(root, 'c-1', ids.map((id) => ({ id, enrollmentPublicKeyPem: 'unused', approvalPublicKeyPem: keys[id]!.pub })), 2);
  // The transport key pair (RSA; what custodian SOs enroll) and the per-ceremony ephemeral keys.
  const replica = { coordinatorId: 'coordinator-1', ...ephemeralRecipientKey(), ephemeral: new EphemeralKeys() };
  const c = newCeremony({ operation: 'recover', clusterId: 'c-1', initiator: 'admin', ttlSeconds: 60, threshold: 2, recipients: [recipientOf(replica)] });
  // What a custodian sends: the HSM's RSA-OAEP wrap to the transport key, sealed (HPKE) to the ephemeral key.
  const release = async (signer: string, share: Uint8Array, binding: { ceremonyHash?: string; coordinatorId?: string; custodianId?: string } = {}): Promise<ReleaseResponse> => ({
    ceremony_id: c.id,
    status: 'released',
    releases: [{
      coordinator_id: replica.coordinatorId,
      wrapped_share: await sealToEphemeral(c.recipients[0]!.ephemeral_public_key_pem, oaepEncrypt(replica.publicKeyPem, Buffer.from(share), 'sha1'), {
        ceremonyHash: c.hash, coordinatorId: replica.coordinatorId, custodianId: signer, ...binding,
      }),
    }],
    approval_signature: sign(null, Buffer.from(c.hash, 'hex'), keys[signer]!.priv),
    reason: '',
    succession: null,
  });
  const accept = async (id: string, res: Promise<ReleaseResponse>) => shareFromRelease(c, manifest, id, await res, replica, 'sha1');

  const got = [await accept('custodian-1', release('custodian-1', shares[0]!)), await accept('custodian-3', release('custodian-3', shares[2]!))];
  assert.deepEqual(await combineShares(manifest, [{ custodianId: 'custodian-1', share: got[0]! }, { custodianId: 'custodian-3', share: got[1]! }]), root);
  await assert.rejects(accept('custodian-9', release('custodian-9', shares[1]!)), /custodian custodian-9 is not in the share manifest/);
  await assert.rejects(accept('custodian-2', release('custodian-2', shares[0]!)), /share from custodian custodian-2 rejected/);
  await assert.rejects(accept('custodian-2', release('custodian-1', shares[1]!)), /approval signature of custodian custodian-2 does not verify/);
  // Sealed for another ceremony, another coordinator, or by another custodian: does not open.
  await assert.rejects(accept('custodian-2', release('custodian-2', shares[1]!, { ceremonyHash: 'f'.repeat(64) })), /does not open/);
  await assert.rejects(accept('custodian-2', release('custodian-2', shares[1]!, { coordinatorId: 'coordinator-2' })), /does not open/);
  await assert.rejects(accept('custodian-2', release('custodian-1', shares[1]!, { custodianId: 'custodian-1' })), /approval signature/);
  // Once the ceremony ended here its ephemeral key is gone: a captured release opens no more.
  const captured = release('custodian-2', shares[1]!);
  assert.ok(await accept('custodian-2', captured));
  replica.ephemeral.retire(myEphemeralIn(c, replica));
  assert.notEqual(replica.ephemeral.currentPem, c.recipients[0]!.ephemeral_public_key_pem, 'a new ephemeral key for the next ceremony');
  await assert.rejects(accept('custodian-2', captured), /no longer holds the ephemeral key/);
});

test('a backup of a cluster of another name is refused unless forced', () => {
  const header = { cluster: 'site-b', clusterId: 'c-b', manifest: { version: 1, clusterId: 'c-b', threshold: 2, createdAt: '', custodians: [], kcv: '', mac: '' } } as unknown as BackupHeader;
  header.manifestFingerprint = 'wrong';
  assert.throws(() => checkRestorable(header, 'site-a', false), /the backup is of cluster site-b \(c-b\), this is cluster site-a: pass --force-cluster-id/);
  assert.throws(() => checkRestorable(header, 'site-a', true), /manifest fingerprint does not match/);
});
