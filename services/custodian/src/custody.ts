/**
 * A custodian's share custody: which ceremonies it has been asked to serve and what it decided.
 *
 * Invariants: the share leaves the token only through C_WrapKey to the transport key the token's
 * security officer enrolled (CKA_TRUSTED) for the recipient coordinator id — the token refuses
 * any other wrapping key — then sealed with HPKE (RFC 9180) to the recipient's per-ceremony X25519
 * key, bound to the ceremony hash, the coordinator id and this custodian (@keyshard/crypto hpke.ts);
 * a recipient without an enrolled transport key gets nothing (PERMISSION_DENIED naming it), and
 * a ceremony with such a recipient releases to none. All this for a recipient named in a
 * ceremony whose hash verifies, whose cluster this token holds a share for, and which has
 * not expired, and only after approval (policy `auto`, or an operator's `approve`). The
 * approval is an Ed25519 signature over the ceremony hash made inside the token. A ceremony
 * id re-proposed with different bound parameters is refused. Every recipient must be a
 * registered coordinator identity (this custodian's configured coordinators); a join ceremony
 * names exactly one recipient, the replica that proposes it. Unseal follows the approval
 * policy; join follows the join policy: `auto` releases only on a vouch (join-vouch.ts) by a
 * replica unsealed in a seal epoch no older than any this custodian has seen, verified against
 * the vouch key stored with the share set (never one the caller sends) — without one the join
 * is refused (an unseal ceremony is needed); `manual` waits for this custodian's operator, so a
 * join without a vouch needs a quorum of operators' approvals by hand. Decisions are final for the life
 * of the process (kept in memory: a restarted custodian could be asked again within the
 * ceremony's lifetime; persisting them is part of the governance work).
 */
import {
  RELEASING_OPERATIONS, certifySuccessor, sealToEphemeral, x25519PublicKeyRaw, checkCeremonyForCustodian, isExpired, recoveryKeyFingerprint, successionStatement, tallyApprovals, verifySealNotice, verifyVouch, vouchStaleness,
  type Ceremony, type JoinVouch, type SealNotice, type Succession,
} from '@keyshard/crypto';
import { createPublicKey } from 'node:crypto';
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

/** A share set's custodians and threshold, stored with the share (what a quorum is checked against). */
export interface ShareSetPeers {
  threshold: number;
  custodians: { id: string; approvalPublicKeyPem: string }[];
  /** The root's join-vouch public key (Ed25519 SPKI PEM); absent for sets delivered before vouches. */
  vouchPublicKeyPem?: string;
}

export interface Delivery {
  clusterId: string;
  encryptedShare: Buffer;
  replace: boolean;
  generation: number;
  peers?: ShareSetPeers;
  ceremonyId?: string;
}

const SUPPORTED = new Set(['unseal', 'join', 'destroy-key', 'reshare', 'rotate-root', 'destroy-cluster', 'recover', 'export-share']);
/** Ceremonies that make a new share set, delivered to the custodians in `parameters.custodians`. */
const NEW_SET = new Set(['reshare', 'rotate-root']);

export type Policy = 'auto' | 'manual';

/** Approvals of a ceremony as the coordinator passes them on (with a restored custodian's succession). */
export type Approvals = { custodianId: string; signature: Buffer; succession?: Succession | null }[];

/** The share generation a ceremony acts on (its `generation` parameter; 1 for clusters from before share sets). */
const generationOf = (c: Ceremony) => Number(c.parameters?.generation ?? '1') || 1;

export class Custody {
  #token: CustodianToken;
  #custodianId: string;
  #policy: { approval: Policy; join: Policy };
  #coordinators: ReadonlySet<string>;
  #records = new Map<string, ReleaseRecord>();
  /** Share sets delivered by this process and never released yet: only these may be replaced (a retried init or reshare). */
  #provisional = new Set<string>();
  #successions = new Map<string, Succession | null>();
  /** Per cluster, the highest seal epoch a valid vouch or seal notice named (notices also kept in the token): an older epoch's vouch is stale. */
  #vouchedEpochs = new Map<string, number>();
  /** Ceremonies whose release is being sealed (an await): a second approve meanwhile is refused. */
  #releasing = new Set<string>();

