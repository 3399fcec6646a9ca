/**
 * The ceremony object (brief, "Ceremonies"): a bound, time-boxed request for custodians.
 *
 * Bound fields: id, operation, parameters, cluster id, initiator, created/expiry times,
 * nonce, recipients (each replica's transport public key and its per-ceremony X25519 key) and threshold. Their SHA-256 over
 * a canonical JSON encoding is the ceremony hash; custodians sign exactly that hash with
 * their HSM approval key (Ed25519, RFC 8032), so parameters cannot change after approval
 * without the signature failing. The random nonce makes every ceremony's hash unique, so an
 * approval of one ceremony does not verify for another. State fields are not bound.
 * Custodians check that recipients are registered coordinator identities (services/custodian).
 * Not yet: the initiator's own signature over the object.
 * The wire shape is the proto `keyshard.v1.Ceremony` message (snake_case) as is.
 * Frozen vectors: packages/crypto/vectors/ceremony.json (layout in packages/crypto/VECTORS.md).
 */
import { createHash, randomBytes, randomUUID, verify } from 'node:crypto';
import { clip, failedPrecondition, invalidArgument, quote } from '@keyshard/errors';
import { canonicalJson } from './canonical-json.ts';
import { approvalKeyOf, type Succession } from './succession.ts';

export type CeremonyState = 'CEREMONY_STATE_OPEN' | 'CEREMONY_STATE_COMPLETED' | 'CEREMONY_STATE_FAILED' | 'CEREMONY_STATE_EXPIRED' | 'CEREMONY_STATE_CANCELLED';

export interface Recipient {
  coordinator_id: string;
  /** The coordinator's long-term RSA transport public key (SPKI PEM), SO-enrolled as trusted in every custodian token. */
  public_key_pem: string;
  /** The recipient replica's X25519 key for this ceremony only (SPKI PEM): the forward-secret layer (hpke.ts). */
  ephemeral_public_key_pem: string;
}

/**
 * A custodian that refused the ceremony, or whose answer was rejected: `reason` in words,
 * `error_reason` a keyshard error reason (WRONG_CLUSTER, NOT_ENROLLED, …; '' in records made
 * before it existed).
 */
export interface ShareFailure {
  custodian_id: string;
  reason: string;
  error_reason: string;
}

export interface Ceremony {
  id: string;
  operation: string;
  parameters: Record<string, string>;
  cluster_id: string;
  initiator: string;
  created_at: string;
  expires_at: string;
  nonce: string;
  recipients: Recipient[];
  threshold: number;
  hash: string;
  state: CeremonyState;
  approved_by: string[];
  failures: ShareFailure[];
  denied_by: string[];
  /** Why it ended unless completed: in words, and as a keyshard error reason (QUORUM_NOT_MET, CEREMONY_EXPIRED, …). */
  error: string;
  error_reason: string;
}

export const OPERATIONS = ['unseal', 'join', 'reshare', 'rotate-root', 'destroy-key', 'destroy-cluster', 'recover', 'export-share'] as const;

/** Operations whose approval releases a share to the recipients; the others are approvals only. */
export const RELEASING_OPERATIONS: ReadonlySet<string> = new Set(['unseal', 'join', 'recover']);

/** A state as one lowercase word: open, completed, failed, expired, cancelled. */
export const stateName = (state: CeremonyState): string => state.replace('CEREMONY_STATE_', '').toLowerCase();

export function ceremonyHash(c: Ceremony): string {
  const bound = {
    id: c.id,
    operation: c.operation,
    parameters: c.parameters ?? {},
    cluster_id: c.cluster_id,
    initiator: c.initiator,
    created_at: c.created_at,
    expires_at: c.expires_at,
    nonce: c.nonce,
    recipients: (c.recipients ?? []).map((r) => ({ coordinator_id: r.coordinator_id, public_key_pem: r.public_key_pem, ephemeral_public_key_pem: r.ephemeral_public_key_pem ?? '' })),
    threshold: c.threshold,
  };
  return createHash('sha256').update('keyshard/v1/ceremony\0').update(canonicalJson(bound)).digest('hex');
}

export function newCeremony(init: {
  operation: string;
  parameters?: Record<string, string>;
  clusterId: string;
  initiator: string;
  ttlSeconds: number;
  recipients: Recipient[];
  threshold: number;
  now?: number;
}): Ceremony {
  if (!(OPERATIONS as readonly string[]).includes(init.operation)) throw invalidArgument(`unknown ceremony operation ${quote(init.operation)}`);
  const now = init.now ?? Date.now();
  const c: Ceremony = {
    id: `cer-${randomUUID()}`,
    operation: init.operation,
    parameters: init.parameters ?? {},
    cluster_id: init.clusterId,
    initiator: init.initiator,
    created_at: new Date(now).toISOString(),
    expires_at: new Date(now + init.ttlSeconds * 1000).toISOString(),
    nonce: randomBytes(16).toString('hex'),
    recipients: init.recipients,
    threshold: init.threshold,
    hash: '',
    state: 'CEREMONY_STATE_OPEN',
    approved_by: [],
    failures: [],
    denied_by: [],
    error: '',
    error_reason: '',
  };
  c.hash = ceremonyHash(c);
  return c;
}

