/**
 * A replicated audit log: N (odd) sink replicas, one leader that sequences every Append, an
 * event acknowledged once a majority holds it durably, and every replica's Merkle log the same
 * bytes. The consensus is Raft (Ongaro & Ousterhout, "In Search of an Understandable Consensus
 * Algorithm", 2014), specialised to this log; docs: services/audit-sink/REPLICATION.md.
 *
 * Terms: each replica's Raft log = its audit log (committed records only, never cut) followed
 * by at most one uncommitted batch, its `pending` tail (store.ts). The leader has at most one
 * batch in flight (the "round"): what producers sent while the previous round ran forms the
 * next one, like the single sink's group commit.
 *
 * Round (leader, term T): records [C, E) after its log of size C → pending (fsync) here and
 * Replicate(T, start C, root(C), leader's checkpoint at C, records) to every follower; a
 * follower whose log has size C and the same root stores them as its pending (fsync) and says
 * ok. With a majority (the leader included) durable, the batch is committed: the leader appends
 * it to its log (fsync, checkpoint signed over the new size by its own key) and acknowledges
 * the producers. Followers learn the commit from the next Replicate (start = the new C) and
 * append their pending then: a follower appends only a pending of the leader's current term,
 * which is on the leader's log (Raft §5.3).
 *
 * Why a signed checkpoint is never contradicted: a replica signs checkpoints over its audit
 * log only, and a record reaches an audit log only once committed (majority durable in its
 * term, §5.4.2) — or, during catch-up, copied from a leader's audit log after checking the
 * leader's signed checkpoint. Raft's Leader Completeness (§5.4.1, §5.4.3): a committed batch is
 * in the log of every later leader, because a candidate needs the vote of a majority, one of
 * whom holds the batch and refuses a candidate whose log is less up to date: compared by
 * (term of the last batch, log size) (§5.4.1). So no leader ever proposes other records at a
 * committed index, every audit log is a prefix of one committed sequence, and an uncommitted
 * pending tail that loses (a leader that died before its majority) is replaced — it was never
 * in any audit log, never acknowledged, never signed.
 *
 * Up-to-date check: a batch re-proposed by a new leader (its own pending from an older term)
 * is re-stamped with the new term; a replica's last term is its pending's term, else
 * `appliedTerm`, the term of the batch its last record came in (store.ts). A follower that
 * took committed records by catch-up takes the leader's appliedTerm only when it reached the
 * leader's commit (its log is then the leader's log); before, it keeps its older term, which
 * only makes it less up to date.
 *
 * Catch-up: a follower whose log is shorter than the leader's commit answers with its size;
 * the leader sends it the committed records from there (CatchUp), with the root at the start
 * (the follower checks it equals its own: its log is a prefix of the leader's) and at the end,
 * and, on the last chunk, the leader's signed checkpoint, which the follower verifies under
 * the leader's key and against its own root before it serves reads (`inSync`).
 *
 * Leadership: election timeout randomized in [electionMs, 2·electionMs) (§5.2); a leader that
 * has not heard from a majority within electionMs steps down (check quorum, Ongaro's thesis
 * §6.2), so a partitioned leader stops taking appends and producers move on.
 */
import type { KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Logger, z } from '@keyshard/config';
import { KeyshardError, invalidArgument, permissionDenied, quote } from '@keyshard/errors';
import { checkpointProblem, encodeEntry, encodeRecords, type EncodedEntry, type LogEvent, type SignedCheckpoint } from '@keyshard/audit-log';
import { expectServer, makeClient, principalOf, toServiceError, type TlsMaterial } from '@keyshard/rpc';
import { encodeEvents, splitRecords, type AuditLog, type Receipt, type VerifiedRecord } from '../audit-log.ts';
import { ReplicaStore, type PendingBatch } from './store.ts';
import {
  ReplicaClient,
  catchUpRequest,
  catchUpResponse,
  decodeFrame,
  encodeFrame,
  replicaServiceDefinition,
  replicateRequest,
  replicateResponse,
  voteRequest,
  voteResponse,
  type CatchUpRequest,
  type CatchUpResponse,
  type Frame,
  type ReplicaMethod,
  type ReplicateRequest,
  type ReplicateResponse,
  type VoteRequest,
  type VoteResponse,
} from './wire.ts';

