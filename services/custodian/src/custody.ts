/**
 * A custodian's share custody: which ceremonies it has been asked to serve and what it decided.
 *
 * Invariants: the share leaves the token only through C_WrapKey to a recipient key named in a
 * ceremony whose hash verifies, whose cluster this token holds a share for, and which has
 * not expired, and only after approval (policy `auto`, or an operator's `approve`). The
 * approval is an Ed25519 signature over the ceremony hash made inside the token. A ceremony
 * id re-proposed with different bound parameters is refused. Decisions are final.
 */
import { checkCeremonyForCustodian, isExpired, type Ceremony } from '@keyshard/crypto';
import { failedPrecondition, notFound, invalidArgument } from '@keyshard/errors';
import type { CustodianToken } from '@keyshard/hsm';

export type Decision = 'pending' | 'released' | 'denied';

export interface ReleaseRecord {
  ceremony: Ceremony;
  status: Decision;
  releases: { coordinator_id: string; wrapped_share: Buffer }[];
  approval_signature: Buffer;
  reason: string;
}

const SUPPORTED = new Set(['unseal']);

export class Custody {
  #token: CustodianToken;
  #policy: 'auto' | 'manual';
  #records = new Map<string, ReleaseRecord>();

  constructor(token: CustodianToken, policy: 'auto' | 'manual') {
    this.#token = token;
    this.#policy = policy;
  }

  propose(c: Ceremony, now = Date.now()): ReleaseRecord {
    checkCeremonyForCustodian(c, this.#token.shareClusterIds(), now);
    if (!SUPPORTED.has(c.operation)) throw failedPrecondition(`this custodian does not serve ${c.operation} ceremonies yet`);
    const known = this.#records.get(c.id);
    if (known) {
      if (known.ceremony.hash !== c.hash) throw failedPrecondition(`ceremony ${c.id} was proposed before with other parameters`);
      return known;
    }
    const record: ReleaseRecord = { ceremony: c, status: 'pending', releases: [], approval_signature: Buffer.alloc(0), reason: '' };
    this.#records.set(c.id, record);
    if (this.#policy === 'auto') this.approve(c.id, now);
    return record;
  }

  get(id: string): ReleaseRecord {
    const r = this.#records.get(id);
    if (!r) throw notFound(`ceremony ${id} has not been proposed to this custodian`);
    return r;
  }

  pending(now = Date.now()): Ceremony[] {
    return [...this.#records.values()].filter((r) => r.status === 'pending' && !isExpired(r.ceremony, now)).map((r) => r.ceremony);
  }

  approve(id: string, now = Date.now()): ReleaseRecord {
    const r = this.get(id);
    if (r.status !== 'pending') throw failedPrecondition(`ceremony ${id} was already ${r.status}`);
    if (isExpired(r.ceremony, now)) throw failedPrecondition(`ceremony ${id} has expired`);
    const c = r.ceremony;
    r.releases = c.recipients.map((rec) => ({
      coordinator_id: rec.coordinator_id,
      wrapped_share: this.#token.wrapShare(c.cluster_id, rec.public_key_pem),
    }));
    r.approval_signature = this.#token.signApproval(Buffer.from(c.hash, 'hex'));
    r.status = 'released';
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
