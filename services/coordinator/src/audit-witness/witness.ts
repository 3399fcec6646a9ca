/**
 * This coordinator replica as a witness of the audit sink (C2SP tlog-witness, in keyshard's
 * shape): it cosigns only checkpoints it has verified to be append-only extensions of the last
 * one it cosigned (RFC 6962 §2.1.2 consistency proofs), keeps the latest in etcd, and publishes
 * it at the sink for auditors.
 *
 * Where the proofs come from: the replica's own audit producer (AuditClient), whose checkpoint
 * trust (@keyshard/audit-log checkpoint-trust.ts) checks every acknowledgement. At start-up that
 * trust is anchored (`seed`) on this replica's witness record from etcd — not on whatever the
 * sink says first — so a sink rolled back from an older copy of its folder, or forked, fails the
 * very first acknowledgement after a restart too. Every `intervalMs` the witness asks the sink
 * for its checkpoint through the same stream (AuditClient.checkpoint: an empty batch whose
 * acknowledgement must prove consistency), so a rolled-back sink is noticed without traffic.
 * When the verified checkpoint grew, it is cosigned (Ed25519 witness key, cosignature/v1 note
 * signature), stored forward-only (witness-store.ts), then pushed to the sink (AddCosignature).
 * When it did not grow, the same tree is cosigned again with a fresh time once the last
 * cosignature is `refreshSeconds` old (as C2SP witnesses refresh their timestamps): auditors
 * measure freshness on cosignature times only (`keyshard audit verify --max-age`), so an idle log
 * stays verifiable and a sink that cut its tail cannot show a fresh cosignature of the shorter
 * tree. Only then is it stored and published, to keep etcd and sink writes low; publication is
 * at most every COSIGNATURE_PUBLISH_INTERVAL_MS (the sink refuses more, cosigned.ts).
 *
 * Split view: each round also reads the peers' records from etcd; two sink-signed checkpoints of
 * the same key and tree size with different roots (this replica's and a peer's, or two peers')
 * prove that the sink showed the witnesses different histories: the same alarm. (Auditors catch
 * the rest by requiring every witness: `keyshard dev` writes witnessQuorum = replicas.)
 *
 * Alarm: once the trust holds a problem (rolled back, forked, unsigned, or etcd holding a larger
 * cosigned tree than the sink's), the replica acknowledges no audited operation (AuditClient
 * refuses: crypto calls spool then are refused, state changes fail closed), logs an `ALERT`
 * line (alert `audit_witness_alarm`), shows it in Status and the keyshard_audit_witness_alarm
 * gauge, and tries to audit `witness.alarm` (which a distrusted sink cannot take: the attempt
 * and its failure are logged). It stays so, across restarts (the anchor is in etcd), until an
 * admin resets the witnesses (`reset`): every replica re-anchors on the sink's current checkpoint.
 * A replica follows another's reset only if its anchor verifies under the configured sink keys
 * and (while unsealed) the reset record's MAC verifies (witness-store.ts); it then records
 * `witness.reset.followed` (the reset's checkpoint and the record's etcd revision) through the
 * new anchor, or, if that cannot be recorded, keeps refusing and tries again next round.
 */
import type { KeyObject } from 'node:crypto';
import type { Logger } from '@keyshard/config';
import { failedPrecondition, invalidArgument } from '@keyshard/errors';
import { COSIGNATURE_PUBLISH_INTERVAL_MS, checkpointNote, checkpointProblem, cosign, cosignatureTime, type CosignedCheckpoint, type SignedCheckpoint } from '@keyshard/audit-log';
import type { AuditRecorder } from '@keyshard/audit-client';
import { chooseAnchor, findSplitView, type ResetRecord, type WitnessRecords, type WitnessStore } from './witness-store.ts';
import type { WitnessKey } from './witness-key.ts';

/** The stable `alert` field of the witness's alarm log line. */
export const WITNESS_ALARM = 'audit_witness_alarm';

/** What the witness needs of the replica's audit producer (AuditClient). */
export interface WitnessedSink {
  seed(cp: SignedCheckpoint): string | undefined;
  reanchor(cp: SignedCheckpoint): string | undefined;
  distrust(reason: string): void;
  checkpoint(): Promise<SignedCheckpoint>;
  readonly distrusted: string | undefined;
  record: AuditRecorder['record'];
}

