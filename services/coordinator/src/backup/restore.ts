/**
 * Restore: a backup into a fresh, uninitialized cluster, on a custodian quorum's word (the
 * recover ceremony). No `init` comes first: the backup's own share manifest says who holds
 * shares of its root key.
 *
 *   header ──► checks: format, cluster name (unless forced), target empty
 *     ──► recover ceremony (in memory: a dry run writes nothing) proposed to every configured
 *         custodian; each release is checked against the BACKUP's manifest (custodian listed,
 *         approval signature, commitment) ──► t accepted: combine, check KCV + manifest MAC
 *     ──► the file: signed by this root, every chunk authentic, every KEK and version unwraps
 *     ──► entries written (a claim on `cluster` first; the backup's cluster record last)
 *     ──► this replica opens its seal with the recovered root; the others join by policy
 *
 * Invariants: below t valid shares nothing is combined; a file that fails any check leaves
 * the target as empty as it was (written entries are removed); a dry run writes nothing to
 * etcd; every step is audited, fail closed.
 */
import { BackupParser, newCeremony, zeroize, type BackupHeader, type Ceremony } from '@keyshard/crypto';
import { KeyshardError, failedPrecondition, invalidArgument, isReason } from '@keyshard/errors';
import type { EtcdConfig } from '@keyshard/store';
import { checkRestorable, headerId } from './backup.ts';
import type { BackupStore } from './backup-store.ts';
import { runBackupCheck, type RestoreCounts } from './restore-writer.ts';
import type { ClusterRecord } from '../cluster/cluster-store.ts';
import { myEphemeralIn, recipientOf, shareKind, type ShareCeremonyDeps } from '../ceremonies/share-release.ts';
import { ceremonyFailures, runCeremony } from '../ceremonies/runner.ts';
import { requireTtl } from '../ceremonies/open.ts';

export interface RestoreDeps extends ShareCeremonyDeps {
  /** The restore's claim, commit and undo on the cluster record (backup-store.ts). */
  store: BackupStore;
  /** How the restore's writer thread connects to etcd (its own client). */
  etcd: EtcdConfig;
  clusterName: string;
}

export interface RestoreOptions {
  dryRun: boolean;
  forceClusterId: boolean;
  ttlSeconds?: number;
}

export interface RestoreSummary {
  cluster: string;
  clusterId: string;
  revision: string;
  entries: number;
  keys: number;
  versions: number;
  keks: number;
  dryRun: boolean;
  unsealed: boolean;
}

export type RestoreEvent =
  | { phase: 'ceremony'; ceremony: Ceremony }
  | { phase: 'send' }
  | { phase: 'writing'; done: number; total: number };

/** The header bytes at the start of a backup file (what the client sends first). */
export function readHeader(bytes: Buffer): BackupHeader {
  const parser = new BackupParser();
  for (const part of parser.push(bytes)) if (part.kind === 'header') return part.header;
  throw invalidArgument('the first message must hold the whole backup header');
}

export class Restores {
  #d: RestoreDeps;
  #busy = false;

  constructor(deps: RestoreDeps) {
    this.#d = deps;
  }

