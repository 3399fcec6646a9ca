/**
 * Leadership and the background jobs only the leader runs (brief, "Coordination on etcd").
 *
 * Replicas campaign in an etcd election; the elected one sweeps for keys whose scheduled
 * rotation is due and rotates them. Every write of the sweep is fenced: the transaction also
 * requires the leader's election key to still have the create revision it was elected with,
 * so a deposed leader (lease lost, process paused) cannot write. Each rotation is also a
 * compare-and-swap that re-checks the key is still due, so a due rotation happens exactly
 * once even across a failover mid-sweep. Each scheduled rotation is audited before it runs.
 * The leader also writes the scheduled backups (config `backups`).
 *
 * A campaign that fails (its lease lost, or etcd refusing it) is started again with backoff
 * (@keyshard/store/backoff), reset once a campaign's lease is granted: while etcd fails fast,
 * campaigning again at once would spin.
 */
import type { Namespace } from '@keyshard/store';
import { Backoff } from '@keyshard/store/backoff';
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import type { Fence, Keyring } from '../keys/keyring.ts';
import type { Seal } from './seal.ts';
import { forEachConcurrent } from '../concurrency.ts';

/** Rotations a sweep runs at once: each is an audit record and one etcd transaction. */
const SWEEP_CONCURRENCY = 32;

export interface LeaderJobsOptions {
  coordinatorId: string;
  ttlSeconds: number;
  sweepSeconds: number;
  /** Scheduled backups (config `backups`): what writes one, and how often. */
  backup?: { everySeconds: number; write: () => Promise<{ file: string; entries: number }> };
}

type Campaign = ReturnType<ReturnType<Namespace['election']>['campaign']>;

export class LeaderJobs {
  #campaign: Campaign | undefined;
  #fence: Fence | undefined;
  #timer: NodeJS.Timeout | undefined;
  #backupTimer: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #healthyTimer: NodeJS.Timeout | undefined;
  #backoff = new Backoff();
  #sweeping = false;
  #backingUp = false;
  #stopped = false;

  constructor(
    private readonly ns: Namespace,
    private readonly keyring: Keyring,
    private readonly seal: Seal,
    private readonly audit: AuditRecorder,
    private readonly log: Logger,
    private readonly opts: LeaderJobsOptions,
  ) {}

  get leading(): boolean {
    return this.#fence !== undefined;
  }

  /** The elected replica's id (from etcd), '' if none or etcd cannot say. */
  async currentLeader(): Promise<string> {
    return (await this.ns.election('leader', this.opts.ttlSeconds).leader().catch(() => undefined)) ?? '';
  }