export interface WitnessDeps {
  key: WitnessKey;
  store: WitnessStore;
  sink: WitnessedSink;
  sinkKeys: ReadonlyMap<string, KeyObject>;
  /** Publishes a cosigned checkpoint at the sink (AuditReader.addCosignature). */
  publish: (c: CosignedCheckpoint) => Promise<void>;
  /** The sink's current checkpoint as it signs it, unverified (AuditReader.checkpoint): a reset's new anchor. */
  sinkCheckpoint: () => Promise<SignedCheckpoint>;
  log: Logger;
  intervalMs: number;
  /** Re-cosign the same tree with a fresh time once the last cosignature is this old (seconds; default 60). */
  refreshSeconds?: number;
  /**
   * Whether the cluster is initialized: an uninitialized cluster keeps nothing in etcd (a restore
   * needs it empty), so the witness verifies but neither stores nor publishes until then.
   */
  initialized?: () => boolean;
  /** Whole seconds since the epoch (tests). */
  now?: () => number;
}

export interface WitnessStatus {
  name: string;
  vkey: string;
  cosigned_tree_size: number;
  cosigned_time: string;
  alarm: string;
}

export class AuditWitness {
  #cosigned: CosignedCheckpoint | undefined;
  /** The cosignature line last published at the sink, and when (seconds). */
  #published: { line: string; at: number } | undefined;
  #alarm: string | undefined;
  #reset = { epoch: 0, revision: '0' };
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;

  constructor(private readonly d: WitnessDeps) {}

  get name(): string {
    return this.d.key.name;
  }

  /** The last checkpoint this replica cosigned (and stored), if any. */
  get cosigned(): CosignedCheckpoint | undefined {
    return this.#cosigned;
  }

  get alarm(): string | undefined {
    return this.#alarm;
  }

  status(): WitnessStatus {
    return {
      name: this.d.key.name,
      vkey: this.d.key.vkey,
      cosigned_tree_size: this.#cosigned?.checkpoint.tree_size ?? 0,
      cosigned_time: this.#cosigned?.checkpoint.time ?? '',
      alarm: this.#alarm ?? this.d.sink.distrusted ?? '',
    };
  }

  /**
   * Anchors the producer on the witness records in etcd; call before anything is recorded (the
   * spool ships at open). Throws only when etcd cannot be read (the replica cannot start then).
   */
  async anchor(): Promise<void> {
    const records = await this.d.store.load();
    this.#reset = { epoch: records.reset?.epoch ?? 0, revision: records.resetRevision };
    if (records.own && !checkpointProblem(records.own.checkpoint, this.d.sinkKeys)) this.#cosigned = records.own; // its cosignature time says when it is due for a refresh
    else if (records.own) this.d.log.info({ witness: this.name }, "this replica's witness record is not of the configured audit sink (key id unknown): it is not an anchor, and is replaced by the first checkpoint cosigned");
    const chosen = chooseAnchor(records, this.d.sinkKeys);
    if (!chosen) {
      this.d.log.info({ witness: this.name }, 'no witness record of this audit sink in etcd: the first verified checkpoint is the anchor');
      return;
    }
    const problem = this.d.sink.seed(chosen.anchor);
    if (problem) throw failedPrecondition(`cannot anchor the audit producer on the witness record: ${problem}`);
    this.d.log.info({ witness: this.name, from: chosen.from, treeSize: chosen.anchor.tree_size }, 'audit producer anchored on a witness record: the sink must prove consistency from it');
  }

  start(): void {
    this.#timer = setInterval(() => void this.tick(), this.d.intervalMs);
    this.#timer.unref();
    void this.tick();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running;
  }

