/**
 * Per-key access policy (AWS KMS key policies, reduced to what keyshard needs): which principals
 * may do which operation with a key. Checked on every call; a refusal is PERMISSION_DENIED and is
 * audited (result `denied`) like every other outcome.
 *
 * Separation of duties (NIST SP 800-57 Part 2 Rev. 1 §6.2 "separation of roles"; PCI DSS v4
 * 3.6.1.2/3.7.6 split knowledge and dual control; AWS KMS's split between key administrators and
 * key users): administering a key and using it are different permissions.
 *
 * | operation class | operations                                             | who                                   |
 * |-----------------|--------------------------------------------------------|---------------------------------------|
 * | use             | encrypt decrypt sign verify mac generate_data_key      | principals the policy names for that op; with the default (empty) policy the key's creator, unless the creator is a cluster admin |
 * | administration  | admin (policy, state, destruction, aliases, update), rotate | cluster admins (config `admins`, so no key is orphaned); principals named under `admin`; `rotate` also those named under `rotate`; with the default policy also the creator |
 *
 * Cluster admins never use a key its policy does not name them for, and nobody, admin or not, may
 * give itself a use it did not already hold (refuseSelfGrant): a single stolen administrator
 * credential reaches no plaintext. There is no break-glass override; one would have to be a
 * quorum ceremony like destroy-key.
 */
import { invalidArgument, permissionDenied, quote } from '@keyshard/errors';
import type { KeyRecord } from './key-record.ts';

/** Operations that use a key's material. */
export const USE_OPERATIONS = ['encrypt', 'decrypt', 'sign', 'verify', 'mac', 'generate_data_key'] as const;
/** Operations that administer a key: `rotate` (RotateKey, SetRotationPolicy) and `admin` (everything else). */
export const ADMIN_OPERATIONS = ['rotate', 'admin'] as const;
export const KEY_OPERATIONS = [...USE_OPERATIONS, ...ADMIN_OPERATIONS] as const;
export type UseOperation = (typeof USE_OPERATIONS)[number];
export type AdminOperation = (typeof ADMIN_OPERATIONS)[number];
export type KeyOperation = (typeof KEY_OPERATIONS)[number];

/** What authorization reads of a key: its policy and creator (and, for messages, its name and id). */
export type PolicyHolder = Pick<KeyRecord, 'policy' | 'createdBy'> & Partial<Pick<KeyRecord, 'id' | 'name' | 'creatorAdmin'>>;

/** Documented maxima (keys.proto KeyPolicy, README "Observability and limits"): checked before anything is stored. */
export const MAX_PRINCIPALS_PER_GRANT = 64;
export const MAX_POLICY_PRINCIPALS = 256;
export const MAX_PRINCIPAL_LENGTH = 128;

export function validatePolicy(policy: Record<string, string[]>): Record<string, string[]> {
  if (typeof policy !== 'object' || policy === null) throw invalidArgument('policy must map operations to principals');
  let total = 0;
  for (const [op, principals] of Object.entries(policy)) {
    if (!(KEY_OPERATIONS as readonly string[]).includes(op)) throw invalidArgument(`unknown policy operation ${quote(op)}; known: ${KEY_OPERATIONS.join(', ')}`);
    if (!Array.isArray(principals)) throw invalidArgument(`policy for ${op} must list principals`);
    if (principals.length > MAX_PRINCIPALS_PER_GRANT)
      throw invalidArgument(`policy for ${op} lists ${principals.length} principals; at most ${MAX_PRINCIPALS_PER_GRANT} per operation`);
    total += principals.length;
    if (total > MAX_POLICY_PRINCIPALS) throw invalidArgument(`a policy lists at most ${MAX_POLICY_PRINCIPALS} principals in all its operations`);
    const bad = principals.find((p) => typeof p !== 'string' || p.length === 0 || p.length > MAX_PRINCIPAL_LENGTH);
    if (bad !== undefined) throw invalidArgument(`policy for ${op}: principal ${quote(bad)} is not a name of 1 to ${MAX_PRINCIPAL_LENGTH} characters`);
  }
  return policy;
}

/** The default policy: none was given (keys made without one, including every key stored before policies named users). */
const isDefault = (k: PolicyHolder) => Object.keys(k.policy ?? {}).length === 0;

