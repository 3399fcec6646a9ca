/**
 * Quorum-approved changes to the share set (brief, "Ceremonies"): reshare, rotate-root and
 * destroy-cluster, as QuorumOperations (quorum-ceremonies.ts). The coordinator is unsealed,
 * so the root key is in its memory; the custodians' HSM-signed approvals are what authorise.
 *
 * reshare (same root) and rotate-root (new root, every KEK re-wrapped under it) run the same
 * steps, each safe to crash after:
 *   1 reserve   `share-set-next` := the new generation (a retry never reuses a generation
 *               whose shares may sit half-delivered in some token)
 *   2 deliver   the new shares (generation g+1) to the new custodians, each encrypted to its
 *               HSM's enrollment key, with the new set's peers and threshold and the quorum's
 *               approvals (custodians holding the old set check them against their record of
 *               it; the peers must match the digests the ceremony binds)
 *   3 switch    one etcd transaction: manifest := the new set (and, for rotate-root, every KEK
 *               re-wrapped under the new root), only if the manifest and KEKs are unchanged
 *   4 retire    each old custodian destroys its old share, after checking the quorum's
 *               approvals against the old set it holds
 * Until 3 commits the old set is the one etcd names and every old share exists; from 3 on
 * the new set is complete. So a crash at any step leaves a cluster that unseals with the old
 * or the new set, never neither. A crash after 3 leaves old shares behind (harmless: etcd
 * names the new set; destroy-cluster removes every generation).
 *
 * destroy-cluster: every custodian destroys every generation of its shares on the quorum's
 * approvals; then every replica is sealed and the cluster's etcd state erased, compacted
 * and defragmented. Unsealing is impossible afterwards.
 */
import { randomBytes } from 'node:crypto';
import { manifestFingerprint, peersDigest, splitRootKey, validateQuorum, zeroize, type Ceremony, type ShareManifest } from '@keyshard/crypto';
import { clip, failedPrecondition, invalidArgument, KeyshardError } from '@keyshard/errors';
import type { Logger } from '@keyshard/config';
import type { Cluster } from './cluster.ts';
import { kekRecord, recordMacKeyRecord, type ClusterStore } from './cluster-store.ts';
import type { CustodianLink } from '../ceremonies/custodian-link.ts';
import type { Seal } from './seal.ts';
import type { QuorumOperation } from '../ceremonies/quorum-ceremonies.ts';

export interface ShareSetDeps {
  store: ClusterStore;
  cluster: Cluster;
  seal: Seal;
  links: CustodianLink[];
  log: Logger;
  sealCluster(): Promise<unknown>;
  /** Compacts etcd at the revision (main.ts: also defragments when etcd lets it, and logs when not). */
  compact(revision: string): Promise<unknown>;
  /** Fault injection for crash tests: SIGKILL this process when reaching the named step. */
  crashAt?: string;
}

type Approval = { custodianId: string; signature: Buffer };

async function crashPoint(d: ShareSetDeps, step: string): Promise<void> {
  if (d.crashAt !== step) return;
  d.log.warn({ step }, 'fault injection: SIGKILL');
  process.kill(process.pid, 'SIGKILL');
  await new Promise(() => {}); // never continue past the crash point
}

const generationOf = (m: ShareManifest) => m.generation ?? 1;