  /** One round (also on demand): follow a reset, verify the sink's checkpoint, cosign, store, publish. Never throws. */
  tick(): Promise<void> {
    this.#running ??= this.#round()
      .catch((e: Error) => this.d.log.warn({ witness: this.name, err: e.message }, 'witness round failed; trying again'))
      .finally(() => (this.#running = undefined));
    return this.#running;
  }

  #now(): number {
    return this.d.now?.() ?? Math.floor(Date.now() / 1000);
  }

  async #round(): Promise<void> {
    const records = await this.d.store.load();
    await this.#followReset(records);
    const split = findSplitView([{ who: this.name, c: this.#cosigned }, ...[...records.others].map(([cn, c]) => ({ who: `the witness of ${cn}`, c }))], this.d.sinkKeys);
    if (split) {
      this.d.sink.distrust(split);
      return this.#raise(split);
    }
    if (this.d.sink.distrusted) return this.#raise(this.d.sink.distrusted);
    let cp: SignedCheckpoint;
    try {
      cp = await this.d.sink.checkpoint();
    } catch (e) {
      if (this.d.sink.distrusted) return this.#raise(this.d.sink.distrusted);
      this.d.log.debug({ witness: this.name, err: (e as Error).message }, 'the audit sink gave no checkpoint this round');
      return;
    }
    if (this.d.initialized && !this.d.initialized()) return;
    const had = this.#cosigned;
    const now = this.#now();
    const grew = !had || had.checkpoint.tree_size < cp.tree_size || (had.checkpoint.tree_size === cp.tree_size && had.checkpoint.root_hash !== cp.root_hash);
    const stale = had !== undefined && now - (cosignatureTime(had.cosignatures[0] ?? '') ?? 0) >= (this.d.refreshSeconds ?? 60);
    if (grew || stale) {
      const note = checkpointNote(cp);
      const next: CosignedCheckpoint = { checkpoint: cp, note, cosignatures: [cosign(this.d.key.privateKey, this.name, note, now)] };
      const stored = await this.d.store.store(next, this.d.sinkKeys, this.#reset.revision);
      if (stored === 'fenced') return; // a reset came first: the next round follows it
      if (typeof stored === 'object') {
        this.d.sink.distrust(stored.problem);
        return this.#raise(stored.problem);
      }
      this.#cosigned = next;
    }
    await this.#publish();
  }

  async #publish(): Promise<void> {
    const c = this.#cosigned;
    const line = c?.cosignatures[0];
    const now = this.#now();
    if (!c || !line || line === this.#published?.line) return;
    if (this.#published && (now - this.#published.at) * 1000 <= COSIGNATURE_PUBLISH_INTERVAL_MS) return; // the sink takes one a caller per interval (whole seconds here: wait one more)
    try {
      await this.d.publish(c);
      this.#published = { line, at: now };
    } catch (e) {
      this.d.log.warn({ witness: this.name, treeSize: c.checkpoint.tree_size, err: (e as Error).message }, 'could not publish the cosigned checkpoint at the audit sink; trying again');
    }
  }

  /** Another replica's reset: re-anchor on its checkpoint, audit that, and start cosigning from there. */
  async #followReset(records: WitnessRecords): Promise<void> {
    const { reset, resetRevision: revision, resetRefused } = records;
    if (revision === this.#reset.revision) return;
    if (resetRefused) {
      // Refused and reported (integrity.record_refused) by the store; cosigning goes on from this replica's own anchor.
      this.#reset = { epoch: this.#reset.epoch, revision };
      this.d.log.error({ alert: WITNESS_ALARM, witness: this.name, reason: resetRefused, revision }, 'ALERT: a witness reset record that fails its integrity check is not followed');
      return;
    }
    if (!reset) return;
    if (checkpointProblem(reset.anchor, this.d.sinkKeys)) {
      // Not this sink's checkpoint (written against another sink, or forged): nothing to re-anchor on.
      this.#reset = { epoch: reset.epoch, revision };
      this.d.log.error({ witness: this.name, epoch: reset.epoch, revision }, 'a witness reset names a checkpoint the configured audit sink keys do not verify: not followed');
      return;
    }
    const previous = this.#cosigned?.checkpoint;
    const wasAlarm = this.#alarm ?? this.d.sink.distrusted ?? '';
    const problem = this.d.sink.reanchor(reset.anchor);
    if (problem) {
      this.#reset = { epoch: reset.epoch, revision };
      this.d.log.error({ alert: WITNESS_ALARM, witness: this.name, reason: problem, epoch: reset.epoch }, 'ALERT: the witness reset names a checkpoint this replica cannot verify; it keeps refusing');
      return;
    }
    const details: Record<string, string> = {
      epoch: String(reset.epoch),
      revision,
      by: String(reset.by).slice(0, 256),
      anchor_tree_size: String(reset.anchor.tree_size),
      anchor_root: reset.anchor.root_hash,
      anchor_time: reset.anchor.time,
      previous_tree_size: String(previous?.tree_size ?? 0),
      previous_root: previous?.root_hash ?? '',
      previous_alarm: wasAlarm.slice(0, 256),
    };
    try {
      await this.d.sink.record({ principal: this.name, operation: 'witness.reset.followed', result: 'ok', details });
    } catch (e) {
      // Not recorded, not followed: refuse as before, and try again next round.
      this.d.sink.distrust(wasAlarm || `the witness reset (epoch ${reset.epoch}) could not be audited: ${(e as Error).message}`);
      this.d.log.error({ witness: this.name, epoch: reset.epoch, err: (e as Error).message }, 'a witness reset could not be audited (witness.reset.followed): not followed yet');
      return;
    }
    this.#adopted(reset, revision, wasAlarm);
  }

  /** This replica now trusts from `reset.anchor` (already re-anchored). */
  #adopted(reset: ResetRecord, revision: string, previousAlarm: string): void {
    this.#reset = { epoch: reset.epoch, revision };
    this.#alarm = undefined;
    this.#cosigned = undefined;
    this.#published = undefined;
    this.d.log.warn({ witness: this.name, epoch: reset.epoch, by: reset.by, revision, treeSize: reset.anchor.tree_size, previousAlarm }, "witnesses reset by an operator: re-anchored on the audit sink's checkpoint");
  }

  #raise(reason: string): void {
    if (this.#alarm === reason) return;
    this.#alarm = reason;
    this.d.log.error(
      { alert: WITNESS_ALARM, witness: this.name, reason, cosignedTreeSize: this.#cosigned?.checkpoint.tree_size ?? 0 },
      'ALERT: the audit sink showed a checkpoint this witness cannot prove consistent with the one it cosigned; this replica acknowledges no audited operation until an admin runs `keyshard audit witness reset`',
    );
    const details = { reason: reason.slice(0, 256), witness: this.name, cosigned_tree_size: String(this.#cosigned?.checkpoint.tree_size ?? 0) };
    this.d.sink.record({ principal: this.name, operation: 'witness.alarm', result: 'error', details }).catch((e: Error) =>
      this.d.log.warn({ witness: this.name, err: e.message }, 'the witness alarm could not be audited (the sink is not trusted): it is in this log and in Status'),
    );
  }

  /**
   * An admin's reset after an alarm: this replica re-anchors on the sink's current checkpoint,
   * audits `witness.reset` with the old and new checkpoints through the new anchor (refusing the
   * reset if that fails), then writes the reset to etcd so every replica follows it.
   */
  async reset(principal: string, confirm: boolean): Promise<{ previous: SignedCheckpoint | undefined; anchor: SignedCheckpoint; previousAlarm: string }> {
    if (!confirm) throw invalidArgument('a witness reset trusts the audit sink\'s current log as it is: confirm it (confirm: true, `--confirm`)');
    await this.#running;
    const anchor = await this.d.sinkCheckpoint();
    const bad = checkpointProblem(anchor, this.d.sinkKeys);
    if (bad) throw failedPrecondition(`the audit sink's checkpoint does not verify under the configured sink keys: ${bad}`);
    const previous = this.#cosigned?.checkpoint;
    const previousAlarm = this.#alarm ?? this.d.sink.distrusted ?? '';
    const current = await this.d.store.reset();
    const problem = this.d.sink.reanchor(anchor);
    if (problem) throw failedPrecondition(problem);
    const details: Record<string, string> = {
      previous_tree_size: String(previous?.tree_size ?? 0),
      previous_root: previous?.root_hash ?? '',
      anchor_tree_size: String(anchor.tree_size),
      anchor_root: anchor.root_hash,
      anchor_time: anchor.time,
      previous_alarm: previousAlarm.slice(0, 256),
      epoch: String((current.reset?.epoch ?? 0) + 1),
    };
    try {
      await this.d.sink.record({ principal, operation: 'witness.reset', result: 'ok', details });
    } catch (e) {
      if (previousAlarm) this.d.sink.distrust(previousAlarm);
      throw e;
    }
    const written = await this.d.store.writeReset(anchor, principal, { epoch: current.reset?.epoch ?? 0, revision: current.revision });
    if (!written) {
      if (previousAlarm) this.d.sink.distrust(previousAlarm);
      throw failedPrecondition('another witness reset happened at the same time; look at `keyshard status` and try again');
    }
    this.#adopted(written.record, written.revision, previousAlarm);
    void this.tick();
    return { previous, anchor, previousAlarm };
  }
}