/** Whether `principal` may do the use operation `op` with the key. */
export function mayUse(k: PolicyHolder, principal: string, op: UseOperation, admins: ReadonlySet<string>): boolean {
  // A creator that was a cluster admin when it made the key never uses it by default, also after
  // leaving `admins` (or on a replica whose `admins` differ): it was made as an administrator's key.
  if (isDefault(k)) return principal === k.createdBy && !admins.has(principal) && !k.creatorAdmin;
  return (k.policy[op] ?? []).includes(principal);
}

/** Whether `principal` may administer the key (`rotate`: rotate it or set its rotation policy). */
export function mayAdminister(k: PolicyHolder, principal: string, admins: ReadonlySet<string>, op: AdminOperation = 'admin'): boolean {
  if (admins.has(principal)) return true;
  if (isDefault(k)) return principal === k.createdBy;
  return (k.policy.admin ?? []).includes(principal) || (op === 'rotate' && (k.policy.rotate ?? []).includes(principal));
}

/** The use operations `principal` holds on the key. */
export const usesOf = (k: PolicyHolder, principal: string, admins: ReadonlySet<string>): UseOperation[] =>
  USE_OPERATIONS.filter((op) => mayUse(k, principal, op, admins));

const words = (op: string) => op.replace(/_/g, ' ');
const keyName = (k: PolicyHolder) => k.name ?? 'new key';
const denied = (k: PolicyHolder, op: string, message: string, reason: 'KEY_POLICY_DENIED' | 'SEPARATION_OF_DUTIES') =>
  permissionDenied(message, { reason, metadata: { ...(k.id && { key_id: k.id }), operation: op } });

/** Refuses (PERMISSION_DENIED, KEY_POLICY_DENIED) a use the key's policy does not grant `principal`. */
export function authorizeUse(k: PolicyHolder, principal: string, op: UseOperation, admins: ReadonlySet<string>): void {
  if (mayUse(k, principal, op, admins)) return;
  const why = admins.has(principal)
    ? ': cluster admins administer keys but use one only when its policy names them for that operation (separation of duties)'
    : '';
  throw denied(k, op, `${principal} may not ${words(op)} with key ${keyName(k)}${why}`, 'KEY_POLICY_DENIED');
}

/** Refuses (PERMISSION_DENIED, KEY_POLICY_DENIED) an administration the key's policy does not grant `principal`. */
export function authorizeAdmin(k: PolicyHolder, principal: string, admins: ReadonlySet<string>, op: AdminOperation = 'admin'): void {
  if (mayAdminister(k, principal, admins, op)) return;
  throw denied(k, op, `${principal} may not ${op === 'admin' ? 'administer' : words(op)} key ${keyName(k)}`, 'KEY_POLICY_DENIED');
}

/**
 * Refuses a policy (a changed one, or a new key's) that would let `principal`, who makes the
 * change, use the key in a way it could not before (`before`: the key as it is; for a new key,
 * the default policy with `principal` as creator). One credential may not grant itself use:
 * another administrator, or a user of the key who administers it, has to (dual control).
 */
export function refuseSelfGrant(before: PolicyHolder, after: PolicyHolder, principal: string, admins: ReadonlySet<string>): void {
  const held = new Set(usesOf(before, principal, admins));
  const gained = usesOf(after, principal, admins).filter((op) => !held.has(op));
  if (gained.length === 0) return;
  throw denied(
    after,
    gained[0]!,
    `separation of duties: ${principal} may not grant itself ${gained.map(words).join(', ')} on key ${keyName(after)}; ` +
      'another administrator, or a user of the key who administers it, must make that change',
    'SEPARATION_OF_DUTIES',
  );
}

/**
 * Refuses pointing an alias at a key `principal` may use (CreateAlias, UpdateAlias). Whoever
 * steers a name other services encrypt under must not be able to read what they encrypt: an
 * administrator holding decrypt on one key could otherwise repoint (or delete and recreate) an
 * alias the services use onto it, and name those services on it.
 */
export function refuseAliasToUsable(k: PolicyHolder, alias: string, principal: string, admins: ReadonlySet<string>): void {
  const uses = usesOf(k, principal, admins);
  if (uses.length === 0) return;
  throw denied(
    k,
    'admin',
    `separation of duties: ${principal} may ${uses.map(words).join(', ')} with key ${keyName(k)}, so it may not point alias ${alias} at it; ` +
      'another administrator must',
    'SEPARATION_OF_DUTIES',
  );
}