export const MAX_CEREMONY_LIFETIME_MS = 7 * 24 * 3600 * 1000;

/** Past its expiry — or with an expiry that is not a time at all (never "never expires"). */
export function isExpired(c: Ceremony, now = Date.now()): boolean {
  return !(Date.parse(c.expires_at) > now);
}

/** How far a ceremony's creation time may be ahead of a custodian's clock. */
export const MAX_CLOCK_SKEW_MS = 60_000;
/** A join asks for shares for one restarted replica: it never needs long, so a vouch for it cannot linger. */
export const MAX_JOIN_LIFETIME_MS = 15 * 60 * 1000;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?Z$/;

function checkTimes(c: Ceremony, now: number): void {
  if (typeof c.created_at !== 'string' || !ISO_UTC.test(c.created_at) || typeof c.expires_at !== 'string' || !ISO_UTC.test(c.expires_at))
    throw invalidArgument(`ceremony ${clip(String(c.id))}: created_at and expires_at must be UTC ISO 8601 times`);
  const created = Date.parse(c.created_at);
  const expires = Date.parse(c.expires_at);
  if (!Number.isFinite(created) || !Number.isFinite(expires) || expires <= created) throw invalidArgument(`ceremony ${clip(c.id)}: expires_at must be a time after created_at`);
  if (created > now + MAX_CLOCK_SKEW_MS) throw invalidArgument(`ceremony ${clip(c.id)} claims to be created in the future (more than ${MAX_CLOCK_SKEW_MS / 1000} s ahead of this clock)`);
  const max = c.operation === 'join' ? MAX_JOIN_LIFETIME_MS : MAX_CEREMONY_LIFETIME_MS;
  if (expires - created > max || expires - now > max) throw invalidArgument(`ceremony ${clip(c.id)} would stay open longer than ${max / 60_000} minutes`);
}

/**
 * What a custodian checks before it shows or approves a ceremony: the hash matches the
 * bound fields, it is for a cluster this custodian holds a share of, its times are real UTC
 * times, it was not created ahead of this clock (beyond a skew), it stays open no longer than
 * its kind allows (7 days; a join 15 minutes) counted from this clock too, and it has not expired.
 */
export function checkCeremonyForCustodian(c: Ceremony, clusterIds: string[], now = Date.now()): void {
  if (!c || typeof c.id !== 'string' || !c.id) throw invalidArgument('ceremony is missing');
  if (ceremonyHash(c) !== c.hash) throw invalidArgument('ceremony hash does not match its parameters');
  if (!clusterIds.includes(c.cluster_id)) throw failedPrecondition(`ceremony ${clip(c.id)} belongs to another cluster`, { reason: 'WRONG_CLUSTER', metadata: { ceremony_id: clip(c.id) } });
  checkTimes(c, now);
  if (isExpired(c, now)) throw failedPrecondition(`ceremony ${clip(c.id)} has expired`, { reason: 'CEREMONY_EXPIRED', metadata: { ceremony_id: clip(c.id) } });
  if (!Array.isArray(c.recipients)) throw invalidArgument('ceremony recipients are missing');
  if (RELEASING_OPERATIONS.has(c.operation) ? c.recipients.length === 0 : c.recipients.length > 0)
    throw invalidArgument(RELEASING_OPERATIONS.has(c.operation) ? 'ceremony names no recipients' : `a ${c.operation} ceremony releases no share and names no recipients`);
}

export interface ApprovalTally {
  approved: string[]; // custodian ids, each once
  refused: { custodian_id: string; reason: string }[];
}

/**
 * Counts the approvals of a ceremony: one per custodian of `custodians` (the share manifest)
 * whose HSM signature over this ceremony's hash verifies. A duplicate counts once; a signature
 * made for another ceremony (a replayed approval) does not verify, since every hash covers a
 * fresh id and nonce; after expiry nothing counts.
 */
export function tallyApprovals(
  c: Ceremony,
  custodians: readonly { id: string; approvalPublicKeyPem: string }[],
  approvals: readonly { custodianId: string; signature: Buffer; succession?: Succession | null }[],
  now = Date.now(),
): ApprovalTally {
  const tally: ApprovalTally = { approved: [], refused: [] };
  for (const a of approvals) {
    if (tally.approved.includes(a.custodianId)) continue;
    const entry = custodians.find((m) => m.id === a.custodianId);
    let reason = '';
    if (isExpired(c, now)) reason = 'the ceremony had expired';
    else if (!entry) reason = 'custodian is not in the share manifest';
    else if (!verifyApproval(c, approvalKeyOf(c.cluster_id, entry, a.succession), a.signature)) reason = 'approval signature does not verify for this ceremony';
    if (reason) tally.refused.push({ custodian_id: a.custodianId, reason });
    else tally.approved.push(a.custodianId);
  }
  return tally;
}

/** Verifies a custodian's Ed25519 approval signature over the ceremony hash. */
export function verifyApproval(c: Ceremony, approvalPublicKeyPem: string, signature: Buffer): boolean {
  try {
    return verify(null, Buffer.from(c.hash, 'hex'), approvalPublicKeyPem, signature);
  } catch {
    return false;
  }
}
