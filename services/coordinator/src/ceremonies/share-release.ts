/**
 * Share-releasing ceremonies (unseal, join, recover) as a kind of the ceremony runner
 * (runner.ts): each accepted answer is this replica's share, opened from the custodian's release.
 *
 * A release reaches this replica doubly wrapped: the custodian's HSM wraps its share to the
 * replica's SO-enrolled transport key (RSA-OAEP, RFC 8017), and the custodian seals that with
 * HPKE (RFC 9180) to the ephemeral X25519 key the ceremony names for the replica, bound to the
 * ceremony hash, the coordinator and the custodian (@keyshard/crypto hpke.ts; transport-key.ts).
 *
 * Invariants: an answer counts only if the custodian is in the manifest, its approval signature
 * over the ceremony hash verifies with the manifest's key, the release opens under both keys and
 * the share passes checkShare (registered x, x ≠ 0, commitment); a share exists in plaintext only
 * between that check and the combine, then is zeroized (the runner disposes of it).
 */
import type { KeyObject } from 'node:crypto';
import {
  approvalKeyOf, checkShare, combineShares, oaepDecrypt, openFromEphemeral, verifyApproval, zeroize,
  type Ceremony, type OaepHash, type ShareManifest, type ShareRejected,
} from '@keyshard/crypto';
import { KeyshardError } from '@keyshard/errors';
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import type { Cluster } from '../cluster/cluster.ts';
import type { Seal } from '../cluster/seal.ts';
import type { CustodianLink, ReleaseResponse } from './custodian-link.ts';
import type { EphemeralKeys } from './transport-key.ts';
import type { Accepted, CeremonyKind } from './runner.ts';

/** This replica's keys: its long-term transport key pair and its per-ceremony ephemeral keys. */
export interface ReplicaKey {
  coordinatorId: string;
  /** Transport public key (SPKI PEM): what custodians' SOs enroll, and ceremonies name. */
  publicKeyPem: string;
  privateKey: KeyObject;
  ephemeral: EphemeralKeys;
}

/** This replica as a ceremony recipient, with its current ephemeral key. */
export const recipientOf = (replica: ReplicaKey) => ({
  coordinator_id: replica.coordinatorId,
  public_key_pem: replica.publicKeyPem,
  ephemeral_public_key_pem: replica.ephemeral.currentPem,
});

/** The ephemeral key `c` names for this replica (to retire once `c` ends here). */
export const myEphemeralIn = (c: Ceremony, replica: ReplicaKey) =>
  c.recipients.find((r) => r.coordinator_id === replica.coordinatorId && r.public_key_pem === replica.publicKeyPem)?.ephemeral_public_key_pem;

/**
 * The share a custodian released to `replica` in ceremony `c`, checked against `manifest` (see
 * the header). Throws naming the custodian otherwise. The caller zeroizes the share.
 */
export async function shareFromRelease(c: Ceremony, manifest: ShareManifest, custodianId: string, res: ReleaseResponse, replica: ReplicaKey, oaepHash: OaepHash): Promise<Uint8Array> {
  const entry = manifest.custodians.find((m) => m.id === custodianId);
  if (!entry) throw new KeyshardError('FAILED_PRECONDITION', `custodian ${custodianId} is not in the share manifest`);
  if (!verifyApproval(c, approvalKeyOf(manifest.clusterId, entry, res.succession), res.approval_signature))
    throw new KeyshardError('FAILED_PRECONDITION', `approval signature of custodian ${custodianId} does not verify`);
  const mine = res.releases.find((r) => r.coordinator_id === replica.coordinatorId);
  if (!mine) throw new KeyshardError('FAILED_PRECONDITION', `custodian ${custodianId} released no share for this replica`);
  const ephemeral = replica.ephemeral.get(myEphemeralIn(c, replica) ?? '');
  if (!ephemeral) throw new KeyshardError('FAILED_PRECONDITION', `this replica no longer holds the ephemeral key ceremony ${c.id} named (it ended here)`);
  const wrapped = await openFromEphemeral(ephemeral, Buffer.from(mine.wrapped_share), { ceremonyHash: c.hash, coordinatorId: replica.coordinatorId, custodianId });
  let share: Buffer;
  try {
    share = oaepDecrypt(replica.privateKey, wrapped, oaepHash);
  } finally {
    zeroize(wrapped);
  }
  try {
    checkShare(manifest, custodianId, share);
  } catch (e) {
    zeroize(share);
    throw e as ShareRejected;
  }
  return share;
}

/** What a replica running share-releasing ceremonies (unseal, join, recover) is wired with. */
export interface ShareCeremonyDeps {
  cluster: Cluster;
  seal: Seal;
  links: CustodianLink[];
  replica: ReplicaKey;
  audit: AuditRecorder;
  log: Logger;
  oaepHash: OaepHash;
  /** The longest lifetime a ceremony may be given. */
  ttlSeconds: number;
  pollMs: number;
}

export interface ShareKindOptions {
  manifest: () => ShareManifest;
  replica: ReplicaKey;
  oaepHash: OaepHash;
  /** Details on the share_accepted / share_rejected audit events. */
  details?: Record<string, string>;
  /** Rewrites a rejection reason (a restore names "the backup's" manifest). */
  reason?: (message: string) => string;
  /** What the combined root key is for (open the seal, restore); it takes ownership of `root`. Returns completed-event details. */
  use(c: Ceremony, root: Buffer, accepted: Accepted<Uint8Array>[]): Promise<Record<string, string>>;
}

/** The share-releasing kind: accept = shareFromRelease; complete = combine (KCV, manifest MAC) and `use`. */
export function shareKind(o: ShareKindOptions): CeremonyKind<Uint8Array> {
  return {
    events: { accepted: 'share_accepted', rejected: 'share_rejected' },
    unit: 'valid shares',
    details: o.details,
    async accept(c, custodianId, res) {
      try {
        return await shareFromRelease(c, o.manifest(), custodianId, res, o.replica, o.oaepHash);
      } catch (e) {
        if (e instanceof KeyshardError && o.reason) throw new KeyshardError(e.code, o.reason(e.message), { reason: e.reason, metadata: e.metadata });
        throw e;
      }
    },
    async complete(c, accepted) {
      const root = await combineShares(o.manifest(), accepted.map((a) => ({ custodianId: a.custodianId, share: a.value })));
      return o.use(c, root, accepted);
    },
    dispose: (shares) => zeroize(...shares),
  };
}
