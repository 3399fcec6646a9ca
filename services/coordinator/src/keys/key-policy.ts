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

export function validatePolicy(policy: Record<string, string[]>): Record<string, string[]> {
  for (const [op, principals] of Object.entries(policy)) {
    if (!(KEY_OPERATIONS as readonly string[]).includes(op)) throw invalidArgument(`unknown policy operation ${quote(op)}; known: ${KEY_OPERATIONS.join(', ')}`);
    if (!Array.isArray(principals) || principals.some((p) => typeof p !== 'string' || p.length === 0 || p.length > 128))
      throw invalidArgument(`policy for ${op} must list principals`);
  }
  return policy;
}

export function authorizeKey(k: KeyRecord, principal: string, op: KeyOperation, admins: ReadonlySet<string>): void {
  if (admins.has(principal)) return;
  const grants = k.policy ?? {};
  const allowed = Object.keys(grants).length === 0 ? principal === k.createdBy : (grants[op] ?? []).includes(principal);
  if (!allowed) throw permissionDenied(`${principal} may not ${op.replace(/_/g, ' ')} with key ${k.name}`, { metadata: { key_id: k.id, operation: op } });
}
