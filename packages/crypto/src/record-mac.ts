/**
 * Record MACs: integrity of the records in etcd whose change would grant access or change
 * behaviour (key records with their policies and states, aliases, quorum ceremonies, the seal
 * epoch, unsealed replicas' registrations, share-set records). etcd's own access control keeps
 * other certificates out; this keeps a writer that has etcd credentials but not the root key
 * (an etcd operator, a stolen coordinator certificate, a restored etcd snapshot edited offline)
 * from changing what a record says without every replica noticing.
 *
 * Format (frozen: packages/crypto/vectors/record-mac.json):
 *   mac = hex(HMAC-SHA256(K, M))                                          RFC 2104, FIPS 198-1
 *   M   = u32be(|D|) || D || u32be(|P|) || P || u32be(|J|) || J
 *   D   = "keyshard/v1/record-mac"   (domain: no other keyshard MAC input starts like this)
 *   P   = the record's etcd key relative to the cluster prefix, UTF-8 ("keys/k_…", "seal-epoch")
 *   J   = canonicalJson(record without its `mac` member), UTF-8 (canonical-json.ts)
 *   K   = the record MAC key: 32 bytes, HKDF-SHA256 of the root key at init (key-hierarchy.ts,
 *         deriveRootKey purpose `record-mac`), kept in etcd wrapped under the root like a KEK,
 *         so a root rotation re-wraps it and never changes it.
 * The MAC is stored in the record's own `mac` member. Binding P means a record copied to
 * another key (one key's policy onto another, an alias moved) fails; binding every member
 * means no field can change. Replay of an older record of the same key is not detected here:
 * where that matters the record itself is monotonic (the seal epoch only rises; a key record's
 * changes go through compare-and-swap on its revision).
 * Verification compares in constant time (crypto.timingSafeEqual); a record without a `mac`
 * fails like a wrong one.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { KeyshardError } from '@keyshard/errors';
import { canonicalJson } from './canonical-json.ts';

export const RECORD_MAC_DOMAIN = 'keyshard/v1/record-mac';
export const RECORD_MAC_KEY_BYTES = 32;

type JsonObject = Record<string, unknown>;

function checkKey(key: Buffer): void {
  if (!Buffer.isBuffer(key) || key.length !== RECORD_MAC_KEY_BYTES) throw new KeyshardError('INTERNAL', `the record MAC key must be ${RECORD_MAC_KEY_BYTES} bytes`);
}

function checkPath(path: string): void {
  if (typeof path !== 'string' || path.length === 0 || path.startsWith('/')) throw new KeyshardError('INTERNAL', 'a record path is relative to the cluster prefix and not empty');
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function u32Prefixed(s: string): Buffer[] {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return [len, b];
}

/** M: the bytes the MAC is over (exported for the vectors). */
export function recordMacMessage(path: string, record: JsonObject): Buffer {
  checkPath(path);
  if (!isObject(record)) throw new KeyshardError('INTERNAL', 'a MAC\'d record is a JSON object');
  const { mac: _ignored, ...body } = record;
  return Buffer.concat([...u32Prefixed(RECORD_MAC_DOMAIN), ...u32Prefixed(path), ...u32Prefixed(canonicalJson(body))]);
}

/** hex(HMAC-SHA256(key, M)). */
export function recordMac(key: Buffer, path: string, record: JsonObject): string {
  checkKey(key);
  return createHmac('sha256', key).update(recordMacMessage(path, record)).digest('hex');
}

/** `record` with its `mac` member set (any `mac` it had is replaced). */
export function withRecordMac<T extends object>(key: Buffer, path: string, record: T): T & { mac: string } {
  const { mac: _old, ...body } = record as JsonObject;
  return { ...(body as T), mac: recordMac(key, path, body) };
}

export type RecordMacCheck<T> = { ok: true; record: T } | { ok: false; reason: 'not a JSON object' | 'no MAC' | 'MAC mismatch' };

/**
 * Checks a stored record (parsed JSON) stored at `path`; on success returns it without its
 * `mac` member. Constant-time in the MAC's value.
 */
export function verifyRecordMac<T extends object>(key: Buffer, path: string, stored: unknown): RecordMacCheck<T> {
  checkKey(key);
  if (!isObject(stored)) return { ok: false, reason: 'not a JSON object' };
  const { mac, ...body } = stored;
  if (typeof mac !== 'string' || mac.length === 0) return { ok: false, reason: 'no MAC' };
  let expected: Buffer;
  try {
    expected = Buffer.from(recordMac(key, path, body), 'hex');
  } catch {
    return { ok: false, reason: 'not a JSON object' }; // canonicalJson refused a member (non-finite number)
  }
  const given = Buffer.from(mac, 'hex');
  // A malformed hex string decodes short: the length check fails it before the comparison.
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'MAC mismatch' };
  return { ok: true, record: body as T };
}
