/**
 * What the keys aggregate stores (brief, "Key hierarchy"): the shape of each record and the
 * rules its fields obey, shared by the keyring, its cache, the policy check and the gRPC
 * adapter. Where each record lives in etcd and how it is written: key-store.ts, usage-store.ts.
 *
 *   KeyRecord      keys/<id>             metadata in clear (not secret), with a record MAC
 *   VersionRecord  versions/<id>/<n>     material wrapped by a KEK, AAD = cluster | key | version
 *   AliasRecord    aliases/<name>        the key an alias names, with a record MAC
 *   UsageRecord    usage/<id>/<n>        encryptions reserved and last use, with a record MAC
 *   (a bare id)    names/<name>          counts only if the key record it leads to has that name
 */
import { failedPrecondition, invalidArgument, quote, type KeyshardError, type Reason } from '@keyshard/errors';
import { USAGE, type KeyType, type KeyUsage } from '@keyshard/crypto';
import type { pb } from '@keyshard/rpc';

/** keyshard.v1.KeyState (keys.proto) as stored: every state but UNSPECIFIED. */
export type KeyState = Exclude<pb.KeyState__Output, 'KEY_STATE_UNSPECIFIED'>;

export interface KeyRecord {
  id: string;
  name: string;
  type: KeyType;
  usage: KeyUsage;
  state: KeyState;
  primaryVersion: number;
  minDecryptionVersion: number;
  description: string;
  labels: Record<string, string>;
  createdAt: string;
  rotatedAt: string;
  createdBy: string;
  /**
   * Set when the creator was a cluster admin at creation: with the default policy it then never uses
   * the key, even after leaving `admins` (key-policy.ts mayUse). Absent on older records.
   */
  creatorAdmin?: true;
  versions: { version: number; createdAt: string }[];
  /** operation -> principals; empty means the default: the creator (and admins, always). */
  policy: Record<string, string[]>;
  rotation: { periodSeconds: number; nextRotationAt: string };
  destructionAt: string;
}

/** A state as a word: enabled, disabled, pending_destruction, destroyed. */
export const stateWord = (state: KeyState): string => state.replace('KEY_STATE_', '').toLowerCase();

const STATE_REASON: Readonly<Record<KeyState, Reason>> = {
  KEY_STATE_ENABLED: 'WRONG_KEY_STATE',
  KEY_STATE_DISABLED: 'KEY_DISABLED',
  KEY_STATE_PENDING_DESTRUCTION: 'KEY_PENDING_DESTRUCTION',
  KEY_STATE_DESTROYED: 'KEY_DESTROYED',
};

/**
 * The refusal of what key `k`'s state does not allow (FAILED_PRECONDITION): its reason says the
 * state that stands in the way (KEY_DISABLED, KEY_PENDING_DESTRUCTION, KEY_DESTROYED), or
 * `reason` where the state is not the obstacle itself (WRONG_KEY_STATE: e.g. nothing to cancel).
 */
export function keyStateRefusal(k: Pick<KeyRecord, 'id' | 'state'>, message: string, reason: Reason = STATE_REASON[k.state]): KeyshardError {
  return failedPrecondition(message, { reason, metadata: { key_id: k.id, state: k.state } });
}

export interface VersionRecord {
  version: number;
  kekEpoch: number;
  wrapped: string; // base64
  createdAt: string;
}

export interface AliasRecord {
  keyId: string;
}

export interface UsageRecord {
  encryptions: number; // reserved by some replica: an upper bound of encryptions done
  lastUsedAt: string; // RFC 3339, '' if never
}

/** A parsed key reference: a key id, a key name or an alias name. */
export type KeyRef = { id: string } | { name: string } | { alias: string };

/** A rotation schedule of `periodSeconds` (0: none), the next rotation one period after `now`. */
export function rotationFrom(periodSeconds: number, now: number): KeyRecord['rotation'] {
  return { periodSeconds, nextRotationAt: periodSeconds ? new Date(now + periodSeconds * 1000).toISOString() : '' };
}

/** Whether `k`'s scheduled rotation is due at `at` (ms since epoch). */
export const rotationDue = (k: KeyRecord, at: number): boolean => k.rotation.periodSeconds > 0 && Date.parse(k.rotation.nextRotationAt) <= at;

