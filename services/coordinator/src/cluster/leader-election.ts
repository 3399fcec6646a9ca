/**
 * Leader election on etcd (brief, "Coordination on etcd"): the one module that campaigns.
 *
 * Replicas campaign in etcd3's election `leader` of the cluster's namespace: each candidate's
 * key lives under its own lease, and the oldest (lowest create revision) leads. The elected
 * replica holds a Fence: its election key and the create revision it was elected with. A
 * write made as leader requires that key to still have that revision, so a deposed leader
 * (lease lost, process paused) cannot write.
 *
 * A campaign that fails (its lease lost, or etcd refusing it) is started again with backoff
 * (@keyshard/store/backoff), reset once a campaign has held its lease for a TTL or won: while
 * etcd fails fast, campaigning again at once would spin.
 */
import type { Namespace } from '@keyshard/store';
import { Backoff } from '@keyshard/store/backoff';
import type { Logger } from '@keyshard/config';
import type { Fence } from '../keys/keyring.ts';

export interface LeaderElectionOptions {
  /** This replica's id: what `currentLeader` answers while it leads. */
  candidate: string;
  ttlSeconds: number;
  log: Logger;
}

type Campaign = ReturnType<ReturnType<Namespace['election']>['campaign']>;

/** etcd3 keeps an election's candidates under `election/<name>/`. */
const ELECTION_PREFIX = 'election/';

export class LeaderElection {
  readonly #ns: Namespace;
  readonly #opts: LeaderElectionOptions;
  #campaign: Campaign | undefined;
  #fence: Fence | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #healthyTimer: NodeJS.Timeout | undefined;
  #backoff = new Backoff();
  #stopped = false;
  #onElected: ((fence: Fence) => void)[] = [];
  #onDeposed: (() => void)[] = [];

  constructor(ns: Namespace, opts: LeaderElectionOptions) {
    this.#ns = ns;
    this.#opts = opts;
  }

  /** The fence of this replica's leadership; undefined while it does not lead. */
  get fence(): Fence | undefined {
    return this.#fence;
  }

  get leading(): boolean {
    return this.#fence !== undefined;
  }

  /** Called each time this replica is elected. */
  onElected(listener: (fence: Fence) => void): void {
    this.#onElected.push(listener);
  }

  /** Called when a campaign ends (leadership lost, or the campaign failed): it is started again. */
  onDeposed(listener: () => void): void {
    this.#onDeposed.push(listener);
  }

  /** The elected replica's id (from etcd), '' if none or etcd cannot say. */
  async currentLeader(): Promise<string> {
    return (await this.#ns.election('leader', this.#opts.ttlSeconds).leader().catch(() => undefined)) ?? '';
  }

  start(): void {
    if (this.#stopped) return;
    const campaign = this.#ns.election('leader', this.#opts.ttlSeconds).campaign(this.#opts.candidate);
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
        this.#healthyTimer = setTimeout(healthy, this.#opts.ttlSeconds * 1000);
        this.#healthyTimer.unref();
      },
      () => {}, // reported through 'error'
    );
  }

  /** Stops campaigning and resigns if leading. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#healthyTimer);
    this.#fence = undefined;
    await this.#campaign?.resign().catch(() => {});
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
    for (const l of this.#onDeposed) l();
    if (this.#stopped) return;
    const f = this.#backoff.failed();
    const fields = { err: e.message, failures: f.failures, retryInMs: Math.round(f.delayMs) };
    if (wasLeading) this.#opts.log.warn(fields, 'leadership lost; campaigning again');
    else if (f.report) this.#opts.log.warn(fields, 'campaign failed; campaigning again with backoff');
    this.#retryTimer = setTimeout(() => this.start(), f.delayMs);
    this.#retryTimer.unref();
  }

  async #elected(campaign: Campaign): Promise<void> {
    try {
      const full = await campaign.getCampaignKey();
      const key = full.slice(full.indexOf(ELECTION_PREFIX)); // relative to this cluster's namespace
      const kv = (await this.#ns.get(key).exec()).kvs[0];
      if (!kv) throw new Error('election key vanished');
      if (this.#campaign !== campaign || this.#stopped) return; // lost meanwhile (another campaign runs), or stopping
      const createRevision = String(kv.create_revision);
      const fence: Fence = {
        key,
        createRevision,
        held: async () => String((await this.#ns.get(key).exec()).kvs[0]?.create_revision ?? '') === createRevision,
      };
      this.#fence = fence;
      this.#opts.log.info({ coordinatorId: this.#opts.candidate }, 'elected leader');
      for (const l of this.#onElected) l(fence);
    } catch (e) {
      this.#opts.log.error({ err: (e as Error).message }, 'could not take up leadership');
    }
  }
}
