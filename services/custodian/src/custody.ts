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
 *
 * Share sets and the authority of their peers records. Each set's peers record (custodians,
 * approval keys, threshold, vouch key) is stored with its share, with the generation whose
 * quorum admitted it (`parent`). A record speaks only for acts on its own lineage:
 *  - Set 1 (init) is taken only by a custodian holding no share of the cluster (or replacing
 *    the never-released share of a retried init).
 *  - A later set g comes only within the reshare / rotate-root ceremony c that makes it
 *    (`new_generation` = g, shown to this custodian, unexpired), and its peers must be the ones
 *    c binds (`custodians`, `threshold`, `new_peers_digest`). A custodian that holds ANY share
 *    of the cluster takes it only with a quorum of valid approvals of c (DeliverShare
 *    `approvals`) counted against its own stored record of the set c acts on (`generation`),
 *    which must be the record c binds (`previous_peers_digest`); g must be newer than every set
 *    it holds, and every held set newer than c's set must be a child of it (a crashed
 *    ceremony's half-made set). Without that the delivery is refused (PERMISSION_DENIED /
 *    FAILED_PRECONDITION naming the missing quorum), so one coordinator certificate cannot
 *    plant a set beside a real one.
 *  - New custodians. A custodian holding no share of the cluster has nothing to check a
 *    quorum against: the old set's keys would come from the caller, and the manifest that
 *    names them is MAC'd under the root, which a custodian cannot verify. It takes the set
 *    as the root of its custody of that cluster, unverified, and that is safe because of
 *    what any record may authorise: a ceremony's approvals are counted only against the
 *    record of the set it acts on (`generation`), and destroy then reaches only that set, sets
 *    older than it, and its own children (never a newer set that descends from another one).
 *    A planted first set therefore holds only the attacker's own bytes; a real set delivered
 *    later must verify against a faithful copy of the real record (both digests are bound by
 *    the real quorum), after which every set the planted records can reach is older than it
 *    or not its ancestor-by-approval, and no planted record can be made newer than it.
 *    What one coordinator certificate can still do to an EMPTY custodian is occupy it (the
 *    real reshare adding it is then refused, naming the record): a denial of service, never a
 *    destroyed or released real share.
 *  - Join vouches are checked with the vouch key of the ceremony's set, so a planted set could
 *    only vouch for releasing its own planted share, and none can be planted beside a real one.
 */
import {
  MAX_CEREMONY_LIFETIME_MS, MAX_JOIN_LIFETIME_MS, RELEASING_OPERATIONS, certifySuccessor, sealToEphemeral, x25519PublicKeyRaw, checkCeremonyForCustodian, isExpired, parseRecoveryPublicKey, peersDigest, successionStatement, tallyApprovals, verifySealNotice, verifyVouch, vouchStaleness,
  type Ceremony, type JoinVouch, type SealNotice, type Succession,
} from '@keyshard/crypto';
import { createPublicKey } from 'node:crypto';
import { clip, failedPrecondition, notFound, invalidArgument, permissionDenied } from '@keyshard/errors';
import type { CustodianToken } from '@keyshard/hsm';

export type Decision = 'pending' | 'released' | 'denied';

export interface ReleaseRecord {
  ceremony: Ceremony;
  status: Decision;
  releases: { coordinator_id: string; wrapped_share: Buffer }[];
  approval_signature: Buffer;
  reason: string;
  /** When this custodian first saw the ceremony, by its own clock (ms since the epoch). */
  first_seen: number;
  /**
   * When this custodian treats the ceremony as expired: min(claimed expires_at, first_seen + the
   * kind's maximum lifetime), never later, whatever the ceremony claims about its own creation.
   */
  deadline: number;
}

/** A share set's custodians and threshold, stored with the share (what a quorum is checked against). */
export interface ShareSetPeers {
  threshold: number;
  custodians: { id: string; approvalPublicKeyPem: string }[];
  /** The root's join-vouch public key (Ed25519 SPKI PEM); absent for sets delivered before vouches. */
  vouchPublicKeyPem?: string;
}

/** A peers record as stored: with the generation whose quorum admitted the set (absent: the first set this token took). */
interface StoredPeers extends ShareSetPeers {
  parent?: number;
}

