/**
 * A custodian's share custody: which ceremonies it has been asked to serve and what it decided.
 *
 * Invariants: the share leaves the token only through C_WrapKey to a recipient key named in a
 * ceremony whose hash verifies, whose cluster this token holds a share for, and which has
 * not expired, and only after approval (policy `auto`, or an operator's `approve`). The
 * approval is an Ed25519 signature over the ceremony hash made inside the token. A ceremony
 * id re-proposed with different bound parameters is refused. Every recipient must be a
 * registered coordinator identity (this custodian's configured coordinators); a join ceremony
 * names exactly one recipient, the replica that proposes it. Unseal follows the approval
 * policy; join follows the join policy (auto-release to a registered replica asking for itself). Decisions are final for the life
 * of the process (kept in memory: a restarted custodian could be asked again within the
 * ceremony's lifetime; persisting them is part of the governance work).
 */
import { RELEASING_OPERATIONS, checkCeremonyForCustodian, isExpired, type Ceremony } from '@keyshard/crypto';
import { failedPrecondition, notFound, invalidArgument, permissionDenied } from '@keyshard/errors';
import type { CustodianToken } from '@keyshard/hsm';

export type Decision = 'pending' | 'released' | 'denied';

export interface ReleaseRecord {
  ceremony: Ceremony;
  status: Decision;
  releases: { coordinator_id: string; wrapped_share: Buffer }[];
  approval_signature: Buffer;
  reason: string;
}

const SUPPORTED = new Set(['unseal', 'join', 'destroy-key']);

export type Policy = 'auto' | 'manual';

export class Custody {
  #token: CustodianToken;
  #policy: { approval: Policy; join: Policy };
  #coordinators: ReadonlySet<string>;
  #records = new Map<string, ReleaseRecord>();
  /** Shares delivered by this process and never released yet: only these may be replaced (a retried init). */
  #provisional = new Set<string>();

  constructor(token: CustodianToken, policy: { approval: Policy; join: Policy }, coordinators: ReadonlySet<string>) {
    this.#token = token;
    this.#policy = policy;
    this.#coordinators = coordinators;
  }

  /** `proposer` is the caller's certificate identity (a registered coordinator). */
  propose(c: Ceremony, proposer: string, now = Date.now()): ReleaseRecord {
    checkCeremonyForCustodian(c, this.#token.shareClusterIds(), now);
    if (!SUPPORTED.has(c.operation)) throw failedPrecondition(`this custodian does not serve ${c.operation} ceremonies yet`);
    const stranger = c.recipients.find((r) => !this.#coordinators.has(r.coordinator_id));
    if (stranger) throw permissionDenied(`recipient ${stranger.coordinator_id} is not a registered coordinator`);
    if (c.operation === 'join' && (c.recipients.length !== 1 || c.recipients[0]!.coordinator_id !== proposer))
      throw permissionDenied('a join ceremony may only ask for shares for the replica that proposes it');
    const known = this.#records.get(c.id);
    if (known) {
      if (known.ceremony.hash !== c.hash) throw failedPrecondition(`ceremony ${c.id} was proposed before with other parameters`);
      if (known.status === 'pending' && this.#autoApproves(c)) this.approve(c.id, now); // an earlier attempt failed
      return known;
    }
    this.#prune(now);
    const record: ReleaseRecord = { ceremony: c, status: 'pending', releases: [], approval_signature: Buffer.alloc(0), reason: '' };
    this.#records.set(c.id, record);
    if (this.#autoApproves(c)) this.approve(c.id, now);
    return record;
  }

  #autoApproves(c: Ceremony): boolean {
    return (c.operation === 'join' ? this.#policy.join : this.#policy.approval) === 'auto';
  }

  /** Forgets decided or expired ceremonies an hour after their expiry: the map stays bounded. */
  #prune(now: number): void {
    for (const [id, r] of this.#records) if (Date.parse(r.ceremony.expires_at) + 3_600_000 < now) this.#records.delete(id);
  }

  get(id: string): ReleaseRecord {
    const r = this.#records.get(id);
    if (!r) throw notFound(`ceremony ${id} has not been proposed to this custodian`);
    return r;
  }

  /**
   * Takes a share delivered at init. Replacing an existing share is allowed only for a retried
   * init (delivered by this process, never released); anything else needs a quorum ceremony.
   */
  deliver(clusterId: string, encryptedShare: Buffer, replace: boolean): void {
    if (replace && this.#token.hasShare(clusterId) && !this.#provisional.has(clusterId))
      throw failedPrecondition(`a share for cluster ${clusterId} is in use; replacing it needs a reshare ceremony`);
    this.#token.unwrapShare(clusterId, encryptedShare, { replace });
    this.#provisional.add(clusterId);
  }

  pending(now = Date.now()): Ceremony[] {
    return [...this.#records.values()].filter((r) => r.status === 'pending' && !isExpired(r.ceremony, now)).map((r) => r.ceremony);
  }

  approve(id: string, now = Date.now()): ReleaseRecord {
    const r = this.get(id);
    if (r.status !== 'pending') throw failedPrecondition(`ceremony ${id} was already ${r.status}`);
    if (isExpired(r.ceremony, now)) throw failedPrecondition(`ceremony ${id} has expired`);
    const c = r.ceremony;
    // Approval-only operations (destroy-key): the signature is the whole answer; no share moves.
    r.releases = RELEASING_OPERATIONS.has(c.operation)
      ? c.recipients.map((rec) => ({ coordinator_id: rec.coordinator_id, wrapped_share: this.#token.wrapShare(c.cluster_id, rec.public_key_pem) }))
      : [];
    r.approval_signature = this.#token.signApproval(Buffer.from(c.hash, 'hex'));
    r.status = 'released';
    this.#provisional.delete(c.cluster_id);
    return r;
  }

  deny(id: string, reason: string): ReleaseRecord {
    if (!reason || reason.length > 500) throw invalidArgument('a denial needs a reason of at most 500 characters');
    const r = this.get(id);
    if (r.status !== 'pending') throw failedPrecondition(`ceremony ${id} was already ${r.status}`);
    r.status = 'denied';
    r.reason = reason;
    return r;
  }
}
