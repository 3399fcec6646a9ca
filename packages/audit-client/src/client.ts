/**
 * Producer side of the audit log. `record()` resolves only once the sink has fdatasync'ed
 * the event, so a caller that awaits it before answering its own client never does an
 * unrecorded operation (fail closed).
 *
 * Throughput comes from batching on one long-lived Append stream with at most ONE batch in
 * flight: events recorded while a batch is in flight form the next batch, so batches grow
 * with load and one sink fsync covers many calls.
 *
 * Delivery is at-least-once: a rejected record() may still have been stored (e.g. the ack
 * was lost). Retrying with the same `id` is safe: the sink stores an id only once.
 *
 * The sink is pinned twice: its TLS certificate must be the sink's (`serverId`, server-identity.ts
 * in @keyshard/rpc), and every acknowledgement must carry a checkpoint signed by a configured
 * sink key and consistent with the last one verified (@keyshard/audit-log checkpoint-trust.ts).
 * An event counts as stored only then; on the first mismatch the client alerts (`onAlert`) and
 * refuses every record() from then on, so nothing is acknowledged without a verified stored event.
 */
import type { KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { CheckpointTrust, MAX_APPEND_BATCH, fromCheckpointMsg, type SignedCheckpoint } from '@keyshard/audit-log';
import { KeyshardError, isReason, type ErrorCode } from '@keyshard/errors';
import { AUDIT_SINK_ID, errorInfoOf, expectServer, keyshardProto, makeClient, reasonOfStatus, type pb, type TlsMaterial } from '@keyshard/rpc';
import { completeEvent, type AuditEvent, type AuditEventInput } from './event.ts';

export interface AuditClientOptions {
  address: string; // host:port of the sink (with `replicas`: the one tried first)
  tls: TlsMaterial;
  source: string;
  /** The sink's certificate CN (default `audit-sink`): any other server is refused. */
  serverId?: string;
  /**
   * A replicated sink (services/audit-sink REPLICATION.md): every replica's address and
   * certificate CN. Batches go to the leader; a replica that is not the leader refuses with
   * AUDIT_NOT_LEADER naming it, and the client moves there (or to the next replica when the one
   * it used is down) and sends the unacknowledged batch again (event ids make that idempotent),
   * within each record()'s own deadline. `checkpointKeys` must hold every replica's key.
   */
  replicas?: readonly { address: string; serverId: string }[];
  /** The sink's checkpoint public keys by key id (loadCheckpointKeys); at least one. */
  checkpointKeys: ReadonlyMap<string, KeyObject>;
  /** Called once, when an acknowledgement fails verification (the client then refuses every record()). */
  onAlert?: (alert: { reason: string }) => void;
  timeoutMs?: number; // per record(): until acknowledged; default 2000
  maxBatch?: number; // events per Append request; default MAX_APPEND_BATCH (1000), the most the sink takes by default
  maxQueued?: number; // events waiting for a batch before record() refuses; default 100000
}

interface Pending {
  event: AuditEvent | undefined; // undefined: a checkpoint probe (an empty batch)
  resolve: () => void;
  reject: (e: KeyshardError) => void;
  timer: NodeJS.Timeout | undefined;
  settled: boolean;
}

type AppendStream = grpc.ClientDuplexStream<pb.AppendRequest, pb.AppendResponse__Output>;

// Refusals keep their own code (a misconfiguration is not an outage); the rest is UNAVAILABLE.
// RESOURCE_EXHAUSTED: the sink's per-appender quota (reason AUDIT_QUOTA) or a batch too large.
// Either way the batch was not stored: spooled events are shipped again after the spool's
// back-off (spool.ts), the rest are refused to their callers (fail closed).
const KEPT: Partial<Record<number, ErrorCode>> = {
  [grpc.status.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  [grpc.status.RESOURCE_EXHAUSTED]: 'RESOURCE_EXHAUSTED',
  [grpc.status.UNAUTHENTICATED]: 'UNAUTHENTICATED',
  [grpc.status.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
};

// grpc-js backs off up to 120 s between reconnects by default: far too long to stay
// refusing audited calls after the sink is back. Calls fail fast while it is down.
const RECONNECT: grpc.ChannelOptions = {
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
};

export class AuditClient {
  private readonly timeoutMs: number;
  private readonly maxBatch: number;
  private readonly maxQueued: number;
  private client: pb.AuditServiceClient | undefined;
  private readonly targets: readonly { address: string; serverId: string }[];
  private target = 0;
  private moves = 0; // consecutive moves to another replica without an acknowledgement
  private acknowledgedHere = false; // the target acknowledged a batch since the client last moved or lost its stream
  private stream: AppendStream | undefined;
  private queue: Pending[] = [];
  private inFlight: { batch: number; items: Pending[]; timer: NodeJS.Timeout; knownSize: number } | undefined;
  private readonly trust: CheckpointTrust;
  private batchSeq = 0;
  private moving: NodeJS.Timeout | undefined; // a pause before sending to another replica
  private closed = false;
  private idle: (() => void)[] = [];

  constructor(private readonly opts: AuditClientOptions) {
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.maxBatch = opts.maxBatch ?? MAX_APPEND_BATCH;
    this.maxQueued = opts.maxQueued ?? 100_000;
    this.trust = new CheckpointTrust(opts.checkpointKeys);
    this.targets = opts.replicas && opts.replicas.length > 0 ? opts.replicas : [{ address: opts.address, serverId: opts.serverId ?? AUDIT_SINK_ID }];
    const first = this.targets.findIndex((t) => t.address === opts.address);
    this.target = first >= 0 ? first : 0;
  }

  /** host:port of the sink (replica) batches go to now. */
  get address(): string {
    return this.targets[this.target]!.address;
  }

  /**
   * The sink (replica) batches go to now, and whether it acknowledged a batch since this client
   * last moved to it or lost its stream. With `replicas` only the leader acknowledges, so
   * `acknowledged` means it leads the log as far as this client knows (Status shows it).
   */
  get sendingTo(): { address: string; serverId: string; acknowledged: boolean } {
    const t = this.targets[this.target]!;
    return { address: t.address, serverId: t.serverId, acknowledged: this.acknowledgedHere };
  }

  /** Why the sink's acknowledgements are no longer trusted (then every record() is refused). */
  get distrusted(): string | undefined {
    return this.trust.problem;
  }

  /** The last checkpoint verified from the sink. */
  get lastCheckpoint() {
    return this.trust.last;
  }

  /**
   * Anchors the checkpoint trust on a checkpoint kept outside the sink (the witness record in
   * etcd), before anything is sent: the first acknowledgement must extend it. Returns why it
   * cannot be an anchor (checkpoint-trust.ts `seed`).
   */
  seed(cp: SignedCheckpoint): string | undefined {
    return this.trust.seed(cp);
  }

  /**
   * After an operator's witness reset only: trusts the sink again from `cp` on. The stream in
   * use (if any) is dropped, so no acknowledgement proven against the old anchor is checked
   * against the new one. Returns why `cp` cannot be an anchor (nothing changes then).
   */
  reanchor(cp: SignedCheckpoint): string | undefined {
    if (this.stream) this.fail(this.stream, unavailable('the checkpoint anchor was reset'), true);
    const problem = this.trust.reanchor(cp);
    if (!problem) this.pump();
    return problem;
  }

  /** Stops trusting the sink for a reason found elsewhere (the witness); alerts once, like a failed acknowledgement. */
  distrust(reason: string): void {
    if (this.trust.problem) return;
    this.trust.distrust(reason);
    this.alert(reason);
    for (const p of this.queue.splice(0)) this.settle(p, distrusted(reason));
  }

  /**
   * The sink's current checkpoint, verified like any acknowledgement: an empty batch on the
   * Append stream, so the answer must extend the last verified checkpoint (RFC 6962 §2.1.2)
   * even when no event is being recorded. What a witness cosigns.
   */
  checkpoint(): Promise<SignedCheckpoint> {
    if (this.closed) return Promise.reject(unavailable('client is closed'));
    if (this.trust.problem) return Promise.reject(distrusted(this.trust.problem));
    return new Promise<SignedCheckpoint>((resolve, reject) => {
      const p: Pending = {
        event: undefined,
        resolve: () => (this.trust.last ? resolve(this.trust.last) : reject(unavailable('no verified checkpoint'))),
        reject,
        settled: false,
        timer: setTimeout(() => this.settle(p, unavailable(`not acknowledged within ${this.timeoutMs} ms`)), this.timeoutMs),
      };
      this.queue.push(p);
      this.pump();
    });
  }

  /** Resolves once the sink has durably stored the event; rejects with KeyshardError otherwise. */
  record(input: AuditEventInput): Promise<void> {
    if (this.closed) return Promise.reject(unavailable('client is closed'));
    if (this.trust.problem) return Promise.reject(distrusted(this.trust.problem));
    if (this.queue.length >= this.maxQueued) return Promise.reject(unavailable(`${this.queue.length} events already waiting`));
    let event: AuditEvent;
    try {
      event = completeEvent(input, this.opts.source);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<void>((resolve, reject) => {
      const p: Pending = {
        event,
        resolve,
        reject,
        settled: false,
        timer: setTimeout(() => this.settle(p, unavailable(`not acknowledged within ${this.timeoutMs} ms`)), this.timeoutMs),
      };
      this.queue.push(p);
      this.pump();
    });
  }

  /**
   * Sends events that are already complete (e.g. from the durable spool) as one unit: one
   * promise and one deadline for the lot instead of one each. Resolves when all are stored.
   */
  recordAll(events: AuditEvent[]): Promise<void> {
    if (events.length === 0) return Promise.resolve();
    if (this.closed) return Promise.reject(unavailable('client is closed'));
    if (this.trust.problem) return Promise.reject(distrusted(this.trust.problem));
    if (this.queue.length + events.length > this.maxQueued) return Promise.reject(unavailable(`${this.queue.length} events already waiting`));
    return new Promise<void>((resolve, reject) => {
      let remaining = events.length;
      let done = false;
      const finish = (err?: KeyshardError) => {
        if (done) return;
        if (err || --remaining === 0) {
          done = true;
          clearTimeout(timer);
          if (err) reject(err);
          else resolve();
        }
      };
      const group: Pending[] = events.map((event) => ({ event, resolve: () => finish(), reject: finish, timer: undefined, settled: false }));
      const timer = setTimeout(() => {
        for (const p of group) this.settle(p, unavailable(`not acknowledged within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.queue.push(...group);
      this.pump();
    });
  }

  /** Waits for recorded events to be acknowledged or rejected, then ends the stream. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.inFlight || this.queue.length) await new Promise<void>((r) => this.idle.push(r));
    const s = this.stream;
    this.stream = undefined;
    s?.end();
    this.client?.close();
    this.client = undefined;
  }

  /** Sends the next batch if none is in flight. */
  private pump(): void {
    if (this.inFlight || this.moving) return;
    this.queue = this.queue.filter((p) => !p.settled); // drop the ones that timed out waiting
    if (this.queue.length === 0) {
      for (const r of this.idle.splice(0)) r();
      return;
    }
    const stream = this.stream ?? this.connect();
    const items = this.queue.splice(0, this.maxBatch);
    const batch = ++this.batchSeq;
    // A batch never acknowledged means a hung sink or a dead connection that TCP has not
    // noticed yet: drop the stream; events queued behind the batch go out on a fresh one.
    // With replicas, a replica that holds a batch for long (stopped, partitioned, or a leader
    // that lost its majority) is left sooner, while the records still have time elsewhere.
    const replicated = this.targets.length > 1;
    const timer = setTimeout(
      () => {
        if (replicated && this.moveOn(stream, undefined)) return;
        this.fail(stream, unavailable(`batch not acknowledged within ${this.timeoutMs} ms`), true);
        this.pump();
      },
      replicated ? Math.min(this.timeoutMs, 1000) : this.timeoutMs,
    );
    const knownSize = this.trust.knownSize;
    this.inFlight = { batch, items, timer, knownSize };
    stream.write({ events: items.flatMap((p) => (p.event ? [p.event] : [])), batch, known_tree_size: knownSize });
  }

  private connect(): AppendStream {
    const t = this.targets[this.target]!;
    this.client ??= makeClient(keyshardProto().AuditService, t.address, this.opts.tls, RECONNECT, expectServer('the audit sink', t.serverId));
    const s = this.client.Append();
    this.stream = s;
    s.on('data', (res: pb.AppendResponse__Output) => {
      if (this.stream !== s) return;
      const f = this.inFlight;
      if (!f || res.batch !== f.batch) {
        this.fail(s, unavailable(`unexpected acknowledgement for batch ${res.batch}`));
        return;
      }
      const problem = this.verify(res, f.knownSize);
      if (problem) {
        this.fail(s, distrusted(problem)); // the batch and everything queued: not stored as far as we know
        return;
      }
      this.inFlight = undefined;
      this.moves = 0;
      this.acknowledgedHere = true;
      clearTimeout(f.timer);
      for (const p of f.items) this.settle(p);
      this.pump();
    });
    s.on('error', (e: grpc.ServiceError) => {
      const code = KEPT[e.code];
      // A refusal keeps the sink's own reason (NOT_AUTHORIZED, INVALID_ARGUMENT, ...): it is not
      // an outage, and a caller must not retry it as one.
      const reason = reasonOfStatus(e);
      if (!code && this.targets.length > 1 && this.moveOn(s, reason === 'AUDIT_NOT_LEADER' ? errorInfoOf(e)?.metadata : undefined)) return;
      const err = code ? new KeyshardError(code, `audit sink refused: ${e.details}`, { reason: isReason(reason) ? reason : undefined }) : unavailable(e.details || e.message);
      this.fail(s, err);
    });
    // The sink ends streams when it shuts down; anything still in flight was not acknowledged.
    s.on('end', () => {
      if (this.targets.length > 1 && this.moveOn(s, undefined)) return;
      this.fail(s, unavailable('stream ended by the sink'));
    });
    return s;
  }

  /**
   * A replicated sink: the replica used is not the leader (it named `leader`: the leader's id, and
   * its address as that replica reaches it — this client may reach it at another, so the id is
   * matched first) or is down. Drops
   * the stream, puts the unacknowledged batch back at the head of the queue and sends it to the
   * leader (or the next replica) after a short pause that grows while no replica acknowledges.
   * Each record() keeps its own deadline. False (the caller fails as before) once the client is closed.
   */
  private moveOn(s: AppendStream, leader: { leader?: string; leader_address?: string } | undefined): boolean {
    if (this.stream !== s || this.closed) return false;
    this.stream = undefined;
    this.acknowledgedHere = false;
    s.cancel();
    const f = this.inFlight;
    this.inFlight = undefined;
    clearTimeout(f?.timer);
    if (f) this.queue.unshift(...f.items.filter((p) => !p.settled));
    const byId = leader?.leader ? this.targets.findIndex((t) => t.serverId === leader.leader) : -1;
    const hinted = byId >= 0 ? byId : leader?.leader_address ? this.targets.findIndex((t) => t.address === leader.leader_address) : -1;
    const next = hinted >= 0 && hinted !== this.target ? hinted : (this.target + 1) % this.targets.length;
    if (next !== this.target) {
      this.client?.close();
      this.client = undefined;
      this.target = next;
    }
    const pause = Math.min(50 * 2 ** Math.min(this.moves, 4), 500);
    this.moves += 1;
    const t = setTimeout(() => {
      this.moving = undefined;
      this.pump();
    }, hinted >= 0 && this.moves <= 1 ? 0 : pause);
    this.moving = t;
    return true;
  }

  /**
   * Drops a broken stream and rejects the in-flight batch and (unless keepQueue) every queued
   * event, so callers learn of an outage at once; the next record() reconnects.
   */
  private fail(s: AppendStream, err: KeyshardError, keepQueue = false): void {
    if (this.stream !== s) return;
    this.stream = undefined;
    this.acknowledgedHere = false;
    s.cancel();
    const pending = [...(this.inFlight?.items ?? []), ...(keepQueue ? [] : this.queue.splice(0))];
    clearTimeout(this.inFlight?.timer);
    this.inFlight = undefined;
    for (const p of pending) this.settle(p, err);
    if (this.queue.length === 0) for (const r of this.idle.splice(0)) r();
  }

  /** Checks an acknowledgement's checkpoint (CheckpointTrust); alerts on the first failure. */
  private verify(res: pb.AppendResponse__Output, knownSize: number): string | undefined {
    const already = this.trust.problem;
    let problem: string | undefined;
    try {
      problem = this.trust.accept(
        {
          firstIndex: res.first_index,
          count: res.count,
          headHash: res.head_hash,
          checkpoint: res.checkpoint ? fromCheckpointMsg(res.checkpoint) : undefined,
          consistency: res.consistency_proof ?? [],
        },
        knownSize,
      );
    } catch (e) {
      problem = `malformed acknowledgement (${(e as Error).name})`;
    }
    if (problem && !already) this.alert(problem);
    return problem;
  }

  private alert(reason: string): void {
    try {
      this.opts.onAlert?.({ reason });
    } catch {
      // The alert hook's failure is its own: the client refuses all the same.
    }
  }

  private settle(p: Pending, err?: KeyshardError): void {
    if (p.settled) return;
    p.settled = true;
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve();
  }
}

function unavailable(reason: string): KeyshardError {
  return new KeyshardError('UNAVAILABLE', `audit sink unavailable: ${reason}`, { reason: 'AUDIT_UNAVAILABLE' });
}

function distrusted(reason: string): KeyshardError {
  return new KeyshardError('UNAVAILABLE', `audit sink not trusted: ${reason}; events are not acknowledged until an operator resets the witnesses (keyshard audit witness reset) or restarts this component`, { reason: 'AUDIT_UNAVAILABLE' });
}