export interface Delivery {
  clusterId: string;
  encryptedShare: Buffer;
  replace: boolean;
  generation: number;
  peers?: ShareSetPeers;
  ceremonyId?: string;
  /** generation > 1: the quorum's approvals of the ceremony, counted against the stored record of the set it acts on. */
  approvals?: Approvals;
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
      if (expired(known, now)) throw failedPrecondition(`ceremony ${clip(c.id)} has expired`, { reason: 'CEREMONY_EXPIRED', metadata: { ceremony_id: clip(c.id) } });
      // An earlier attempt failed: approve now — unless a release is in flight (answer it as pending, not as a refusal).
      if (known.status === 'pending' && this.#autoApproves(c) && !this.#releasing.has(c.id)) await this.approve(c.id, now);
      return known;
    }
    this.#prune(now);
    // The lifetime counts from this custodian's clock (first sight), never from the creation time the ceremony claims.
    const deadline = Math.min(Date.parse(c.expires_at), now + (c.operation === 'join' ? MAX_JOIN_LIFETIME_MS : MAX_CEREMONY_LIFETIME_MS));
    const record: ReleaseRecord = { ceremony: c, status: 'pending', releases: [], approval_signature: Buffer.alloc(0), reason: '', first_seen: now, deadline };
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
    const key = this.#record(c.cluster_id, generation)?.vouchPublicKeyPem;
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
        throw permissionDenied(`coordinator ${r.coordinator_id} has no transport key enrolled in this custodian's token matching the ceremony's (its security officer enrolls it: keyshard custodian enroll)`, { reason: 'NOT_ENROLLED' });
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
    if (!this.#token.shareClusterIds().includes(n.cluster_id)) throw failedPrecondition('this custodian holds no share of that cluster', { reason: 'WRONG_CLUSTER' });
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
    for (const [id, r] of this.#records) if (r.deadline + 3_600_000 < now) this.#records.delete(id);
  }

  get(id: string): ReleaseRecord {
    const r = this.#records.get(id);
    if (!r) throw notFound(`ceremony ${clip(id)} has not been proposed to this custodian`, { reason: 'CEREMONY_NOT_FOUND', metadata: { ceremony_id: clip(id) } });
    return r;
  }

  /** The stored peers record of a share set, if this token holds one. */
  #record(clusterId: string, generation: number): StoredPeers | undefined {
    const raw = this.#token.readPeers(clusterId, generation);
    return raw ? (JSON.parse(raw.toString()) as StoredPeers) : undefined;
  }

