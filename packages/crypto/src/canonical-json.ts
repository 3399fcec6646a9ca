/**
 * Deterministic JSON: object keys sorted recursively, no whitespace, undefined members
 * dropped. The bytes that ceremony hashes, manifest MACs and audit chain hashes are over.
 * Non-finite numbers and non-JSON values are refused, since they would not survive a round trip.
 * Keys sort in UTF-16 code-unit order (JavaScript's default sort), as in RFC 8785.
 * Frozen vectors: packages/crypto/vectors/canonical-json.json (rules in packages/crypto/VECTORS.md).
 */
import { invalidArgument } from '@keyshard/errors';

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw invalidArgument('value contains a non-finite number');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
  }
  throw invalidArgument(`value contains an unsupported ${typeof value}`);
}
