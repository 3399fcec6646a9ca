/**
 * The checks a recover ceremony makes on each custodian's release, against the BACKUP's
 * manifest (restore.ts → shareFromRelease), with real keys: a custodian outside the manifest,
 * a share that is not its own, and an approval signature that does not verify are refused,
 * each naming the custodian; the header checks refuse a backup of another cluster.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { combineShares, ephemeralRecipientKey, newCeremony, oaepEncrypt, splitRootKey, type BackupHeader } from '@keyshard/crypto';
import { shareFromRelease } from './unseal-ceremony.ts';
import { checkRestorable } from './backup.ts';
import type { ReleaseResponse } from './custodian-link.ts';

const approver = () => {
  const k = generateKeyPairSync('ed25519');
  return { pub: k.publicKey.export({ type: 'spki', format: 'pem' }).toString(), priv: k.privateKey };
};

test('a recover ceremony accepts only shares of the backup manifest, from their own custodians, with valid approvals', async () => {
  const ids = ['custodian-1', 'custodian-2', 'custodian-3'];
  const keys = Object.fromEntries([...ids, 'custodian-9'].map((id) => [id, approver()]));
  const root = randomBytes(32);
  const { manifest, shares } = await splitRootKey(root, 'c-1', ids.map((id) => ({ id, enrollmentPublicKeyPem: 'unused', approvalPublicKeyPem: keys[id]!.pub })), 2);
  const replica = { coordinatorId: 'coordinator-1', ...ephemeralRecipientKey() };
  const c = newCeremony({
    operation: 'recover', clusterId: 'c-1', initiator: 'admin', ttlSeconds: 60, threshold: 2,
    recipients: [{ coordinator_id: replica.coordinatorId, public_key_pem: replica.publicKeyPem }],
  });
  const release = (signer: string, share: Uint8Array): ReleaseResponse => ({
    ceremony_id: c.id,
    status: 'released',
    releases: [{ coordinator_id: replica.coordinatorId, wrapped_share: oaepEncrypt(replica.publicKeyPem, Buffer.from(share), 'sha1') }],
    approval_signature: sign(null, Buffer.from(c.hash, 'hex'), keys[signer]!.priv),
    reason: '',
    succession: null,
  });
  const accept = (id: string, res: ReleaseResponse) => shareFromRelease(c, manifest, id, res, replica, 'sha1');

  const got = [accept('custodian-1', release('custodian-1', shares[0]!)), accept('custodian-3', release('custodian-3', shares[2]!))];
  assert.deepEqual(await combineShares(manifest, [{ custodianId: 'custodian-1', share: got[0]! }, { custodianId: 'custodian-3', share: got[1]! }]), root);
  assert.throws(() => accept('custodian-9', release('custodian-9', shares[1]!)), /custodian custodian-9 is not in the share manifest/);
  assert.throws(() => accept('custodian-2', release('custodian-2', shares[0]!)), /share from custodian custodian-2 rejected/);
  assert.throws(() => accept('custodian-2', release('custodian-1', shares[1]!)), /approval signature of custodian custodian-2 does not verify/);
});

test('a backup of a cluster of another name is refused unless forced', () => {
  const header = { cluster: 'site-b', clusterId: 'c-b', manifest: { version: 1, clusterId: 'c-b', threshold: 2, createdAt: '', custodians: [], kcv: '', mac: '' } } as unknown as BackupHeader;
  header.manifestFingerprint = 'wrong';
  assert.throws(() => checkRestorable(header, 'site-a', false), /the backup is of cluster site-b \(c-b\), this is cluster site-a: pass --force-cluster-id/);
  assert.throws(() => checkRestorable(header, 'site-a', true), /manifest fingerprint does not match/);
});