  start(): void {
    if (this.#stopped) return;
    const campaign = this.ns.election('leader', this.opts.ttlSeconds).campaign(this.opts.coordinatorId);
    this.#campaign = campaign;
    campaign.on('elected', () => void this.#elected(campaign));
    campaign.on('error', (e: Error) => this.#failed(campaign, e));
    // A campaign that has held its lease for a TTL (or won) shows etcd answers again: the next
    // failure starts a new streak. Not at the lease grant: a campaign whose later steps fail fast
    // would then retry at the shortest delay forever.
    const healthy = () => this.#campaign === campaign && this.#backoff.succeeded();
    campaign.once('elected', healthy);
    campaign.getCampaignKey().then(
      () => {
        this.#healthyTimer = setTimeout(healthy, this.opts.ttlSeconds * 1000);
        this.#healthyTimer.unref();
      },
      () => {}, // reported through 'error'
    );
  }

  /** Leadership lost, or the campaign could not start: campaign again after a backoff. */
  #failed(campaign: Campaign, e: Error): void {
    // A campaign reports its end more than once (its lease's loss, then its start failing):
    // reacting to each would double the campaigns every time.
    if (this.#campaign !== campaign) return;
    this.#campaign = undefined;
    clearTimeout(this.#healthyTimer);
    const wasLeading = this.#fence !== undefined;
    this.#fence = undefined;
    clearInterval(this.#timer);
    clearInterval(this.#backupTimer);
    if (this.#stopped) return;
    const f = this.#backoff.failed();
    const fields = { err: e.message, failures: f.failures, retryInMs: Math.round(f.delayMs) };
    if (wasLeading) this.log.warn(fields, 'leadership lost; campaigning again');
    else if (f.report) this.log.warn(fields, 'campaign failed; campaigning again with backoff');
    this.#retryTimer = setTimeout(() => this.start(), f.delayMs);
    this.#retryTimer.unref();
  }

  async #elected(campaign: Campaign): Promise<void> {
    try {
      const full = await campaign.getCampaignKey();
      const prefix = 'election/';
      const key = full.slice(full.indexOf(prefix)); // relative to this cluster's namespace
      const kv = (await this.ns.get(key).exec()).kvs[0];
      if (!kv) throw new Error('election key vanished');
      if (this.#campaign !== campaign || this.#stopped) return; // lost meanwhile (another campaign runs), or stopping
      const createRevision = String(kv.create_revision);
      this.#fence = {
        key,
        createRevision,
        held: async () => String((await this.ns.get(key).exec()).kvs[0]?.create_revision ?? '') === createRevision,
      };
      this.log.info({ coordinatorId: this.opts.coordinatorId }, 'elected leader');
      this.#timer = setInterval(() => void this.sweep(), this.opts.sweepSeconds * 1000);
      this.#timer.unref();
      if (this.opts.backup) {
        this.#backupTimer = setInterval(() => void this.backup(), this.opts.backup.everySeconds * 1000);
        this.#backupTimer.unref();
      }
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'could not take up leadership');
    }
  }

  /** Rotates every due key; returns how many were rotated. Only the unsealed leader does anything. */
  async sweep(now = Date.now()): Promise<number> {
    const fence = this.#fence;
    if (!fence || this.seal.sealed || this.#sweeping) return 0;
    this.#sweeping = true;
    let rotated = 0;
    let failed: Error | undefined;
    try {
      await this.keyring.warm(); // after a restart no call may have loaded the keys yet
      await forEachConcurrent(this.keyring.due(now), SWEEP_CONCURRENCY, async (k) => {
        if (failed) return; // fenced off, sealed or the sink is down: the next sweep tries again
        try {
          await this.audit.record({ operation: 'keys.rotation.scheduled', principal: this.opts.coordinatorId, key_id: k.id, result: 'ok' });
          const r = await this.keyring.rotate(k, { ifDueAt: now, fence });
          if (r) {
            rotated++;
            this.log.info({ keyId: k.id, version: r.primaryVersion }, 'scheduled rotation');
          }
        } catch (e) {
          failed ??= e as Error;
        }
      });
      if (failed) throw failed;
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'rotation sweep stopped');
    } finally {
      this.#sweeping = false;
    }
    return rotated;
  }

  /**
   * A scheduled backup, by the unsealed leader only; audited before it starts (fail closed).
   * Writes nothing to etcd, so it needs no fence; a deposed leader's last one is merely extra.
   */
  async backup(): Promise<string | undefined> {
    const job = this.opts.backup;
    if (!job || !this.#fence || this.seal.sealed || this.#backingUp) return undefined;
    this.#backingUp = true;
    try {
      await this.audit.record({ operation: 'backup.scheduled', principal: this.opts.coordinatorId, result: 'ok' });
      const { file, entries } = await job.write();
      this.log.info({ file, entries }, 'scheduled backup written');
      return file;
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'scheduled backup failed');
      return undefined;
    } finally {
      this.#backingUp = false;
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#healthyTimer);
    clearInterval(this.#timer);
    clearInterval(this.#backupTimer);
    this.#fence = undefined;
    await this.#campaign?.resign().catch(() => {});
  }
}