  constructor(token: CustodianToken, custodianId: string, policy: { approval: Policy; join: Policy }, coordinators: ReadonlySet<string>) {
    this.#token = token;
    this.#custodianId = custodianId;
    this.#policy = policy;
    this.#coordinators = coordinators;
  }

  /** `proposer` is the caller's certificate identity (a registered coordinator); `vouch` comes with a join. */
  async propose(c: Ceremony, proposer: string, now = Date.now(), vouch?: JoinVouch | null): Promise<ReleaseRecord> {
    // A custodian named in a new share set may hold no share of the cluster yet: it only receives.
    const joining = NEW_SET.has(c?.operation) && String(c.parameters?.custodians ?? '').split(',').includes(this.#custodianId);
    checkCeremonyForCustodian(c, joining ? [...this.#token.shareClusterIds(), c.cluster_id] : this.#token.shareClusterIds(), now);
    if (!SUPPORTED.has(c.operation)) throw failedPrecondition(`this custodian does not serve ${c.operation} ceremonies`);
    const stranger = c.recipients.find((r) => !this.#coordinators.has(r.coordinator_id));
    if (stranger) throw permissionDenied(`recipient ${stranger.coordinator_id} is not a registered coordinator`);
    if (c.operation === 'join' && (c.recipients.length !== 1 || c.recipients[0]!.coordinator_id !== proposer))
      throw permissionDenied('a join ceremony may only ask for shares for the replica that proposes it');
    if (c.operation === 'join' && this.#policy.join === 'auto') this.#checkVouch(c, vouch);
    if (RELEASING_OPERATIONS.has(c.operation)) this.#checkRecipientsEnrolled(c);
    const known = this.#records.get(c.id);
    if (known) {
      if (known.ceremony.hash !== c.hash) throw failedPrecondition(`ceremony ${c.id} was proposed before with other parameters`);
      // An earlier attempt failed: approve now — unless a release is in flight (answer it as pending, not as a refusal).
      if (known.status === 'pending' && this.#autoApproves(c) && !this.#releasing.has(c.id)) await this.approve(c.id, now);
      return known;
    }
    this.#prune(now);
    const record: ReleaseRecord = { ceremony: c, status: 'pending', releases: [], approval_signature: Buffer.alloc(0), reason: '' };
    this.#records.set(c.id, record);
    if (this.#autoApproves(c)) await this.approve(c.id, now);
    return record;
  }

  /**
   * joinPolicy auto: the join must carry a vouch by an unsealed replica, valid under the vouch key
   * of the share set's stored peers record, from a seal epoch no older than the newest seen.
   */
  #checkVouch(c: Ceremony, vouch: JoinVouch | null | undefined): void {
    const joiner = c.recipients[0]!.coordinator_id;
    if (!vouch || !vouch.voucher)
      throw failedPrecondition(`join of ${joiner} refused: no replica unsealed in the current seal epoch vouched for it; an unseal ceremony is needed`);
    const generation = generationOf(c);
    const raw = this.#token.readPeers(c.cluster_id, generation);
    const key = raw ? (JSON.parse(raw.toString()) as ShareSetPeers).vouchPublicKeyPem : undefined;
    if (!key) throw failedPrecondition(`join of ${joiner} refused: this custodian has no vouch key for share set ${generation}; an unseal ceremony is needed`);
    if (vouch.voucher === joiner) throw permissionDenied(`join of ${joiner} refused: a replica cannot vouch for itself`);
    if (!verifyVouch(c, vouch, key)) throw permissionDenied(`join of ${joiner} refused: the vouch of ${vouch.voucher.slice(0, 128)} does not verify against share set ${generation}'s vouch key`);
    const stale = vouchStaleness(vouch);
    if (stale) throw permissionDenied(`join of ${joiner} refused: ${stale}`);
    const seen = this.#knownEpoch(c.cluster_id);
    if (vouch.seal_epoch < seen) throw permissionDenied(`join of ${joiner} refused: the vouch is from seal epoch ${vouch.seal_epoch}, older than epoch ${seen} already seen`);
    this.#vouchedEpochs.set(c.cluster_id, vouch.seal_epoch);
  }

  /**
   * Every recipient of a releasing ceremony has an X25519 ephemeral key and a transport key that
   * this token's SO enrolled for its coordinator id: otherwise the ceremony is refused before
   * anything is released (the token would refuse the wrap anyway).
   */
  #checkRecipientsEnrolled(c: Ceremony): void {
    const enrolled = this.#token.listTrustedKeys().filter((k) => k.kind === 'transport');
    for (const r of c.recipients) {
      x25519PublicKeyRaw(r.ephemeral_public_key_pem ?? '', `ephemeral public key of recipient ${r.coordinator_id}`);
      let pem: string;
      try {
        pem = createPublicKey(r.public_key_pem).export({ type: 'spki', format: 'pem' }).toString();
      } catch {
        throw invalidArgument(`transport public key of recipient ${r.coordinator_id} is not a public key PEM`);
      }
      if (!enrolled.some((k) => k.name === r.coordinator_id && k.publicKeyPem === pem))
        throw permissionDenied(`coordinator ${r.coordinator_id} has no transport key enrolled in this custodian's token matching the ceremony's (its security officer enrolls it: keyshard custodian enroll)`);
    }
  }

  /** The highest seal epoch known for a cluster: from vouches seen and seal notices (persisted in the token). */
  #knownEpoch(clusterId: string): number {
    if (!this.#vouchedEpochs.has(clusterId)) this.#vouchedEpochs.set(clusterId, this.#token.readSealEpoch(clusterId));
    return this.#vouchedEpochs.get(clusterId)!;
  }

  /**
   * A seal notice from the replica that sealed the cluster, signed with the vouch key of a share
   * set this token holds: from now on vouches of older epochs are refused. Returns the epoch known.
   */
  noteSeal(n: SealNotice): number {
    if (!this.#token.shareClusterIds().includes(n.cluster_id)) throw failedPrecondition('this custodian holds no share of that cluster');
    if (!Number.isSafeInteger(n.generation) || n.generation < 1) throw invalidArgument('generation must be a positive integer');
    const raw = this.#token.readPeers(n.cluster_id, n.generation);
    const key = raw ? (JSON.parse(raw.toString()) as ShareSetPeers).vouchPublicKeyPem : undefined;
    if (!verifySealNotice(n, key)) throw permissionDenied(`the seal notice does not verify against share set ${n.generation}'s vouch key`);
    const known = this.#knownEpoch(n.cluster_id);
    if (n.seal_epoch > known) {
      this.#token.storeSealEpoch(n.cluster_id, n.seal_epoch);
      this.#vouchedEpochs.set(n.cluster_id, n.seal_epoch);
    }
    return Math.max(known, n.seal_epoch);
  }

  /** Auto-release by policy, and only by a custodian holding the share set the ceremony acts on. */
  #autoApproves(c: Ceremony): boolean {
    if ((c.operation === 'join' ? this.#policy.join : this.#policy.approval) !== 'auto') return false;
    return this.#token.hasShare(c.cluster_id, generationOf(c)); // a custodian outside the set (e.g. joining a reshare) never approves
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
   * Takes a share. Generation 1 comes from init: replacing it is allowed only for a retried init
   * (delivered by this process, never released). A later generation comes only within the
   * reshare or rotate-root ceremony that makes it, which this custodian must have been shown.
   */
  deliver(d: Delivery, now = Date.now()): void {
    const set = `${d.clusterId}#${d.generation}`;
    if (d.generation > 1) {
      const r = d.ceremonyId ? this.#records.get(d.ceremonyId) : undefined;
      const c = r?.ceremony;
      if (!c || !NEW_SET.has(c.operation) || c.cluster_id !== d.clusterId || c.parameters.new_generation !== String(d.generation) || isExpired(c, now))
        throw failedPrecondition(`share set ${d.generation} is delivered only within the open reshare or rotate-root ceremony that makes it`);
    }
    if (d.replace && this.#token.hasShare(d.clusterId, d.generation) && !this.#provisional.has(set))
      throw failedPrecondition(`a share for cluster ${d.clusterId} is in use; replacing it needs a reshare ceremony`);
    if (d.peers) checkPeers(d.peers, this.#custodianId);
    this.#token.unwrapShare(d.clusterId, d.encryptedShare, { replace: d.replace, generation: d.generation });
    if (d.peers) this.#token.storePeers(d.clusterId, d.generation, Buffer.from(JSON.stringify(d.peers)));
    this.#provisional.add(set);
  }

  pending(now = Date.now()): Ceremony[] {
    return [...this.#records.values()].filter((r) => r.status === 'pending' && !isExpired(r.ceremony, now)).map((r) => r.ceremony);
  }

  async approve(id: string, now = Date.now()): Promise<ReleaseRecord> {
    const r = this.get(id);
    if (r.status !== 'pending') throw failedPrecondition(`ceremony ${id} was already ${r.status}`);
    if (isExpired(r.ceremony, now)) throw failedPrecondition(`ceremony ${id} has expired`);
    if (this.#releasing.has(id)) throw failedPrecondition(`ceremony ${id} is being released`);
    const c = r.ceremony;
    const generation = generationOf(c);
    if (RELEASING_OPERATIONS.has(c.operation) && !this.#token.hasShare(c.cluster_id, generation))
      throw failedPrecondition(`this custodian holds no share of set ${generation} of cluster ${c.cluster_id} to release`);
    this.#releasing.add(id);
    try {
      // Approval-only operations (destroy-key, destroy-cluster): the signature is the whole answer; no share moves.
      // Every recipient is wrapped (the token refuses any but its enrolled transport key) before any release is kept.
      const wrapped = RELEASING_OPERATIONS.has(c.operation)
        ? c.recipients.map((rec) => ({ rec, blob: this.#token.wrapShare(c.cluster_id, { kind: 'transport', name: rec.coordinator_id }, rec.public_key_pem, generation) }))
        : [];
      const releases = [];
      for (const { rec, blob } of wrapped) {
        const binding = { ceremonyHash: c.hash, coordinatorId: rec.coordinator_id, custodianId: this.#custodianId };
        releases.push({ coordinator_id: rec.coordinator_id, wrapped_share: await sealToEphemeral(rec.ephemeral_public_key_pem, blob, binding) });
      }
      if (r.status !== 'pending') throw failedPrecondition(`ceremony ${id} was already ${r.status}`); // denied meanwhile
      r.releases = releases;
      r.approval_signature = this.#token.signApproval(Buffer.from(c.hash, 'hex'));
      r.status = 'released';
    } finally {
      this.#releasing.delete(id);
    }
    this.#provisional.delete(`${c.cluster_id}#${generation}`);
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

  /**
   * Destroys share sets on a quorum's word: every generation for destroy-cluster; for reshare /
   * rotate-root every generation older than the one it made (the retired set, and any set a
   * crashed ceremony left half-made). The approvals are counted against the peers records of
   * sets this token holds, stored when they were delivered (the ceremony's own set first) —
   * never against keys the caller supplies. Returns the generations destroyed.
   */
  destroy(clusterId: string, ceremonyId: string, approvals: { custodianId: string; signature: Buffer }[], now = Date.now()): number[] {
    const held = this.#token.shareGenerations(clusterId);
    if (held.length === 0) return []; // nothing held: nothing to check or destroy
    const c = this.#approvedCeremony(clusterId, ceremonyId, approvals, now, (op) => op === 'destroy-cluster' || NEW_SET.has(op), 'destroys no share');
    const doomed = c.operation === 'destroy-cluster' ? held : held.filter((g) => g < Number(c.parameters.new_generation));
    for (const g of doomed) this.#token.destroyShare(clusterId, g);
    return doomed;
  }

  /**
   * Custodian recovery, export side: only for an export-share ceremony that names this
   * custodian and the given recovery key, approved by a quorum of the share set (counted
   * against its stored peers record). The share leaves wrapped (RSA-OAEP) to the recovery key.
   */
  exportShare(clusterId: string, ceremonyId: string, recoveryPublicKeyPem: string, approvals: Approvals, now = Date.now()): ShareExport {
    const c = this.#approvedCeremony(clusterId, ceremonyId, approvals, now, (op) => op === 'export-share', 'exports no share');
    if (c.parameters.custodian !== this.#custodianId) throw permissionDenied(`ceremony ${ceremonyId} exports the share of ${c.parameters.custodian}, not of this custodian`);
    if (recoveryKeyFingerprint(recoveryPublicKeyPem) !== c.parameters.recovery_key_fingerprint)
      throw permissionDenied('the recovery key is not the one the ceremony approved');
    const generation = generationOf(c);
    const peers = this.#token.readPeers(clusterId, generation);
    return {
      // The recovery key must be SO-enrolled as a trusted key too (kind recovery), or the token refuses.
      wrappedShare: this.#token.wrapShare(clusterId, { kind: 'recovery', name: c.parameters.recovery_key_fingerprint! }, recoveryPublicKeyPem, generation),
      generation,
      peersJson: peers ? peers.toString() : '',
      // "Whoever holds this recovery key may name my successor", signed by this token's approval key.
      successionStatement: this.#token.signApproval(successionStatement(clusterId, this.#custodianId, recoveryPublicKeyPem)),
    };
  }

  /**
   * Custodian recovery, import side (a new token): the share exported for this custodian is
   * unwrapped inside the token with the recovery private key. Refused if the token already
   * holds that share set, or if the export was made for another custodian.
   */
  importShare(i: {
    clusterId: string;
    custodianId: string;
    generation: number;
    wrappedShare: Buffer;
    peersJson: string;
    recoveryPrivateKeyPem: string;
    successionStatement: Buffer;
  }): void {
    if (i.custodianId !== this.#custodianId) throw permissionDenied(`the export is of custodian ${i.custodianId}; this is ${this.#custodianId}`);
    if (!Number.isInteger(i.generation) || i.generation < 1) throw invalidArgument('generation must be a positive integer');
    let peers: ShareSetPeers | undefined;
    if (i.peersJson) {
      try {
        peers = JSON.parse(i.peersJson) as ShareSetPeers;
      } catch {
        throw invalidArgument('peers_json is not JSON');
      }
      checkPeers(peers, this.#custodianId);
    }
    if (this.#token.hasShare(i.clusterId, i.generation)) throw failedPrecondition(`this token already holds share set ${i.generation} of cluster ${i.clusterId}`);
    this.#token.importRecoveredShare(i.clusterId, i.wrappedShare, i.recoveryPrivateKeyPem, i.generation);
    if (peers) this.#token.storePeers(i.clusterId, i.generation, Buffer.from(JSON.stringify(peers)));
    if (i.successionStatement.length > 0) {
      // The recovery key certifies this token's approval key as the successor of the one the set records.
      const approvalPublicKeyPem = this.#token.ensureIdentity().approvalPublicKeyPem;
      const recoveryPublicKeyPem = createPublicKey(i.recoveryPrivateKeyPem).export({ type: 'spki', format: 'pem' }).toString();
      const record = {
        statement_signature: i.successionStatement.toString('base64'),
        recovery_public_key_pem: recoveryPublicKeyPem,
        certificate: certifySuccessor(i.recoveryPrivateKeyPem, i.clusterId, this.#custodianId, approvalPublicKeyPem).toString('base64'),
        approval_public_key_pem: approvalPublicKeyPem,
      };
      this.#token.storeSuccession(i.clusterId, Buffer.from(JSON.stringify(record)));
      this.#successions.delete(i.clusterId);
    }
  }

  /** This custodian's succession record for a cluster, if it was restored from a recovery export. */
  succession(clusterId: string): Succession | null {
    if (!this.#successions.has(clusterId)) {
      const raw = this.#token.readSuccession(clusterId);
      const r = raw ? (JSON.parse(raw.toString()) as Record<string, string>) : undefined;
      this.#successions.set(
        clusterId,
        r ? { statement_signature: Buffer.from(r.statement_signature!, 'base64'), recovery_public_key_pem: r.recovery_public_key_pem!, certificate: Buffer.from(r.certificate!, 'base64'), approval_public_key_pem: r.approval_public_key_pem! } : null,
      );
    }
    return this.#successions.get(clusterId)!;
  }

  /**
   * A ceremony this custodian was shown, of an allowed kind, unexpired, whose `approvals` make a
   * quorum of a share set this token holds — counted against the peers records stored with
   * the shares (the ceremony's own set first), never against keys the caller supplies.
   */
  #approvedCeremony(clusterId: string, ceremonyId: string, approvals: Approvals, now: number, allowed: (op: string) => boolean, refusal: string): Ceremony {
    const c = this.get(ceremonyId).ceremony;
    if (c.cluster_id !== clusterId) throw invalidArgument(`ceremony ${ceremonyId} is for another cluster`);
    if (!allowed(c.operation)) throw failedPrecondition(`a ${c.operation} ceremony ${refusal}`);
    if (isExpired(c, now)) throw failedPrecondition(`ceremony ${ceremonyId} has expired`);
    const generation = generationOf(c);
    const held = this.#token.shareGenerations(clusterId);
    const records = [generation, ...held.filter((g) => g !== generation)]
      .map((g) => this.#token.readPeers(clusterId, g))
      .filter((r): r is Buffer => r !== undefined)
      .map((r) => JSON.parse(r.toString()) as ShareSetPeers);
    if (records.length === 0) throw failedPrecondition(`cannot check the quorum: this custodian holds no record of share set ${generation}`);
    const tallies = records.map((p) => ({ need: p.threshold, got: tallyApprovals(c, p.custodians, approvals, now).approved.length }));
    if (!tallies.some((t) => t.got >= t.need))
      throw permissionDenied(`${c.operation} needs a quorum of valid approvals: got ${tallies[0]!.got} of ${tallies[0]!.need}`);
    return c;
  }
}

export interface ShareExport {
  wrappedShare: Buffer;
  generation: number;
  peersJson: string;
  successionStatement: Buffer;
}

function checkPeers(p: ShareSetPeers, self: string): void {
  const ok =
    Number.isInteger(p.threshold) && p.threshold >= 2 && Array.isArray(p.custodians) && p.custodians.length >= p.threshold && p.custodians.length <= 255 &&
    p.custodians.every((c) => typeof c.id === 'string' && typeof c.approvalPublicKeyPem === 'string' && c.approvalPublicKeyPem.includes('PUBLIC KEY')) &&
    (p.vouchPublicKeyPem === undefined || (typeof p.vouchPublicKeyPem === 'string' && p.vouchPublicKeyPem.length < 1024 && p.vouchPublicKeyPem.includes('PUBLIC KEY')));
  if (!ok) throw invalidArgument('peers: a threshold of at least 2 and that many custodians with approval keys');
  if (!p.custodians.some((c) => c.id === self)) throw invalidArgument(`peers do not include this custodian (${self})`);
}