/** reshare and rotate-root: a new share set (same or new root), then the old one retired. */
export function shareSetOperation(d: ShareSetDeps, kind: 'reshare' | 'rotate-root'): QuorumOperation {
  return {
    async prepare(p) {
      d.seal.requireOpen();
      const { manifest } = d.cluster.requireInitialized();
      const current = manifest.custodians.map((c) => c.id);
      const ids = p.custodians ? String(p.custodians).split(',').map((s) => s.trim()).filter(Boolean) : current;
      const threshold = p.threshold ? Number(p.threshold) : manifest.threshold;
      if (!Number.isInteger(threshold)) throw invalidArgument('threshold must be a whole number');
      validateQuorum(ids.length, threshold);
      if (new Set(ids).size !== ids.length) throw invalidArgument('a custodian is listed twice');
      const unknown = ids.filter((id) => !d.links.some((l) => l.id === id));
      if (unknown.length) throw invalidArgument(`not configured custodians: ${clip(unknown.join(', '))}`);
      const reserved = await d.store.reservedGeneration();
      const next = Math.max(generationOf(manifest), reserved) + 1;
      // Bound in the ceremony: the set it retires and the approval keys of the set it makes.
      // Custodians refuse a delivery whose peers record is not the approved one.
      const links = ids.map((id) => d.links.find((l) => l.id === id)!);
      const identities = await d.cluster.identities(links);
      return {
        new_generation: String(next),
        custodians: ids.join(','),
        threshold: String(threshold),
        previous_custodians: current.join(','),
        previous_threshold: String(manifest.threshold),
        manifest_fingerprint: manifestFingerprint(manifest),
        previous_peers_digest: peersDigest(manifest.threshold, manifest.custodians),
        new_peers_digest: peersDigest(threshold, identities.map((id, i) => ({ id: ids[i]!, approvalPublicKeyPem: id.approval_public_key_pem }))),
      };
    },

    async execute(c, approvals) {
      const { record, manifest } = d.cluster.requireInitialized();
      if (manifestFingerprint(manifest) !== c.parameters.manifest_fingerprint) throw failedPrecondition('the share set changed since this ceremony began');
      const generation = Number(c.parameters.new_generation);
      const ids = c.parameters.custodians!.split(',');
      const links = ids.map((id) => d.links.find((l) => l.id === id)!);
      const manifestRev = (await d.store.manifest()).revision;
      // 1 reserve
      await d.store.reserveShareSet(generation);
      await crashPoint(d, `${kind}:reserved`);
      // 2 deliver
      // Checked against etcd's manifest: a root rotated through another replica must not be split again.
      const held = await d.cluster.currentRoot();
      const root = kind === 'reshare' ? held : randomBytes(32);
      if (kind !== 'reshare') zeroize(held);
      let split: Awaited<ReturnType<typeof splitRootKey>> | undefined;
      try {
        const identities = await d.cluster.identities(links);
        split = await splitRootKey(
          root,
          record.clusterId,
          identities.map((id, i) => ({ id: ids[i]!, enrollmentPublicKeyPem: id.enrollment_public_key_pem, approvalPublicKeyPem: id.approval_public_key_pem })),
          Number(c.parameters.threshold),
          generation,
        );
        if (peersDigest(split.manifest.threshold, split.manifest.custodians) !== c.parameters.new_peers_digest)
          throw failedPrecondition('a custodian of the new set presents another approval key than when this ceremony began; start a new one');
        // The quorum's approvals go with each share: a custodian holding the old set checks them against its record of it.
        await d.cluster.deliver(links, identities, split, { clusterId: record.clusterId, generation, replace: false, ceremonyId: c.id, approvals });
        await crashPoint(d, `${kind}:delivered`);
        // The record MAC key is re-wrapped too: it stays the same key, so every MAC'd record stays valid.
        const rewrapped =
          kind === 'rotate-root'
            ? {
                keks: d.seal.kekEpochs().map((epoch) => kekRecord(root, record.clusterId, epoch, d.seal.kek(epoch))),
                recordMacKey: recordMacKeyRecord(root, record.clusterId, d.seal.recordMacKey()),
              }
            : undefined;
        // 3 switch: the new set (and KEKs under the new root) in one transaction
        const newManifest = split.manifest;
        if (!(await d.store.switchShareSet(newManifest, manifestRev, rewrapped))) throw failedPrecondition('the share manifest changed during the ceremony; nothing was switched');
        d.cluster.manifest = newManifest;
        if (kind === 'rotate-root') d.seal.replaceRoot(Buffer.from(root));
        d.log.info({ ceremonyId: c.id, generation, custodians: ids }, `${kind}: new share set in use`);
      } finally {
        zeroize(root, ...(split?.shares ?? []));
      }
      await crashPoint(d, `${kind}:switched`);
      // 4 retire the old set
      const retired = await retire(d, record.clusterId, c, approvals, manifest.custodians.map((m) => m.id));
      await crashPoint(d, `${kind}:retired`);
      return { generation: String(generation), custodians: ids.join(','), threshold: c.parameters.threshold!, old_shares_destroyed: retired.join(',') };
    },
  };
}

/** Each custodian destroys what the ceremony names; returns who did. Failures are logged, not fatal. */
async function retire(d: ShareSetDeps, clusterId: string, c: Ceremony, approvals: Approval[], custodians: string[]): Promise<string[]> {
  const done: string[] = [];
  const failed: string[] = [];
  await Promise.all(
    custodians.map(async (id) => {
      const link = d.links.find((l) => l.id === id);
      try {
        if (!link) throw new Error('not configured');
        await link.destroyShare(clusterId, c.id, approvals);
        done.push(id);
      } catch (e) {
        failed.push(id);
        d.log.warn({ ceremonyId: c.id, custodian: id, err: (e as Error).message }, 'share not destroyed');
      }
    }),
  );
  if (failed.length && c.operation === 'destroy-cluster')
    throw new KeyshardError('UNAVAILABLE', `shares destroyed at ${done.sort().join(', ') || 'none'}; not at ${failed.sort().join(', ')}: run destroy-cluster again`);
  return done.sort();
}

/** destroy-cluster: every share of every generation destroyed, then the cluster's state erased. */
export function destroyClusterOperation(d: ShareSetDeps): QuorumOperation {
  return {
    async prepare() {
      const { record, manifest } = d.cluster.requireInitialized();
      return { cluster_id: record.clusterId, manifest_fingerprint: manifestFingerprint(manifest), custodians: d.links.map((l) => l.id).join(',') };
    },
    async execute(c, approvals) {
      const { record } = d.cluster.requireInitialized();
      const destroyed = await retire(d, record.clusterId, c, approvals, d.links.map((l) => l.id));
      await crashPoint(d, 'destroy-cluster:shares-destroyed');
      await d.sealCluster();
      // Everything of the cluster but this ceremony's record, in one transaction (ClusterStore.erase).
      await d.compact(await d.store.erase(c.id));
      await d.cluster.load();
      return { cluster_id: record.clusterId, shares_destroyed_at: destroyed.join(',') };
    },
  };
}