export interface ReplicaPeer {
  /** Its certificate CN (the principal it is known by). */
  id: string;
  address: string;
  /** Its checkpoint public key. */
  publicKey: KeyObject;
}

export interface ReplicaOptions {
  /** This replica's id (its certificate CN). */
  self: string;
  /** Every replica, this one included; an odd number. */
  replicas: readonly ReplicaPeer[];
  log: AuditLog;
  /** Opened on the log's dataDir (ReplicaStore.open). */
  store: ReplicaStore;
  tls: TlsMaterial;
  logger: Logger;
  electionMs?: number;
  heartbeatMs?: number;
  /** Called when the role or the known leader changes. */
  onRole?: (role: Role, leader: string | undefined) => void;
  /** Called once when the log cannot be reconciled with the leader's (never expected: tampering or a bug); the replica stops taking part. */
  onDiverged?: (reason: string) => void;
}

export type Role = 'follower' | 'candidate' | 'leader';

interface Group {
  events: readonly LogEvent[];
  entries: EncodedEntry[];
  resolve: (r: Receipt) => void;
  reject: (e: unknown) => void;
}

interface Round {
  term: number;
  start: number;
  end: number;
  lines: Buffer;
  acks: Set<string>;
  committed: () => void;
}

interface PeerState {
  peer: ReplicaPeer;
  client: grpc.Client;
  /** The follower's log size when it said it lacks committed records (catch-up from there). */
  behind: number | undefined;
  lastContact: number;
  /** When the last Replicate was sent to it (heartbeats go out when nothing else did for heartbeatMs). */
  lastSent: number;
  /** The round it acknowledged holding: not sent again (it learns the commit from the next message). */
  acked: Round | undefined;
}

const ROUND_MAX_BYTES = 4 * 1024 * 1024;
const CATCH_UP_MAX_BYTES = 4 * 1024 * 1024;
const EMPTY = Buffer.alloc(0);