/** The record of a key created by `principal` at `now`, its version 1 primary (fields validated by the caller). */
export function newKeyRecord(
  k: Pick<KeyRecord, 'id' | 'name' | 'type' | 'description' | 'labels' | 'policy'> & { periodSeconds: number },
  principal: string,
  now: Date,
  creatorAdmin = false,
): KeyRecord {
  const at = now.toISOString();
  return {
    ...(creatorAdmin ? { creatorAdmin: true as const } : {}),
    id: k.id,
    name: k.name,
    type: k.type,
    usage: USAGE[k.type],
    state: 'KEY_STATE_ENABLED',
    primaryVersion: 1,
    minDecryptionVersion: 1,
    description: k.description,
    labels: k.labels,
    createdAt: at,
    rotatedAt: at,
    createdBy: principal,
    versions: [{ version: 1, createdAt: at }],
    policy: k.policy,
    rotation: rotationFrom(k.periodSeconds, now.getTime()),
    destructionAt: '',
  };
}

/** `cur` rotated at `now`: a version added and made primary, the next scheduled rotation one period later. */
export function rotatedRecord(cur: KeyRecord, now: Date): KeyRecord {
  const n = cur.primaryVersion + 1;
  return {
    ...cur,
    primaryVersion: n,
    rotatedAt: now.toISOString(),
    versions: [...cur.versions, { version: n, createdAt: now.toISOString() }],
    rotation: rotationFrom(cur.rotation.periodSeconds, now.getTime()),
  };
}

/** What a destroyed key leaves: its record, destroyed, granting nothing and scheduling nothing. */
export function tombstoneOf(cur: KeyRecord): KeyRecord {
  return { ...cur, state: 'KEY_STATE_DESTROYED', policy: {}, rotation: { periodSeconds: 0, nextRotationAt: '' } };
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;
export const MAX_NAME_LENGTH = 128;
const KEY_ID_RE = /^k_[A-Za-z0-9_-]{22}$/;
export const ALIAS_PREFIX = 'alias/';

/** Whether `s` could name a key or an alias (validateName without the explanation). */
const isName = (s: string) => s.length <= MAX_NAME_LENGTH && NAME_RE.test(s) && !KEY_ID_RE.test(s);

/** What `ref` (an id, a name or `alias/<name>`) refers to; undefined if no key can have it. */
export function parseRef(ref: string): KeyRef | undefined {
  if (KEY_ID_RE.test(ref)) return { id: ref };
  if (ref.startsWith(ALIAS_PREFIX)) return isName(ref.slice(ALIAS_PREFIX.length)) ? { alias: ref.slice(ALIAS_PREFIX.length) } : undefined;
  return isName(ref) ? { name: ref } : undefined;
}

export function validateName(name: string, what = 'key name'): void {
  if (typeof name !== 'string' || name.length === 0) throw invalidArgument(`${what} must not be empty`);
  if (name.length > MAX_NAME_LENGTH) throw invalidArgument(`${what} is longer than ${MAX_NAME_LENGTH} characters`);
  if (!NAME_RE.test(name)) throw invalidArgument(`${what} may contain letters, digits and _ . : - and must start with a letter or digit`);
  if (KEY_ID_RE.test(name)) throw invalidArgument(`${what} must not look like a key id (k_…)`);
}

/** Documented maxima (keys.proto Key.labels, README "Observability and limits"). */
export const MAX_LABELS = 64;
export const MAX_LABEL_KEY_LENGTH = 63;
export const MAX_LABEL_VALUE_LENGTH = 256;

/** Labels are kept in every key record and returned by GetKey and ListKeys: bounded like the description. */
export function validateLabels(labels: Record<string, string>): void {
  if (typeof labels !== 'object' || labels === null) throw invalidArgument('labels must map names to values');
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw invalidArgument(`a key has at most ${MAX_LABELS} labels, got ${entries.length}`);
  for (const [k, v] of entries) {
    if (k.length === 0 || k.length > MAX_LABEL_KEY_LENGTH) throw invalidArgument(`label name ${quote(k)} must be 1 to ${MAX_LABEL_KEY_LENGTH} characters`);
    if (typeof v !== 'string' || v.length > MAX_LABEL_VALUE_LENGTH) throw invalidArgument(`label ${quote(k)}: values are limited to ${MAX_LABEL_VALUE_LENGTH} characters`);
  }
}

/** A description is kept in every key record, like the labels: at most 1024 characters. */
export function validateDescription(description: string): void {
  if (description.length > 1024) throw invalidArgument('description is longer than 1024 characters');
}
