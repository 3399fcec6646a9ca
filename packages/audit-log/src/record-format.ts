/**
 * One audit record on disk: a line `{"index":n,"leaf":hex,"event":{...}}\n`.
 *
 * The Merkle entry of a record is the UTF-8 of `canonicalJson(event)` (keys sorted, no
 * whitespace), and `leaf` = SHA-256(0x00 || entry) (RFC 6962 §2.1). The line is exactly this
 * serialization, so a file is determined byte for byte by its events and any edit that a JSON
 * parser would forgive (spacing, key order, duplicate keys) is still caught. `leaf` is
 * redundant with the event; it is there so a reader can name the exact record an edit hit,
 * while the signed checkpoints catch an attacker who recomputes it.
 */
import { isUtf8 } from 'node:buffer';
import { canonicalJson } from '@keyshard/crypto';
import { AUDIT_EVENT_STRING_FIELDS } from './audit-event.ts';
import { leafHash } from './merkle.ts';

/** What the log stores. The id makes delivery idempotent; the rest is opaque to the log. */
export interface LogEvent {
  readonly id: string;
}

export type StoredEvent = LogEvent & Record<string, unknown>;

/** keyshard.v1.AuditEvent's fields (audit-event.ts); the fast path below writes them in canonical (sorted) order. */
const AUDIT_EVENT_KEYS: ReadonlySet<string> = new Set([...AUDIT_EVENT_STRING_FIELDS, 'details']);