export class Replica {
  private readonly log: AuditLog;
  private readonly store: ReplicaStore;
  private readonly electionMs: number;
  private readonly heartbeatMs: number;
  private readonly majority: number;
  private readonly peers = new Map<string, PeerState>();
  private readonly keyOf = new Map<string, KeyObject>();
  private term: number;
  private votedFor: string | undefined;
  private appliedTerm: number;
  private pending: PendingBatch | undefined;
  /** What was already verified of a pending batch's lines (at receipt, or the leader's own encoding): not verified again when appended. */
  private readonly verifiedOf = new WeakMap<PendingBatch, readonly VerifiedRecord[]>();
  private roleNow: Role = 'follower';
  private leader: string | undefined;
  private synced = false;
  private leaderContact = 0; // when a leader of the current term was last heard (ms)
  private lastCheckedCheckpoint: string | undefined; // leader and checkpoint whose signature verified last
  private closed = false;
  private diverged: string | undefined;
  private electionTimer: NodeJS.Timeout | undefined;
  private quorumTimer: NodeJS.Timeout | undefined;
  private queue: Group[] = [];
  private round: Round | undefined;
  private waiters: (() => void)[] = [];
  private lock: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: ReplicaOptions) {
    const n = opts.replicas.length;
    if (n % 2 !== 1) throw new Error(`an odd number of audit sink replicas is needed, not ${n}`);
    if (!opts.replicas.some((r) => r.id === opts.self)) throw new Error(`this replica (${opts.self}) is not in the replica list`);
    this.majority = Math.floor(n / 2) + 1;
    this.log = opts.log;
    this.store = opts.store;
    this.electionMs = opts.electionMs ?? 1000;
    this.heartbeatMs = opts.heartbeatMs ?? 100;
    this.term = opts.store.state.currentTerm;
    this.votedFor = opts.store.state.votedFor;
    this.appliedTerm = opts.store.state.appliedTerm;
    this.pending = opts.store.pending;
    this.normalizePending();
    for (const r of opts.replicas) {
      this.keyOf.set(r.id, r.publicKey);
      if (r.id === opts.self) continue;
      const client = makeClient<grpc.Client>(ReplicaClient, r.address, opts.tls, { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000 }, expectServer(`audit sink replica ${r.id}`, r.id));
      this.peers.set(r.id, { peer: r, client, behind: undefined, lastContact: 0, lastSent: 0, acked: undefined });
    }
  }

  /** Starts the election timer (a lone replica elects itself at once). */
  start(): void {
    if (this.peers.size === 0) void this.startElection();
    else this.resetElectionTimer();
  }

  get role(): Role {
    return this.roleNow;
  }

  get currentTerm(): number {
    return this.term;
  }

  /** The leader's id as far as this replica knows. */
  get leaderId(): string | undefined {
    return this.roleNow === 'leader' ? this.opts.self : this.leader;
  }

  get leaderAddress(): string | undefined {
    const id = this.leaderId;
    return id ? this.opts.replicas.find((r) => r.id === id)?.address : undefined;
  }

  /** Whether reads may be served: the leader, or a follower that proved its log a prefix of the leader's since it started. */
  get inSync(): boolean {
    return !this.diverged && (this.roleNow === 'leader' || this.synced);
  }

  /** Why this replica stopped taking part (its log differs from the leader's), if it did. */
  get divergedReason(): string | undefined {
    return this.diverged;
  }

  /** The service to add to the sink's gRPC server; callers must be configured replicas. */
  get service(): { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation } {
    const handle =
      <H, R>(schema: z.ZodType<H>, fn: (f: Frame<H>) => Promise<R>) =>
      (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        void (async () => {
          const who = principalOf(call);
          if (!who || !this.keyOf.has(who) || who === this.opts.self) throw permissionDenied(`${who ?? 'an unauthenticated caller'} is not an audit sink replica`);
          let frame: Frame<H>;
          try {
            frame = decodeFrame(schema, call.request);
          } catch (e) {
            throw invalidArgument(`malformed replication message from ${who}: ${(e as Error).message.slice(0, 200)}`);
          }
          return encodeFrame(await fn(frame));
        })().then(
          (res) => cb(null, res),
          (e) => cb(toServiceError(e) as grpc.ServiceError),
        );
      };
    return {
      definition: replicaServiceDefinition,
      implementation: {
        Vote: handle(voteRequest, (f) => this.onVote(f.header)),
        Replicate: handle(replicateRequest, (f) => this.onReplicate(f.header, f.records)),
        CatchUp: handle(catchUpRequest, (f) => this.onCatchUp(f.header, f.records)),
      },
    };
  }

  /**
   * Appends events through the leader: resolves once a majority holds them durably and this
   * replica's log has them, with its signed checkpoint. On a follower: UNAVAILABLE,
   * reason AUDIT_NOT_LEADER, naming the leader (ErrorInfo `leader`, `leader_address`) when known.
   */
  append(events: readonly LogEvent[]): Promise<Receipt> {
    if (this.closed) return Promise.reject(new KeyshardError('UNAVAILABLE', 'audit sink replica is closed', { reason: 'AUDIT_UNAVAILABLE' }));
    if (this.roleNow !== 'leader') return Promise.reject(this.notLeader());
    return new Promise((resolve, reject) => {
      // encodeEvents throwing (an event without an id) rejects this promise only.
      this.queue.push({ events, entries: encodeEvents(events), resolve, reject });
      this.wake();
    });
  }

  notLeader(): KeyshardError {
    const leader = this.leaderId;
    const address = this.leaderAddress;
    return new KeyshardError(
      'UNAVAILABLE',
      leader ? `this audit sink replica is not the leader; the leader is ${quote(leader)}` : 'this audit sink replica is not the leader and knows no leader yet (election under way)',
      { reason: 'AUDIT_NOT_LEADER', metadata: leader && address ? { leader, leader_address: address } : {} },
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.electionTimer);
    clearInterval(this.quorumTimer);
    this.stepDown('closing');
    await this.lock.catch(() => {});
    for (const p of this.peers.values()) p.client.close();
    await this.store.close();
  }

  // ---- shared state -------------------------------------------------------------------------

  /** Runs `fn` alone among handlers and the leader's writes (they change the log, the pending tail and the term). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => {});
    return run;
  }

  private get pendingEnd(): number {
    return this.pending ? this.pending.start + splitCount(this.pending.lines) : this.log.size;
  }

  /** (term of the last batch, size) of this replica's Raft log: pending tail if any, else the audit log. */
  private lastLog(): { term: number; size: number } {
    if (this.pending && this.pendingEnd > this.log.size) return { term: this.pending.term, size: this.pendingEnd };
    return { term: this.appliedTerm, size: this.log.size };
  }

  /** Keeps the pending tail only where it extends the audit log (drops what the log already has, or what conflicts with it). */
  private normalizePending(): void {
    const p = this.pending;
    if (!p) return;
    const size = this.log.size;
    const recs = splitRecords(p.lines, p.start);
    const end = p.start + recs.length;
    if (end <= size || p.start > size) {
      this.pending = undefined;
      return;
    }
    for (const r of recs) {
      if (r.index >= size) break;
      if (!r.leaf.equals(this.log.leafAt(r.index))) {
        this.pending = undefined; // conflicts with a committed record: it never was committed (§5.3)
        return;
      }
    }
    const cut = recs.find((r) => r.index === size)!;
    this.pending = { term: p.term, start: size, lines: p.lines.subarray(cut.from) };
  }

  private async saveState(): Promise<void> {
    await this.store.saveState({ currentTerm: this.term, votedFor: this.votedFor, appliedTerm: this.appliedTerm });
  }

  /** A message of a later term: adopt it and become a follower (§5.1). */
  private async observeTerm(term: number): Promise<void> {
    if (term <= this.term) return;
    this.term = term;
    this.votedFor = undefined;
    await this.saveState();
    if (this.roleNow !== 'follower') this.stepDown(`term ${term} seen`);
  }

  private setRole(role: Role, leader: string | undefined): void {
    const changed = role !== this.roleNow || leader !== this.leader;
    this.roleNow = role;
    this.leader = leader;
    if (changed) {
      this.opts.logger.info({ role, leader, term: this.term }, 'audit replica role');
      try {
        this.opts.onRole?.(role, leader);
      } catch {
        // The observer's failure is its own.
      }
    }
  }

  private stepDown(why: string): void {
    const wasLeader = this.roleNow === 'leader';
    clearInterval(this.quorumTimer);
    this.quorumTimer = undefined;
    this.setRole('follower', undefined);
    if (wasLeader) this.opts.logger.warn({ term: this.term, why }, 'audit replica stepped down');
    for (const g of this.queue.splice(0)) g.reject(this.notLeader());
    this.wake();
    if (!this.closed) this.resetElectionTimer();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private changed(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        const i = this.waiters.indexOf(done); // timed out: no longer waiting (wake() empties the list itself)
        if (i >= 0) this.waiters.splice(i, 1);
        resolve();
      };
      const t = setTimeout(done, timeoutMs);
      this.waiters.push(done);
    });
  }

  private fail(reason: string): never {
    if (!this.diverged) {
      this.diverged = reason;
      this.opts.logger.fatal({ reason }, 'ALERT: audit replica log diverged from the leader; this replica stops taking part');
      try {
        this.opts.onDiverged?.(reason);
      } catch {
        // ignore
      }
    }
    throw new KeyshardError('FAILED_PRECONDITION', `audit replica ${this.opts.self}: ${reason}`, { reason: 'AUDIT_REPLICA_DIVERGED' });
  }

  // ---- follower side ------------------------------------------------------------------------

  private resetElectionTimer(): void {
    clearTimeout(this.electionTimer);
    if (this.closed || this.diverged) return;
    const ms = this.electionMs * (1 + Math.random());
    this.electionTimer = setTimeout(() => void this.startElection(), ms);
    this.electionTimer.unref();
  }

  private onVote(m: VoteRequest): Promise<VoteResponse> {
    return this.exclusive(async () => {
      if (this.diverged) return { term: this.term, granted: false };
      const mine = this.lastLog();
      const upToDate = m.lastTerm > mine.term || (m.lastTerm === mine.term && m.size >= mine.size);
      if (m.preVote) {
        // Pre-Vote: granted (and nothing changes here) only if this replica would vote for it and
        // has no live leader: a replica that was cut off cannot depose a working leader on return.
        const leaderAlive = this.roleNow === 'leader' || (this.leader !== undefined && Date.now() - this.leaderContact < this.electionMs);
        return { term: this.term, granted: m.term > this.term && upToDate && !leaderAlive };
      }
      if (m.term < this.term) return { term: this.term, granted: false };
      await this.observeTerm(m.term);
      if ((this.votedFor === undefined || this.votedFor === m.candidate) && upToDate) {
        this.votedFor = m.candidate;
        await this.saveState();
        this.resetElectionTimer();
        return { term: this.term, granted: true };
      }
      return { term: this.term, granted: false };
    });
  }

  /** Leader's message of a term at least ours: it is the leader of that term (§5.2). */
  private async followLeader(term: number, leader: string): Promise<void> {
    await this.observeTerm(term);
    if (this.roleNow !== 'follower' || this.leader !== leader) {
      if (this.roleNow === 'leader') this.stepDown(`leader ${leader} of the same term`); // cannot happen: one leader per term
      this.setRole('follower', leader);
    }
    this.leaderContact = Date.now();
    this.resetElectionTimer();
  }

  private onReplicate(m: ReplicateRequest, lines: Buffer): Promise<ReplicateResponse> {
    return this.exclusive(async () => {
      if (this.diverged) this.fail(this.diverged);
      if (m.term < this.term) return { term: this.term, ok: false, size: this.log.size, end: 0 };
      await this.followLeader(m.term, m.leader);
      // The leader's commit is m.start: a pending tail of its term that ends there is committed.
      if (this.pending && this.pending.term === m.term && this.pendingEnd <= m.start && this.pendingEnd > this.log.size) await this.applyPending();
      const size = this.log.size;
      if (size < m.start) return { term: this.term, ok: false, size, end: 0 };
      if (this.log.rootAt(m.start).toString('hex') !== m.prevRoot) this.fail(`root at size ${m.start} differs from the leader's`);
      this.checkLeaderCheckpoint(m.leader, m.checkpoint, m.start);
      if (size === m.start) this.synced = true;
      const recs = splitRecords(lines, m.start);
      if (m.start + recs.length !== m.end) throw invalidArgument('records do not match the range');
      for (const r of recs) {
        if (r.index >= size) break;
        if (!r.leaf.equals(this.log.leafAt(r.index))) this.fail(`record ${r.index} differs from the leader's`);
      }
      if (m.end <= size) return { term: this.term, ok: true, size, end: m.end };
      const from = recs.find((r) => r.index === size)!.from;
      const p = this.pending;
      if (!(p && p.term === m.term && p.start === size && this.pendingEnd === m.end)) {
        const next = { term: m.term, start: size, lines: Buffer.from(lines.subarray(from)) };
        await this.store.savePending(next);
        this.pending = next;
        this.verifiedOf.set(next, recs.filter((r) => r.index >= size));
      }
      return { term: this.term, ok: true, size, end: m.end };
    });
  }

  private onCatchUp(m: CatchUpRequest, lines: Buffer): Promise<CatchUpResponse> {
    return this.exclusive(async () => {
      if (this.diverged) this.fail(this.diverged);
      if (m.term < this.term) return { term: this.term, ok: false, size: this.log.size };
      await this.followLeader(m.term, m.leader);
      const size = this.log.size;
      if (size !== m.start) return { term: this.term, ok: false, size };
      if (this.log.rootAt(m.start).toString('hex') !== m.prevRoot) this.fail(`root at size ${m.start} differs from the leader's`);
      if (m.end > m.start) await this.log.appendRecords(m.start, lines);
      if (this.log.size !== m.end || this.log.rootAt().toString('hex') !== m.endRoot) this.fail(`the records the leader sent for ${m.start}..${m.end - 1} do not give its root`);
      if (m.checkpoint) {
        this.checkLeaderCheckpoint(m.leader, m.checkpoint, m.end);
        if (m.appliedTerm !== undefined && m.appliedTerm !== this.appliedTerm) {
          this.appliedTerm = m.appliedTerm;
          await this.saveState();
        }
        this.synced = true;
      }
      this.normalizePending();
      return { term: this.term, ok: true, size: this.log.size };
    });
  }

  /** The leader's checkpoint at `size`: signed by the leader's own key, and the root this replica has at that size. */
  private checkLeaderCheckpoint(leader: string, c: SignedCheckpoint, size: number): void {
    const key = this.keyOf.get(leader);
    if (!key) this.fail(`${leader} is not a configured replica`);
    // The same signed checkpoint comes with every heartbeat until the next commit: its signature is checked once.
    const seen = `${leader}\0${JSON.stringify(c)}`;
    if (seen !== this.lastCheckedCheckpoint) {
      const problem = checkpointProblem(c, new Map([[c.key_id, key]]));
      if (problem) this.fail(`the leader's checkpoint does not verify under its key: ${problem}`);
      this.lastCheckedCheckpoint = seen;
    }
    if (c.tree_size !== size) throw invalidArgument(`checkpoint of size ${c.tree_size}, expected ${size}`);
    if (c.root_hash !== this.log.rootAt(size).toString('hex')) this.fail(`the leader's signed root at size ${size} differs from this log's`);
  }

  /** Appends the pending tail (committed) to the audit log. Called holding the lock. */
  private async applyPending(): Promise<Receipt> {
    if (this.pending && this.pending.start !== this.log.size) this.normalizePending();
    const p = this.pending;
    if (!p) return { firstIndex: this.log.size, count: 0, checkpoint: this.log.checkpoint };
    if (p.term !== this.appliedTerm) {
      this.appliedTerm = p.term;
      await this.saveState();
    }
    const r = await this.log.appendRecords(p.start, p.lines, this.verifiedOf.get(p));
    this.pending = undefined;
    return r;
  }

  // ---- candidate ----------------------------------------------------------------------------

  private async startElection(): Promise<void> {
    if (this.closed || this.diverged || this.roleNow === 'leader') return;
    this.resetElectionTimer(); // no majority now: try again after another random timeout
    const before = this.term;
    if (!(await this.preVote())) return;
    // Meanwhile a leader may have appeared (or this replica closed): then no election.
    const now = this.roleNow as Role;
    if (this.closed || this.diverged || now === 'leader' || this.term !== before || Date.now() - this.leaderContact < this.electionMs) return;
    const { term, last } = await this.exclusive(async () => {
      this.term += 1;
      this.votedFor = this.opts.self;
      await this.saveState();
      this.setRole('candidate', undefined);
      return { term: this.term, last: this.lastLog() };
    });
    this.resetElectionTimer(); // a split vote: try again after another random timeout
    let votes = 1;
    const won = () => {
      if (votes >= this.majority && this.roleNow === 'candidate' && this.term === term) this.becomeLeader(term);
    };
    won();
    for (const p of this.peers.values()) {
      void this.call<VoteResponse>(p, 'Vote', { term, candidate: this.opts.self, lastTerm: last.term, size: last.size }, voteResponse, this.electionMs).then(
        async (res) => {
          if (res.term > this.term) await this.exclusive(() => this.observeTerm(res.term));
          else if (res.granted && res.term === term) {
            votes += 1;
            won();
          }
        },
        () => {},
      );
    }
  }

  /**
   * Pre-Vote (Ongaro's thesis §9.6): asks whether a majority would vote for this replica in the
   * next term, without anyone changing term. A replica that was partitioned keeps its term while
   * it fails this, so on return it follows the leader instead of forcing an election.
   */
  private preVote(): Promise<boolean> {
    if (this.peers.size === 0) return Promise.resolve(true);
    const term = this.term + 1;
    const last = this.lastLog();
    return new Promise((resolve) => {
      let granted = 1;
      let answered = 0;
      const timer = setTimeout(() => resolve(false), this.electionMs);
      timer.unref();
      const done = (ok: boolean) => {
        clearTimeout(timer);
        resolve(ok);
      };
      for (const p of this.peers.values()) {
        void this.call<VoteResponse>(p, 'Vote', { term, candidate: this.opts.self, lastTerm: last.term, size: last.size, preVote: true }, voteResponse, this.electionMs)
          .then(
            (res) => {
              if (res.granted) granted += 1;
            },
            () => {},
          )
          .finally(() => {
            answered += 1;
            if (granted >= this.majority) done(true);
            else if (answered === this.peers.size) done(false);
          });
      }
    });
  }

  // ---- leader -------------------------------------------------------------------------------

  private becomeLeader(term: number): void {
    clearTimeout(this.electionTimer);
    this.setRole('leader', this.opts.self);
    this.synced = true;
    const now = Date.now();
    for (const p of this.peers.values()) {
      p.lastContact = now;
      p.behind = undefined;
      p.lastSent = 0;
      p.acked = undefined;
      void this.peerLoop(p, term);
    }
    this.quorumTimer = setInterval(() => {
      const now = Date.now();
      let heard = 1;
      for (const p of this.peers.values()) if (now - p.lastContact < this.electionMs) heard += 1;
      if (heard < this.majority && this.isLeader(term)) this.stepDown('no majority heard within the election timeout');
    }, this.heartbeatMs);
    this.quorumTimer.unref();
    void this.leaderLoop(term);
  }

  private isLeader(term: number): boolean {
    return !this.closed && this.roleNow === 'leader' && this.term === term;
  }

  private async leaderLoop(term: number): Promise<void> {
    try {
      // First: its own uncommitted tail, if any, re-proposed in this term (it may hold committed records).
      if (this.pending && this.pendingEnd > this.log.size) await this.runRound(term, Buffer.from(this.pending.lines));
      while (this.isLeader(term)) {
        if (this.queue.length === 0) {
          await this.changed(this.heartbeatMs * 10);
          continue;
        }
        const groups: Group[] = [];
        let bytes = 0;
        while (this.queue.length > 0 && (groups.length === 0 || bytes < ROUND_MAX_BYTES)) {
          const g = this.queue.shift()!;
          groups.push(g);
          for (const e of g.entries) bytes += e.bytes;
        }
        // Sequence: skip ids already stored or earlier in this round.
        const first = this.log.size;
        const seen = new Set<string>();
        const entries: EncodedEntry[] = [];
        const verified: VerifiedRecord[] = [];
        const spans: { firstIndex: number; count: number }[] = [];
        for (const g of groups) {
          const firstOfGroup = first + entries.length;
          g.events.forEach((e, i) => {
            const before = seen.size;
            if (seen.add(e.id).size === before || this.log.hasId(e.id)) return;
            entries.push(g.entries[i]!);
            verified.push({ event: e as VerifiedRecord['event'], leaf: g.entries[i]!.leaf });
          });
          spans.push({ firstIndex: firstOfGroup, count: first + entries.length - firstOfGroup });
        }
        let receipt: Receipt;
        try {
          receipt = entries.length > 0 ? await this.runRound(term, encodeRecords(first, entries), verified) : { firstIndex: first, count: 0, checkpoint: this.log.checkpoint };
        } catch (e) {
          for (const g of groups) g.reject(e);
          continue;
        }
        groups.forEach((g, i) => g.resolve({ ...spans[i]!, checkpoint: receipt.checkpoint }));
      }
    } catch (e) {
      this.opts.logger.error({ err: e }, 'audit replica leader loop failed');
      if (this.isLeader(term)) this.stepDown('leader loop failed');
    }
  }

  /** One round: the batch durable here and on a majority, then appended to the log. */
  private async runRound(term: number, lines: Buffer, verified?: readonly VerifiedRecord[]): Promise<Receipt> {
    const start = this.log.size;
    const end = start + splitCount(lines);
    let committed!: () => void;
    let lost!: (e: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      committed = res;
      lost = rej;
    });
    done.catch(() => {}); // awaited below; a loss before then must not count as unhandled
    const round: Round = { term, start, end, lines, acks: new Set(), committed };
    this.round = round;
    const onLost = () => {
      if (!this.isLeader(term)) lost(this.notLeader());
    };
    this.waiters.push(onLost);
    try {
      await this.exclusive(async () => {
        if (!this.isLeader(term)) throw this.notLeader();
        const p = { term, start, lines };
        await this.store.savePending(p);
        this.pending = p;
        if (verified) this.verifiedOf.set(p, verified);
      });
      this.wake(); // peers send the new round now
      this.ack(round, this.opts.self);
      // Re-arm the step-down watcher until the round ends.
      const watch = setInterval(onLost, this.heartbeatMs);
      try {
        await done;
      } finally {
        clearInterval(watch);
      }
      // Committed: a majority holds it durably (in this term). Append it even if no longer leader.
      return await this.exclusive(() => this.applyPending());
    } finally {
      if (this.round === round) this.round = undefined;
      // Followers that hold the round hear of its commit at once (the next round, or a heartbeat now).
      for (const p of this.peers.values()) if (p.acked === round) p.lastSent = 0;
      this.wake();
    }
  }

  private ack(round: Round, id: string): void {
    round.acks.add(id);
    if (round.acks.size >= this.majority) round.committed();
  }

  /** Keeps one follower up to date: the current round (or a heartbeat) every change or heartbeat, catch-up when it is behind. */
  private async peerLoop(p: PeerState, term: number): Promise<void> {
    while (this.isLeader(term)) {
      const waitFor = this.changed(this.heartbeatMs);
      try {
        if (p.behind !== undefined && p.behind < this.log.size) {
          await this.sendCatchUp(p, term);
          continue;
        }
        const round = this.round;
        const start = this.log.size;
        const useRound = round && round.start === start && this.pending?.term === term && p.acked !== round;
        // A follower that holds the current round is not sent it again (it would check every
        // record again): it learns the commit from the next round or heartbeat (§5.3: the commit
        // index rides on the next AppendEntries).
        if (!useRound && Date.now() - p.lastSent < this.heartbeatMs) {
          await this.changed(p.lastSent + this.heartbeatMs - Date.now()); // a change, or the heartbeat's due time
          continue;
        }
        p.lastSent = Date.now();
        const req: ReplicateRequest = { term, leader: this.opts.self, start, prevRoot: this.log.rootAt(start).toString('hex'), checkpoint: this.log.checkpoint, end: useRound ? round.end : start };
        if (req.checkpoint.tree_size !== start) req.checkpoint = await this.log.freshCheckpoint();
        const res = await this.call<ReplicateResponse>(p, 'Replicate', { header: req, records: useRound ? round.lines : EMPTY }, replicateResponse, Math.max(this.electionMs, 2000));
        if (res.term > term) {
          await this.exclusive(() => this.observeTerm(res.term));
          return;
        }
        p.lastContact = Date.now();
        if (!res.ok) {
          p.behind = res.size;
          continue;
        }
        p.behind = undefined;
        if (useRound && this.round === round && res.end >= round.end) {
          p.acked = round;
          this.ack(round, p.peer.id);
        }
      } catch (e) {
        this.opts.logger.debug({ peer: p.peer.id, err: (e as Error).message }, 'replication call failed');
        await sleep(Math.min(this.heartbeatMs, 200));
        continue;
      }
      await waitFor;
    }
  }

  private async sendCatchUp(p: PeerState, term: number): Promise<void> {
    const start = p.behind!;
    const commit = this.log.size;
    const entries: EncodedEntry[] = [];
    let bytes = 0;
    for await (const r of this.log.records(start, commit)) {
      const e = encodeEntry(r.event);
      entries.push(e);
      bytes += e.bytes;
      if (bytes >= CATCH_UP_MAX_BYTES) break;
    }
    const end = start + entries.length;
    const last = end === this.log.size;
    const req: CatchUpRequest = {
      term,
      leader: this.opts.self,
      start,
      prevRoot: this.log.rootAt(start).toString('hex'),
      end,
      endRoot: this.log.rootAt(end).toString('hex'),
      ...(last ? { appliedTerm: this.appliedTerm, checkpoint: this.log.checkpoint.tree_size === end ? this.log.checkpoint : await this.log.freshCheckpoint() } : {}),
    };
    const res = await this.call<CatchUpResponse>(p, 'CatchUp', { header: req, records: encodeRecords(start, entries) }, catchUpResponse, 10_000);
    if (res.term > term) {
      await this.exclusive(() => this.observeTerm(res.term));
      return;
    }
    p.lastContact = Date.now();
    p.behind = res.size < this.log.size ? res.size : undefined;
  }

  private call<R>(p: PeerState, method: ReplicaMethod, req: unknown, schema: z.ZodType<R>, timeoutMs: number): Promise<R> {
    const body = encodeFrame(req as Frame<unknown>);
    return new Promise<R>((resolve, reject) => {
      const deadline = new Date(Date.now() + timeoutMs);
      (p.client as unknown as Record<string, (b: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Buffer>) => void>)[method]!(
        body,
        new grpc.Metadata(),
        { deadline },
        (err, res) => {
          if (err) return reject(err);
          try {
            resolve(decodeFrame(schema, res!).header);
          } catch (e) {
            reject(e);
          }
        },
      );
    });
  }
}

/** Number of record lines (newline-terminated) in a buffer. */
function splitCount(lines: Buffer): number {
  let n = 0;
  for (let i = lines.indexOf(0x0a); i >= 0; i = lines.indexOf(0x0a, i + 1)) n += 1;
  return n;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
