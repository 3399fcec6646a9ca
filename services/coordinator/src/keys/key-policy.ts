/**
 * Per-key access policy (AWS KMS key policies, reduced to what keyshard needs): which
 * principals may do which operation with a key. An empty policy means the default: the
 * key's creator may do everything. Admins may always. Checked on every call; a denial is
 * PERMISSION_DENIED and is audited like every other outcome.
 */
import { invalidArgument, permissionDenied, quote } from '@keyshard/errors';
import type { KeyRecord } from './key-record.ts';

export const KEY_OPERATIONS = ['encrypt', 'decrypt', 'sign', 'verify', 'mac', 'generate_data_key', 'rotate', 'admin'] as const;
export type KeyOperation = (typeof KEY_OPERATIONS)[number];

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

export function authorizeKey(k: KeyRecord, principal: string, op: KeyOperation, admins: ReadonlySet<string>): void {
  if (admins.has(principal)) return;
  const grants = k.policy ?? {};
  const allowed = Object.keys(grants).length === 0 ? principal === k.createdBy : (grants[op] ?? []).includes(principal);
  if (!allowed) throw permissionDenied(`${principal} may not ${op.replace(/_/g, ' ')} with key ${k.name}`, { metadata: { key_id: k.id, operation: op } });
}