  /**
   * Runs one restore. `file()` is called once the quorum has approved and must yield the whole
   * backup file; `emit` reports progress. Only one restore runs at a time on a replica.
   */
  async run(
    header: BackupHeader,
    opts: RestoreOptions,
    initiator: string,
    file: () => AsyncIterable<Buffer>,
    emit: (e: RestoreEvent) => void,
    cancelled: () => boolean,
  ): Promise<RestoreSummary> {
    if (this.#busy) throw failedPrecondition('a restore is already running on this coordinator', { reason: 'CEREMONY_IN_PROGRESS' });
    this.#busy = true;
    try {
      checkRestorable(header, this.#d.clusterName, opts.forceClusterId);
      await this.#requireEmpty();
      const root = await this.#recover(header, opts, initiator, emit, cancelled);
      try {
        emit({ phase: 'send' });
        return await this.#apply(root, header, opts, initiator, file(), emit);
      } finally {
        zeroize(root);
      }
    } finally {
      this.#busy = false;
    }
  }

  async #requireEmpty(): Promise<void> {
    await this.#d.cluster.load();
    if (this.#d.cluster.record || this.#d.cluster.manifest)
      throw failedPrecondition(
        `cluster ${this.#d.clusterName} is ${this.#d.cluster.record?.state ?? 'initialized'}: a restore needs a fresh, uninitialized cluster (empty etcd)`,
        { reason: 'ALREADY_INITIALIZED' },
      );
  }

  /**
   * The recover ceremony, on the ceremony runner (ceremonies/runner.ts) as a share-releasing
   * ceremony checked against the BACKUP's manifest, recorded only in this call (a dry run writes
   * nothing to etcd): returns the root key reconstructed from a quorum of the backup's custodians.
   */
  async #recover(header: BackupHeader, opts: RestoreOptions, initiator: string, emit: (e: RestoreEvent) => void, cancelled: () => boolean): Promise<Buffer> {
    const { links, replica, audit, log, pollMs } = this.#d;
    const manifest = header.manifest;
    const ttl = requireTtl(opts.ttlSeconds || this.#d.ttlSeconds, this.#d.ttlSeconds);
    const c = newCeremony({
      operation: 'recover',
      parameters: {
        generation: String(manifest.generation ?? 1),
        backup: headerId(header),
        manifest_fingerprint: header.manifestFingerprint,
        revision: header.revision,
        source_cluster: header.cluster,
        target_cluster: this.#d.clusterName,
        dry_run: String(opts.dryRun),
      },
      clusterId: header.clusterId,
      initiator,
      ttlSeconds: ttl,
      threshold: manifest.threshold,
      // This replica's transport key (SO-enrolled in the backup's custodians' tokens) and a fresh ephemeral key.
      recipients: [recipientOf(replica)],
    });
    await audit.record({ operation: 'ceremony.recover.created', principal: initiator, ceremony_id: c.id, result: 'ok', details: c.parameters });
    emit({ phase: 'ceremony', ceremony: c });
    let root: Buffer | undefined;
    const kind = shareKind({
      manifest: () => manifest,
      replica,
      oaepHash: this.#d.oaepHash,
      reason: (m) => m.replace('the share manifest', "the backup's share manifest"),
      use: async (done, combined) => {
        try {
          await audit.record({ operation: 'ceremony.recover.completing', principal: initiator, ceremony_id: done.id, result: 'ok', details: { approved_by: done.approved_by.join(',') } });
        } catch (e) {
          zeroize(combined);
          throw e;
        }
        root = combined;
        return {};
      },
    });
    const shown = async (x: Ceremony) => emit({ phase: 'ceremony', ceremony: x });
    try {
      const outcome = await runCeremony(c, kind, {
        role: 'driver', links, audit, log, pollMs, refusalsFinal: true,
        records: { current: async (x) => x, progress: shown, final: shown },
        cancelled: () => (cancelled() ? 'the restoring client went away' : undefined),
      });
      if (outcome.error !== undefined) throw outcome.error;
      if (outcome.state === 'CEREMONY_STATE_COMPLETED' && root) return root;
      if (outcome.state === 'CEREMONY_STATE_CANCELLED') throw new KeyshardError('FAILED_PRECONDITION', 'restore cancelled', { reason: 'CANCELLED' });
      if (outcome.state === 'CEREMONY_STATE_EXPIRED') throw failedPrecondition(`recover ceremony ${c.id} expired before a quorum of the backup's custodians approved`, { reason: 'CEREMONY_EXPIRED', metadata: { ceremony_id: c.id } });
      const refused = c.failures.length ? ` (${c.failures.map((f) => `${f.custodian_id}: ${f.error_reason}: ${f.reason}`).join('; ')})` : '';
      throw failedPrecondition(`${c.error || 'the recover ceremony failed'} (the backup's manifest)${refused}`, {
        reason: isReason(c.error_reason) ? c.error_reason : 'QUORUM_NOT_MET',
        metadata: { ceremony_id: c.id, ...ceremonyFailures(c) },
      });
    } catch (e) {
      if (root) zeroize(root);
      throw e;
    } finally {
      replica.ephemeral.retire(myEphemeralIn(c, replica)); // forward secrecy: gone when the ceremony ends
    }
  }

  /** Checks (and unless a dry run writes) every entry; on any failure the target is emptied again. */
  async #apply(root: Buffer, approved: BackupHeader, opts: RestoreOptions, initiator: string, bytes: AsyncIterable<Buffer>, emit: (e: RestoreEvent) => void): Promise<RestoreSummary> {
    const { store, audit, log } = this.#d;
    const claim: ClusterRecord = { clusterId: approved.clusterId, state: 'restoring', kekEpoch: 0, createdAt: new Date().toISOString() };
    if (!opts.dryRun && !(await store.claim(claim))) throw failedPrecondition('the cluster was initialized or restored concurrently', { reason: 'ALREADY_INITIALIZED' });
    let counts: RestoreCounts = { entries: 0, keks: 0, versions: 0, keys: 0 };
    try {
      const written = await runBackupCheck(root, { headerId: headerId(approved) }, bytes, opts.dryRun ? undefined : { etcd: this.#d.etcd, clusterName: this.#d.clusterName, claim: JSON.stringify(claim) }, (done) =>
        emit({ phase: 'writing', done, total: approved.entries }),
      );
      counts = written.counts;
      const clusterRecord = written.clusterRecord;
      if (!opts.dryRun) {
        if (!clusterRecord) throw invalidArgument('the backup holds no cluster record', { reason: 'INVALID_BACKUP' });
        const rec = JSON.parse(clusterRecord.toString()) as ClusterRecord;
        if (rec.clusterId !== approved.clusterId || rec.state !== 'initialized') throw invalidArgument('the backup\'s cluster record does not match its header', { reason: 'INVALID_BACKUP' });
        await audit.record({ operation: 'restore.committing', principal: initiator, result: 'ok', details: { cluster_id: approved.clusterId, revision: approved.revision, entries: String(counts.entries) } });
        if (!(await store.commit(claim, clusterRecord))) throw failedPrecondition('the restore claim on the cluster record was lost');
      }
    } catch (e) {
      if (!(e instanceof KeyshardError) || e.code === 'INTERNAL') log.error({ err: (e as Error).message, cause: ((e as Error).cause as Error | undefined)?.message }, 'restore failed');
      if (!opts.dryRun) await store.undo(claim).catch((u: Error) => log.error({ err: u.message }, 'restore: could not remove the partial state'));
      await audit.record({ operation: 'restore.failed', principal: initiator, result: 'error', details: { reason: e instanceof KeyshardError ? e.message : 'internal error' } }).catch(() => {});
      throw e;
    }
    let unsealed = false;
    if (!opts.dryRun) {
      await this.#d.cluster.load();
      await this.#d.cluster.openSeal(Buffer.from(root), this.#d.seal.generation);
      unsealed = true;
    }
    await audit.record({
      operation: 'restore.completed', principal: initiator, result: 'ok',
      details: { cluster_id: approved.clusterId, revision: approved.revision, entries: String(counts.entries), dry_run: String(opts.dryRun) },
    });
    log.info({ clusterId: approved.clusterId, revision: approved.revision, entries: counts.entries, dryRun: opts.dryRun }, 'restore completed');
    return { cluster: approved.cluster, clusterId: approved.clusterId, revision: approved.revision, ...counts, dryRun: opts.dryRun, unsealed };
  }
}
