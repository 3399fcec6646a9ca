/**
 * What an audit producer believes about the sink's log: the last checkpoint it verified.
 * Every acknowledgement's checkpoint must (RFC 6962 §2.1.2 / RFC 9162 §2.1.4):
 *  - carry a valid Ed25519 signature under one of the sink keys the producer is configured
 *    with (checkpoint.ts), so a server without the sink's signing key cannot acknowledge;
 *  - cover the batch it acknowledges (first_index + count <= tree_size, head_hash = root);
 *  - be consistent with the last verified checkpoint: the size never shrinks (rollback), the
 *    same size has the same root (fork), and a larger tree comes with a consistency proof
 *    PROOF(last size, new size) that verifies from the last root to the new one (fork or
 *    rewrite of history).
 * The first mismatch is final: `problem` stays set and the producer stops acknowledging events
 * (AuditClient rejects everything with UNAVAILABLE: crypto calls go to the spool until it is
 * full, then are refused; ceremonies fail closed) until an operator has looked at the alert and
 * re-anchored it (`reanchor`), or the process restarts (and, on a coordinator, anchors again on
 * its witness record, so the problem comes back). A sink that lies once is not trusted again by the same process.
 *
 * Anchors: a fresh CheckpointTrust would take the first signed checkpoint it sees as the truth,
 * so a sink restored from an older copy of its folder while producers restart would go
 * unnoticed. `seed` anchors it on a checkpoint kept elsewhere (the coordinator's witness record
 * in etcd: services/coordinator/src/audit-witness/) before the first acknowledgement: the very
 * first one must then be that tree or a proven extension of it. `reanchor` is the operator's
 * way out after an alert (an audited witness reset): it replaces the anchor and clears the problem.
 */
import type { KeyObject } from 'node:crypto';
import { checkpointProblem, type SignedCheckpoint } from './checkpoint.ts';
import { verifyConsistency } from './merkle.ts';

/** What an acknowledgement carries about the log (AppendResponse). */
export interface AckReceipt {
  firstIndex: number;
  count: number;
  headHash: string;
  checkpoint: SignedCheckpoint | undefined;
  /** PROOF(knownSize, checkpoint.tree_size), the knownSize this producer sent with the batch. */
  consistency: readonly Uint8Array[];
}

export class CheckpointTrust {
  #last: SignedCheckpoint | undefined;
  #problem: string | undefined;

  constructor(private readonly keys: ReadonlyMap<string, KeyObject>) {
    if (keys.size === 0) throw new Error('the audit client needs at least one sink checkpoint public key');
  }

  /** The last verified checkpoint (undefined before the first acknowledgement). */
  get last(): SignedCheckpoint | undefined {
    return this.#last;
  }

  /** The tree size a batch sent now asks the sink to prove consistency from. */
  get knownSize(): number {
    return this.#last?.tree_size ?? 0;
  }

  /** Why acknowledgements are no longer trusted, once one failed; undefined while all verified. */
  get problem(): string | undefined {
    return this.#problem;
  }

  /**
   * Anchors a trust that has verified nothing yet on `cp` (a sink-signed checkpoint kept outside
   * the sink): the first acknowledgement must then prove consistency from it. Returns why `cp`
   * cannot be an anchor (bad signature, unknown key, already anchored); nothing changes then.
   */
  seed(cp: SignedCheckpoint): string | undefined {
    if (this.#last || this.#problem) return 'the trust is already anchored';
    const bad = checkpointProblem(cp, this.keys);
    if (bad) return `anchor checkpoint of size ${String(cp.tree_size)}: ${bad}`;
    this.#last = cp;
    return undefined;
  }

  /**
   * Replaces the anchor by `cp` and forgets the problem, if any: only after an operator decided
   * that the sink's current log is to be trusted from now on (an audited witness reset). Returns
   * why `cp` cannot be an anchor; nothing changes then.
   */
  reanchor(cp: SignedCheckpoint): string | undefined {
    const bad = checkpointProblem(cp, this.keys);
    if (bad) return `anchor checkpoint of size ${String(cp.tree_size)}: ${bad}`;
    this.#last = cp;
    this.#problem = undefined;
    return undefined;
  }

  /** Records a problem found outside an acknowledgement (e.g. a witness record larger than the sink's tree); the first one stays. */
  distrust(problem: string): void {
    this.#problem ??= problem;
  }

  /**
   * Verifies an acknowledgement of a batch sent when `knownSize` was the last verified size.
   * Returns undefined and advances on success; otherwise records and returns the problem.
   */
  accept(ack: AckReceipt, knownSize: number): string | undefined {
    if (this.#problem) return this.#problem;
    const problem = this.#check(ack, knownSize);
    if (problem) {
      this.#problem = problem;
      return problem;
    }
    this.#last = ack.checkpoint;
    return undefined;
  }

  #check(ack: AckReceipt, knownSize: number): string | undefined {
    const cp = ack.checkpoint;
    if (!cp) return 'the acknowledgement carries no checkpoint';
    const bad = checkpointProblem(cp, this.keys);
    if (bad) return `checkpoint of size ${String(cp.tree_size)}: ${bad}`;
    if (!Number.isSafeInteger(ack.firstIndex) || !Number.isSafeInteger(ack.count) || ack.firstIndex < 0 || ack.count < 0 || ack.firstIndex + ack.count > cp.tree_size)
      return `the acknowledged events ${ack.firstIndex}..${ack.firstIndex + ack.count - 1} are not in the signed tree of size ${cp.tree_size}`;
    if (ack.headHash !== cp.root_hash) return 'the acknowledgement head hash differs from its signed checkpoint';
    const last = this.#last;
    if (!last) return undefined; // nothing seen yet: the first signed checkpoint is the anchor
    if (knownSize !== last.tree_size) return `internal: batch sent against size ${knownSize}, last verified ${last.tree_size}`;
    if (cp.tree_size < last.tree_size) return `the log was rolled back: signed size ${cp.tree_size} after ${last.tree_size}`;
    if (cp.tree_size === last.tree_size) {
      return cp.root_hash === last.root_hash ? undefined : `the log forked: two roots signed for size ${cp.tree_size}`;
    }
    const ok = verifyConsistency(last.tree_size, cp.tree_size, Buffer.from(last.root_hash, 'hex'), Buffer.from(cp.root_hash, 'hex'), ack.consistency);
    return ok ? undefined : `the signed tree of size ${cp.tree_size} is not an extension of the one of size ${last.tree_size} (consistency proof does not verify)`;
  }
}