  /** How many of `approvals` are valid approvals of `c` by custodians of the set `p` records. */
  #tally(c: Ceremony, p: ShareSetPeers, approvals: Approvals, now: number): number {
    return tallyApprovals(c, p.custodians, approvals, now).approved.length;
  }

  /**
   * Takes a share. Generation 1 comes from init: only to a custodian holding no share of the
   * cluster, or replacing the share of a retried init (delivered by this process, never
   * released). A later generation comes only within the reshare or rotate-root ceremony that
   * makes it, with the peers it binds and, to a custodian holding shares of the cluster, a
   * quorum of approvals of it counted against the stored record of the set it acts on (header).
   */
  deliver(d: Delivery, now = Date.now()): void {
    const set = `${d.clusterId}#${d.generation}`;
    const held = this.#token.shareGenerations(d.clusterId);
    let parent: number | undefined;
    if (d.generation > 1) {
      if (d.replace) throw failedPrecondition(`share set ${d.generation} is never replaced; a retried reshare makes a new set`);
      const r = d.ceremonyId ? this.#records.get(d.ceremonyId) : undefined;
      const c = r?.ceremony;
      if (!r || !c || !NEW_SET.has(c.operation) || c.cluster_id !== d.clusterId || c.parameters.new_generation !== String(d.generation) || expired(r, now))
        throw failedPrecondition(`share set ${d.generation} is delivered only within the open reshare or rotate-root ceremony that makes it`);
      const from = generationOf(c);
      if (d.generation <= from) throw invalidArgument(`ceremony ${c.id} makes set ${d.generation} from the newer set ${from}`);
      if (!d.peers) throw invalidArgument(`share set ${d.generation} needs its peers record`);
      const ids = String(c.parameters.custodians ?? '').split(',');
      if (
        d.peers.threshold !== Number(c.parameters.threshold) || d.peers.custodians.length !== ids.length || !d.peers.custodians.every((p) => ids.includes(p.id)) ||
        peersDigest(d.peers.threshold, d.peers.custodians) !== c.parameters.new_peers_digest
      )
        throw permissionDenied(`share set ${d.generation}: the peers record is not the one ceremony ${c.id} binds (custodians, threshold, approval keys)`);
      if (held.length > 0) {
        // This custodian holds shares of the cluster: the set c acts on must be one it holds, and a quorum of it must have approved c.
        const old = this.#record(d.clusterId, from);
        if (!old) throw failedPrecondition(`share set ${d.generation} is made from set ${from}, of which this custodian holds no record (it holds ${held.join(', ')}): refused`);
        if (peersDigest(old.threshold, old.custodians) !== c.parameters.previous_peers_digest)
          throw permissionDenied(`share set ${d.generation}: ceremony ${c.id} names another set ${from} than the one this custodian holds`);
        const got = this.#tally(c, old, d.approvals ?? [], now);
        if (got < old.threshold)
          throw permissionDenied(`share set ${d.generation} needs a quorum of valid approvals of ${c.operation} ceremony ${c.id} by share set ${from}: got ${got} of ${old.threshold}`, { reason: 'QUORUM_NOT_MET' });
        const newest = Math.max(...held);
        if (d.generation <= newest) throw failedPrecondition(`share set ${d.generation} is not newer than set ${newest}, which this custodian holds`);
        const stray = held.filter((g) => g > from && this.#record(d.clusterId, g)?.parent !== from);
        if (stray.length) throw failedPrecondition(`this custodian holds set(s) ${stray.join(', ')}, newer than set ${from} and not made from it: refused`);
        parent = from;
      }
    } else {
      const others = held.filter((g) => g !== 1);
      const retry = d.replace && held.includes(1) && this.#provisional.has(set);
      if (others.length > 0 || (held.includes(1) && !retry))
        throw failedPrecondition(`this custodian holds a share of cluster ${d.clusterId} in use; a new set needs a reshare ceremony`);
    }
    if (d.peers) checkPeers(d.peers, this.#custodianId);
    this.#token.unwrapShare(d.clusterId, d.encryptedShare, { replace: d.replace, generation: d.generation });
    if (d.peers) this.#token.storePeers(d.clusterId, d.generation, Buffer.from(JSON.stringify(storedPeers(d.peers, parent))));
    this.#provisional.add(set);
  }

  pending(now = Date.now()): Ceremony[] {
    return [...this.#records.values()].filter((r) => r.status === 'pending' && !expired(r, now)).map((r) => r.ceremony);
  }

  async approve(id: string, now = Date.now()): Promise<ReleaseRecord> {
    const r = this.get(id);
    if (r.status !== 'pending') throw failedPrecondition(`ceremony ${id} was already ${r.status}`, { reason: 'CEREMONY_CLOSED' });
    if (expired(r, now)) throw failedPrecondition(`ceremony ${clip(id)} has expired`, { reason: 'CEREMONY_EXPIRED' });
    if (this.#releasing.has(id)) throw failedPrecondition(`ceremony ${id} is being released`, { reason: 'CEREMONY_IN_PROGRESS' });
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
      if (r.status !== 'pending') throw failedPrecondition(`ceremony ${id} was already ${r.status}`, { reason: 'CEREMONY_CLOSED' }); // denied meanwhile
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
    if (r.status !== 'pending') throw failedPrecondition(`ceremony ${id} was already ${r.status}`, { reason: 'CEREMONY_CLOSED' });
    r.status = 'denied';
    r.reason = reason;
    return r;
  }

  /**
   * Destroys share sets on a quorum's word, counted against the stored record of the set the
   * ceremony acts on (`generation`) only. It reaches that set, every older set, and the sets
   * made from it (a crashed ceremony's half-made set): for reshare / rotate-root those older
   * than the one it made; for destroy-cluster all of them. Never a newer set made from
   * another record (header). Returns the generations destroyed.
   */
  destroy(clusterId: string, ceremonyId: string, approvals: Approvals, now = Date.now()): number[] {
    const held = this.#token.shareGenerations(clusterId);
    if (held.length === 0) return []; // nothing held: nothing to check or destroy
    const c = this.#approvedCeremony(clusterId, ceremonyId, approvals, now, (op) => op === 'destroy-cluster' || NEW_SET.has(op), 'destroys no share');
    const from = generationOf(c);
    const reach = held.filter((g) => g <= from || this.#record(clusterId, g)?.parent === from);
    const doomed = c.operation === 'destroy-cluster' ? reach : reach.filter((g) => g < Number(c.parameters.new_generation));
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
    // An RSA public key of >= 3072 bits only (never a private key), whatever the coordinator sends.
    const recovery = parseRecoveryPublicKey(recoveryPublicKeyPem);
    if (recovery.fingerprint !== c.parameters.recovery_key_fingerprint)
      throw permissionDenied('the recovery key is not the one the ceremony approved');
    recoveryPublicKeyPem = recovery.publicKeyPem;
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
    if (peers) this.#token.storePeers(i.clusterId, i.generation, Buffer.from(JSON.stringify(storedPeers(peers, undefined))));
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
   * quorum of the share set it acts on (`generation`) — counted against the peers record stored
   * with that set, never against another held set's or keys the caller supplies.
   */
  #approvedCeremony(clusterId: string, ceremonyId: string, approvals: Approvals, now: number, allowed: (op: string) => boolean, refusal: string): Ceremony {
    const r = this.get(ceremonyId);
    const c = r.ceremony;
    if (c.cluster_id !== clusterId) throw invalidArgument(`ceremony ${ceremonyId} is for another cluster`, { reason: 'WRONG_CLUSTER' });
    if (!allowed(c.operation)) throw failedPrecondition(`a ${c.operation} ceremony ${refusal}`);
    if (expired(r, now)) throw failedPrecondition(`ceremony ${clip(ceremonyId)} has expired`, { reason: 'CEREMONY_EXPIRED' });
    const generation = generationOf(c);
    const record = this.#record(clusterId, generation);
    if (!record) throw failedPrecondition(`cannot check the quorum: this custodian holds no record of share set ${generation}, which ceremony ${ceremonyId} acts on`);
    const got = this.#tally(c, record, approvals, now);
    if (got < record.threshold) throw permissionDenied(`${c.operation} needs a quorum of valid approvals of share set ${generation}: got ${got} of ${record.threshold}`, { reason: 'QUORUM_NOT_MET' });
    return c;
  }
}

export interface ShareExport {
  wrappedShare: Buffer;
  generation: number;
  peersJson: string;
  successionStatement: Buffer;
}

/** Expired by its claimed expiry or by this custodian's own deadline (first sight + the kind's maximum lifetime), whichever comes first. */
function expired(r: ReleaseRecord, now: number): boolean {
  return !(now < r.deadline) || isExpired(r.ceremony, now);
}

/** Only the record's own fields (whatever else a caller sent), with the set's parent if a quorum admitted it. */
function storedPeers(p: ShareSetPeers, parent: number | undefined): StoredPeers {
  return {
    threshold: p.threshold,
    custodians: p.custodians.map((c) => ({ id: c.id, approvalPublicKeyPem: c.approvalPublicKeyPem })),
    ...(p.vouchPublicKeyPem !== undefined ? { vouchPublicKeyPem: p.vouchPublicKeyPem } : {}),
    ...(parent !== undefined ? { parent } : {}),
  };
}

function checkPeers(p: ShareSetPeers, self: string): void {
  const ok =
    Number.isInteger(p.threshold) && p.threshold >= 2 && Array.isArray(p.custodians) && p.custodians.length >= p.threshold && p.custodians.length <= 255 &&
    p.custodians.every((c) => typeof c.id === 'string' && typeof c.approvalPublicKeyPem === 'string' && c.approvalPublicKeyPem.includes('PUBLIC KEY')) &&
    (p.vouchPublicKeyPem === undefined || (typeof p.vouchPublicKeyPem === 'string' && p.vouchPublicKeyPem.length < 1024 && p.vouchPublicKeyPem.includes('PUBLIC KEY')));
  if (!ok) throw invalidArgument('peers: a threshold of at least 2 and that many custodians with approval keys');
  if (new Set(p.custodians.map((c) => c.id)).size !== p.custodians.length) throw invalidArgument('peers: a custodian is listed twice');
  if (!p.custodians.some((c) => c.id === self)) throw invalidArgument(`peers do not include this custodian (${self})`);
}
