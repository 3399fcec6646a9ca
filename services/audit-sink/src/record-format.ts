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
import { canonicalJson } from '@keyshard/crypto';
import { leafHash } from '@keyshard/audit-client/merkle';

/** What the log stores. The id makes delivery idempotent; the rest is opaque to the log. */
export interface LogEvent {
  readonly id: string;
}

export type StoredEvent = LogEvent & Record<string, unknown>;

/** keyshard.v1.AuditEvent's fields in canonical (sorted) order. */
const AUDIT_EVENT_KEYS = ['ceremony_id', 'code', 'details', 'id', 'key_id', 'operation', 'principal', 'request_id', 'result', 'source', 'time'] as const;

/**
 * canonicalJson(event), with a fast path for the shape every sink event has (the proto's
 * fields, all strings, details a string map): the same bytes, about 3x faster, on the hot
 * path of every append. Any other shape goes through canonicalJson itself.
 */
export function canonicalEventJson(e: object): string {
  const rec = e as Record<string, unknown>;
  if (Object.keys(rec).length !== AUDIT_EVENT_KEYS.length) return canonicalJson(e);
  let out = '{';
  for (const k of AUDIT_EVENT_KEYS) {
    const v = rec[k];
    if (k === 'details') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return canonicalJson(e);
      const d = v as Record<string, unknown>;
      const parts: string[] = [];
      for (const dk of Object.keys(d).sort()) {
        if (typeof d[dk] !== 'string') return canonicalJson(e);
        parts.push(`${JSON.stringify(dk)}:${JSON.stringify(d[dk])}`);
      }
      out += `"details":{${parts.join(',')}},`;
    } else {
      if (typeof v !== 'string') return canonicalJson(e);
      out += `"${k}":${JSON.stringify(v)},`;
    }
  }
  return `${out.slice(0, -1)}}`;
}

export function encodeRecord(index: number, leaf: Buffer, eventJson: string): string {
  return `{"index":${index},"leaf":"${leaf.toString('hex')}","event":${eventJson}}\n`;
}

export interface CheckedRecord {
  event: StoredEvent;
  leaf: Buffer;
}

/**
 * Verifies one newline-terminated line as the record with index `expected`: its form, its
 * index, its leaf hash and that it is byte-exact canonical. Returns the reason it is bad.
 */
export function checkRecord(line: Buffer, expected: number): CheckedRecord | { reason: string } {
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
    eventJson = canonicalJson(event);
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
