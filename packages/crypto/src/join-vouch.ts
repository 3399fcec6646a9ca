/**
 * Join vouches (brief, "Ceremonies": a replica that restarts rejoins only on proof that an
 * unsealed peer vouches for it).
 *
 * A vouch is an Ed25519 signature (RFC 8032, pure) by the root's `join-vouch` key
 * (`rootSigningKey`: an HKDF-SHA256 subkey of the root used as the seed), so only a replica
 * that holds the root — one that is unsealed — can make one. It signs
 *
 *   "keyshard/v1/join-vouch\0" || canonical JSON of
 *   { cluster_id, ceremony_id, ceremony_hash, generation, joiner, joiner_key_sha256, not_after, seal_epoch, voucher }
 *
 * binding the join ceremony (its hash covers the recipient's keys, expiry and nonce), the share
 * set, the joining replica and the SHA-256 of its transport public key PEM, the seal epoch the
 * voucher is unsealed in, the voucher's identity, and the time after which the vouch is void
 * (`not_after`, at most VOUCH_VALIDITY_MS ahead of the custodian's clock): a vouch made just
 * before a seal is dead within minutes of it, whatever the ceremony's own expiry says. The public key travels in the share
 * manifest (MAC'd under the root) and in every custodian's record of its share set, delivered
 * with the share; custodians verify against that record, never against a key the caller sends.
 * A vouch cannot be replayed: every ceremony hash is unique (fresh id and nonce).
 * Frozen vector: packages/crypto/vectors/join-vouch.json.
 */
import { createHash, createPublicKey, sign, verify } from 'node:crypto';
import { MAX_CLOCK_SKEW_MS } from './ceremony.ts';
import { canonicalJson } from './canonical-json.ts';
import { rootSigningKey } from './key-hierarchy.ts';
import type { Ceremony } from './ceremony.ts';

export const JOIN_VOUCH_PURPOSE = 'join-vouch';
/** How long a vouch lives: the joiner proposes as soon as it has one. */
export const VOUCH_VALIDITY_MS = 2 * 60 * 1000;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?Z$/;

export interface JoinVouch {
  /** Coordinator id of the unsealed replica that vouches. */
  voucher: string;
  /** The seal epoch the voucher was unsealed in when it signed. */
  seal_epoch: number;
  /** UTC ISO time after which the vouch is void. */
  not_after: string;
  /** Ed25519 signature over `vouchMessage`. */
  signature: Buffer;
}

/** The public key (SPKI PEM) custodians check vouches with, derived from the root. */
export function vouchPublicKeyPem(root: Buffer): string {
  const { publicDer } = rootSigningKey(root, JOIN_VOUCH_PURPOSE);
  return createPublicKey({ key: publicDer, format: 'der', type: 'spki' }).export({ type: 'spki', format: 'pem' }).toString();
}

/** The signed bytes. The joiner is the ceremony's single recipient. */
export function vouchMessage(c: Ceremony, voucher: string, sealEpoch: number, notAfter: string): Buffer {
  const joiner = c.recipients?.[0];
  const body = {
    cluster_id: c.cluster_id,
    ceremony_id: c.id,
    ceremony_hash: c.hash,
    generation: c.parameters?.generation ?? '1',
    joiner: joiner?.coordinator_id ?? '',
    joiner_key_sha256: createHash('sha256').update(joiner?.public_key_pem ?? '').digest('hex'),
    not_after: notAfter,
    seal_epoch: sealEpoch,
    voucher,
  };
  return Buffer.concat([Buffer.from('keyshard/v1/join-vouch\0'), Buffer.from(canonicalJson(body))]);
}

/** Signs a vouch for join ceremony `c` with the root's vouch key, void after `notAfter`. The caller owns `root`. */
export function signVouch(root: Buffer, c: Ceremony, voucher: string, sealEpoch: number, notAfter = new Date(Date.now() + VOUCH_VALIDITY_MS).toISOString()): JoinVouch {
  const { privateKey } = rootSigningKey(root, JOIN_VOUCH_PURPOSE);
  return { voucher, seal_epoch: sealEpoch, not_after: notAfter, signature: sign(null, vouchMessage(c, voucher, sealEpoch, notAfter), privateKey) };
}

/** Why a (signature-checked) vouch is not live at `now` on this clock, or '' when it is. */
export function vouchStaleness(v: JoinVouch, now = Date.now()): string {
  const t = typeof v.not_after === 'string' && ISO_UTC.test(v.not_after) ? Date.parse(v.not_after) : NaN;
  if (!Number.isFinite(t)) return 'the vouch has no valid not_after time';
  if (t < now) return `the vouch expired at ${v.not_after}`;
  if (t > now + VOUCH_VALIDITY_MS + MAX_CLOCK_SKEW_MS) return `the vouch claims to live until ${v.not_after}, longer than ${VOUCH_VALIDITY_MS / 1000} s from now`;
  return '';
}

/**
 * A seal notice: the replica that seals the cluster tells every custodian the new seal epoch,
 * signed with the same root vouch key under its own domain ("keyshard/v1/seal-notice\0" ||
 * canonical JSON of { cluster_id, generation, seal_epoch }). A custodian keeps the highest epoch
 * noticed and refuses any vouch from an older one, so a vouch made before a seal is dead at once
 * wherever the notice arrived (and within VOUCH_VALIDITY_MS everywhere else).
 */
export interface SealNotice {
  cluster_id: string;
  generation: number;
  seal_epoch: number;
  signature: Buffer;
}

export function sealNoticeMessage(clusterId: string, generation: number, sealEpoch: number): Buffer {
  return Buffer.concat([Buffer.from('keyshard/v1/seal-notice\0'), Buffer.from(canonicalJson({ cluster_id: clusterId, generation, seal_epoch: sealEpoch }))]);
}

/** A signer of seal notices made from the root while it is held, usable after the seal drops it. */
export function sealNoticeSigner(root: Buffer, clusterId: string, generation: number): (sealEpoch: number) => SealNotice {
  const { privateKey } = rootSigningKey(root, JOIN_VOUCH_PURPOSE);
  return (sealEpoch) => ({ cluster_id: clusterId, generation, seal_epoch: sealEpoch, signature: sign(null, sealNoticeMessage(clusterId, generation, sealEpoch), privateKey) });
}

export function verifySealNotice(n: SealNotice, publicKeyPem: string | undefined): boolean {
  if (!n || !publicKeyPem || !Number.isSafeInteger(n.seal_epoch) || n.seal_epoch < 1 || !Number.isSafeInteger(n.generation) || n.generation < 1) return false;
  if (!Buffer.isBuffer(n.signature) || n.signature.length !== 64) return false;
  try {
    return verify(null, sealNoticeMessage(n.cluster_id, n.generation, n.seal_epoch), publicKeyPem, n.signature);
  } catch {
    return false;
  }
}

/** Whether `v` is a valid vouch for `c` under `publicKeyPem`; never throws. */
export function verifyVouch(c: Ceremony, v: JoinVouch | undefined | null, publicKeyPem: string | undefined): boolean {
  if (!v || !publicKeyPem || typeof v.voucher !== 'string' || !v.voucher || !Number.isSafeInteger(v.seal_epoch) || v.seal_epoch < 0 || typeof v.not_after !== 'string') return false;
  if (!Buffer.isBuffer(v.signature) || v.signature.length !== 64) return false;
  try {
    return verify(null, vouchMessage(c, v.voucher, v.seal_epoch, v.not_after), publicKeyPem, v.signature);
  } catch {
    return false;
  }
}
