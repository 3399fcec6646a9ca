/**
 * The background jobs only the leader runs (brief, "Coordination on etcd"; the election:
 * leader-election.ts).
 *
 * The elected replica sweeps for keys whose scheduled rotation is due and rotates them. Every
 * write of the sweep is fenced: the transaction also requires the leader's election key to
 * still have the create revision it was elected with, so a deposed leader (lease lost, process
 * paused) cannot write. Each rotation is also a compare-and-swap that re-checks the key is
 * still due, so a due rotation happens exactly once even across a failover mid-sweep. Each
 * scheduled rotation is audited before it runs. The leader also writes the scheduled backups
 * (config `backups`). Each sweep also deletes the request tokens older than their window
 * (keys/request-tokens.ts), fenced the same way.
 */
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import type { Keyring } from '../keys/keyring.ts';
import type { RequestTokens } from '../keys/request-tokens.ts';
import type { LeaderElection } from './leader-election.ts';
import type { Seal } from './seal.ts';
import { forEachConcurrent } from '../concurrency.ts';

/** Rotations a sweep runs at once: each is an audit record and one etcd transaction. */
const SWEEP_CONCURRENCY = 32;

export interface LeaderJobsOptions {
  coordinatorId: string;
  sweepSeconds: number;
  /** The request tokens whose expired records each sweep deletes. */
  requestTokens?: Pick<RequestTokens, 'sweep'>;
  /** Scheduled backups (config `backups`): what writes one, and how often. */
  backup?: { everySeconds: number; write: () => Promise<{ file: string; entries: number }> };
}

export class LeaderJobs {
  #timer: NodeJS.Timeout | undefined;
  #backupTimer: NodeJS.Timeout | undefined;
  #sweeping = false;
  #backingUp = false;

  constructor(
    private readonly election: LeaderElection,
    private readonly keyring: Pick<Keyring, 'warm' | 'due' | 'rotate'>,
    private readonly seal: Seal,
    private readonly audit: AuditRecorder,
    private readonly log: Logger,
    private readonly opts: LeaderJobsOptions,
  ) {}

  get leading(): boolean {
    return this.election.leading;
  }

  /** The elected replica's id (from etcd), '' if none or etcd cannot say. */
  currentLeader(): Promise<string> {
    return this.election.currentLeader();
  }

  /** Campaigns; while elected, sweeps every `sweepSeconds` and backs up every `backup.everySeconds`. */
  start(): void {
    this.election.onElected(() => {
      this.#timer = setInterval(() => void this.sweep(), this.opts.sweepSeconds * 1000);
      this.#timer.unref();
      if (this.opts.backup) {
        this.#backupTimer = setInterval(() => void this.backup(), this.opts.backup.everySeconds * 1000);
        this.#backupTimer.unref();
      }
    });
    this.election.onDeposed(() => this.#stopTimers());
    this.election.start();
  }

  /** Rotates every due key; returns how many were rotated. Only the unsealed leader does anything. */
  async sweep(now = Date.now()): Promise<number> {
    const fence = this.election.fence;
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
    }
    // Expired request tokens go even when a rotation failed (they would pile up while it keeps failing).
    try {
      const swept = await this.opts.requestTokens?.sweep(now, fence);
      if (swept) this.log.info({ swept }, 'expired request tokens deleted');
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'request token sweep stopped');
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
    if (!job || !this.election.leading || this.seal.sealed || this.#backingUp) return undefined;
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
    this.#stopTimers();
    await this.election.stop();
  }

  #stopTimers(): void {
    clearInterval(this.#timer);
    clearInterval(this.#backupTimer);
  }
}