// What JSON.stringify escapes in a string: `"`, `\`, control characters, and (lone)
// surrogates. A string with none of them is written as is between quotes — the same bytes.
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;
const quote = (s: string) => (NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`);

/**
 * canonicalJson(event), with a fast path for the shape every sink event has (exactly the
 * proto's fields as own keys, all strings, details a string map): the same bytes, several
 * times faster, on the hot path of every append. Any other shape goes through canonicalJson.
 */
export function canonicalEventJson(e: object): string {
  const rec = e as Record<string, unknown>;
  const keys = Object.keys(rec);
  if (keys.length !== AUDIT_EVENT_KEYS.size) return canonicalJson(e);
  for (const k of keys) if (!AUDIT_EVENT_KEYS.has(k)) return canonicalJson(e);
  const { ceremony_id, code, details, id, key_id, operation, principal, request_id, result, source, time } = rec;
  if (
    typeof ceremony_id !== 'string' || typeof code !== 'string' || typeof id !== 'string' || typeof key_id !== 'string' ||
    typeof operation !== 'string' || typeof principal !== 'string' || typeof request_id !== 'string' ||
    typeof result !== 'string' || typeof source !== 'string' || typeof time !== 'string' ||
    typeof details !== 'object' || details === null || Array.isArray(details)
  )
    return canonicalJson(e);
  const d = details as Record<string, unknown>;
  let detailsJson = '';
  for (const k of Object.keys(d).sort()) {
    const v = d[k];
    if (typeof v !== 'string') return canonicalJson(e);
    detailsJson += `${detailsJson ? ',' : ''}${quote(k)}:${quote(v)}`;
  }
  return (
    `{"ceremony_id":${quote(ceremony_id)},"code":${quote(code)},"details":{${detailsJson}},"id":${quote(id)},` +
    `"key_id":${quote(key_id)},"operation":${quote(operation)},"principal":${quote(principal)},` +
    `"request_id":${quote(request_id)},"result":${quote(result)},"source":${quote(source)},"time":${quote(time)}}`
  );
}

export function encodeRecord(index: number, leaf: Buffer, eventJson: string): string {
  return `{"index":${index},"leaf":"${leaf.toString('hex')}","event":${eventJson}}\n`;
}

/** An event encoded once, at append: its canonical JSON, that JSON's UTF-8 length and its leaf hash. */
export interface EncodedEntry {
  json: string;
  bytes: number;
  leaf: Buffer;
}

export function encodeEntry(event: object): EncodedEntry {
  const json = canonicalEventJson(event);
  return { json, bytes: Buffer.byteLength(json, 'utf8'), leaf: leafHash(json) };
}

/**
 * The record lines of `entries` as indexes firstIndex, firstIndex+1, …: the bytes of
 * encodeRecord for each, concatenated, written straight into one buffer (no string per line).
 */
export function encodeRecords(firstIndex: number, entries: readonly EncodedEntry[]): Buffer {
  let size = 0;
  for (let i = 0; i < entries.length; i++) size += recordOverhead(firstIndex + i) + entries[i]!.bytes;
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  for (let i = 0; i < entries.length; i++) {
    const { json, leaf } = entries[i]!;
    pos += out.write(`{"index":${firstIndex + i},"leaf":"${leaf.toString('hex')}","event":`, pos, 'latin1');
    pos += out.write(json, pos, 'utf8');
    out[pos++] = 0x7d; // }
    out[pos++] = 0x0a; // \n
  }
  if (pos !== size) throw new Error(`record lines took ${pos} bytes, not the ${size} computed`);
  return out;
}

/** Bytes of a record line besides its event: `{"index":<n>,"leaf":"<64 hex>","event":` and `}\n`. */
const recordOverhead = (index: number) => 9 + String(index).length + 9 + 64 + 10 + 2;

export interface CheckedRecord {
  event: StoredEvent;
  leaf: Buffer;
}

/**
 * Verifies one newline-terminated line as the record with index `expected`: its form, its
 * index, its leaf hash and that it is byte-exact canonical. Returns the reason it is bad.
 *
 * A line as encodeRecord writes it is accepted by a fast path (a replication follower checks
 * every record its leader sends, a sink every record at start): the fixed prefix for
 * `expected`, valid UTF-8, and the event part parsed once and compared as a string with its
 * canonical JSON — accepting exactly what the full check below accepts, which runs (and names
 * the reason) whenever the fast path does not accept.
 */
export function checkRecord(line: Buffer, expected: number): CheckedRecord | { reason: string } {
  return fastRecordCheck(line, expected) ?? fullRecordCheck(line, expected);
}

const EVENT_INFIX = '","event":';
const HEX64 = /^[0-9a-f]{64}$/;

/** The fast path of checkRecord: the record if the line is exactly as encodeRecord writes it, else undefined (exported for its tests). */
export function fastRecordCheck(line: Buffer, expected: number): CheckedRecord | undefined {
  const n = line.length;
  if (n < 2 || line[n - 1] !== 0x0a || line[n - 2] !== 0x7d || !isUtf8(line)) return undefined;
  const s = line.toString('utf8');
  const prefix = `{"index":${expected},"leaf":"`;
  if (!s.startsWith(prefix)) return undefined;
  const hexEnd = prefix.length + 64;
  const leafHex = s.slice(prefix.length, hexEnd);
  if (!HEX64.test(leafHex) || !s.startsWith(EVENT_INFIX, hexEnd)) return undefined;
  const eventJson = s.slice(hexEnd + EVENT_INFIX.length, s.length - 2);
  let event: unknown;
  try {
    event = JSON.parse(eventJson);
  } catch {
    return undefined;
  }
  if (typeof event !== 'object' || event === null || Array.isArray(event)) return undefined;
  const id = (event as Record<string, unknown>).id;
  if (typeof id !== 'string' || id === '') return undefined;
  try {
    if (canonicalEventJson(event) !== eventJson) return undefined;
  } catch {
    return undefined;
  }
  // The line is valid UTF-8, so these bytes are UTF-8(eventJson): the Merkle entry itself.
  const h = leafHash(line.subarray(hexEnd + EVENT_INFIX.length, n - 2)); // the prefix is ASCII: its chars are its bytes
  if (h.toString('hex') !== leafHex) return undefined;
  return { event: event as StoredEvent, leaf: h };
}

/** The reference check of checkRecord: parses the whole line, re-encodes it, compares bytes; names the reason. */
export function fullRecordCheck(line: Buffer, expected: number): CheckedRecord | { reason: string } {
  let rec: unknown;
  try {
    rec = JSON.parse(line.toString('utf8'));
  } catch {
    return { reason: 'record is not valid JSON' };
  }
  if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) return { reason: 'record is not a JSON object' };
  const { index, leaf, event } = rec as Record<string, unknown>;
  if (index !== expected) return { reason: `expected index ${expected}, found ${JSON.stringify(index)?.slice(0, 40)}` };
  if (typeof event !== 'object' || event === null || Array.isArray(event)) return { reason: 'event is not an object' };
  const id = (event as Record<string, unknown>).id;
  if (typeof id !== 'string' || id === '') return { reason: 'event has no id' };
  let eventJson: string;
  try {
    eventJson = canonicalEventJson(event);
  } catch {
    return { reason: 'event is not representable' };
  }
  const h = leafHash(eventJson);
  if (leaf !== h.toString('hex')) return { reason: 'leaf hash does not match the event' };
  if (!line.equals(Buffer.from(encodeRecord(expected, h, eventJson), 'utf8'))) return { reason: 'record is not in canonical form' };
  return { event: event as StoredEvent, leaf: h };
}

/** Parses a committed line without verifying it again (reads of the running log). */
export function parseRecord(line: Buffer): { index: number; event: StoredEvent } | undefined {
  try {
    const r = JSON.parse(line.toString('utf8')) as { index?: unknown; event?: unknown };
    return typeof r.index === 'number' && typeof r.event === 'object' && r.event !== null
      ? { index: r.index, event: r.event as StoredEvent }
      : undefined;
  } catch {
    return undefined;
  }
}
