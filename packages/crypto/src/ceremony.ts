/**
 * The ceremony object (brief, "Ceremonies"): a bound, time-boxed request for custodians.
 *
 * Bound fields: id, operation, parameters, cluster id, initiator, created/expiry times,
 * nonce, recipients (the replicas' ephemeral public keys) and threshold. Their SHA-256 over
 * a canonical JSON encoding is the ceremony hash; custodians sign exactly that hash with
 * their HSM approval key (Ed25519, RFC 8032), so parameters cannot change after approval
 * without the signature failing. The random nonce makes every ceremony's hash unique, so an
 * approval of one ceremony does not verify for another. State fields are not bound.
 * Not yet: the initiator's own signature over the object, and custodians checking that
 * recipients are registered replicas (the governance issue) — today any coordinator
 * identity may propose.
 * The wire shape is the proto `keyshard.v1.Ceremony` message (snake_case) as is.
 */
import { createHash, randomBytes, randomUUID, verify } from 'node:crypto';
import { failedPrecondition, invalidArgument } from '@keyshard/errors';
import { canonicalJson } from './canonical-json.ts';

export type CeremonyState = 'CEREMONY_STATE_OPEN' | 'CEREMONY_STATE_COMPLETED' | 'CEREMONY_STATE_FAILED' | 'CEREMONY_STATE_EXPIRED' | 'CEREMONY_STATE_CANCELLED';

export interface Recipient {
  coordinator_id: string;
  public_key_pem: string;
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
  failures: { custodian_id: string; reason: string }[];
  denied_by: string[];
  error: string;
}

export const OPERATIONS = ['unseal', 'join', 'reshare', 'rotate-root', 'destroy-key', 'destroy-cluster', 'recover'] as const;

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
    recipients: (c.recipients ?? []).map((r) => ({ coordinator_id: r.coordinator_id, public_key_pem: r.public_key_pem })),
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
  if (!(OPERATIONS as readonly string[]).includes(init.operation)) throw invalidArgument(`unknown ceremony operation ${init.operation}`);
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
  };
  c.hash = ceremonyHash(c);
  return c;
}

export const MAX_CEREMONY_LIFETIME_MS = 7 * 24 * 3600 * 1000;

export function isExpired(c: Ceremony, now = Date.now()): boolean {
  return Date.parse(c.expires_at) <= now;
}

/**
 * What a custodian checks before it shows or approves a ceremony: the hash matches the
 * bound fields, it is for a cluster this custodian holds a share of, and it has not expired.
 */
export function checkCeremonyForCustodian(c: Ceremony, clusterIds: string[], now = Date.now()): void {
  if (!c || typeof c.id !== 'string' || !c.id) throw invalidArgument('ceremony is missing');
  if (ceremonyHash(c) !== c.hash) throw invalidArgument('ceremony hash does not match its parameters');
  if (!clusterIds.includes(c.cluster_id)) throw failedPrecondition(`ceremony ${c.id} belongs to another cluster`);
  if (isExpired(c, now)) throw failedPrecondition(`ceremony ${c.id} has expired`);
  if (Date.parse(c.expires_at) - Date.parse(c.created_at) > MAX_CEREMONY_LIFETIME_MS)
    throw invalidArgument(`ceremony ${c.id} would stay open longer than 7 days`);
  if (!Array.isArray(c.recipients) || c.recipients.length === 0) throw invalidArgument('ceremony names no recipients');
}

/** Verifies a custodian's Ed25519 approval signature over the ceremony hash. */
export function verifyApproval(c: Ceremony, approvalPublicKeyPem: string, signature: Buffer): boolean {
  try {
    return verify(null, Buffer.from(c.hash, 'hex'), approvalPublicKeyPem, signature);
  } catch {
    return false;
  }
}
