/**
 * The audit event as the sink stores it: exactly the fields of keyshard.v1.AuditEvent, checked
 * and copied, so every producer's events hash the same way whatever extra fields they sent.
 */
import { invalidArgument, permissionDenied } from '@keyshard/errors';

/** AuditEvent exactly as in audit.proto (keepCase): what is hashed and stored. */
export interface StoredAuditEvent {
  id: string;
  time: string;
  source: string;
  principal: string;
  operation: string;
  key_id: string;
  ceremony_id: string;
  result: string;
  code: string;
  request_id: string;
  details: Record<string, string>;
}

export type RawEvent = Partial<Record<keyof StoredAuditEvent, unknown>>;

const STRING_FIELDS = ['id', 'time', 'source', 'principal', 'operation', 'key_id', 'ceremony_id', 'result', 'code', 'request_id'] as const;
// Bounds keep one producer from bloating the log; real events are far smaller.
const MAX_ID = 128;
const MAX_FIELD = 4096;
const MAX_DETAILS = 64;

/**
 * Copies exactly the proto fields. An event's `source` must be the appender's own identity
 * (empty = filled in), so one component cannot write events in another's name.
 */
export function normalizeEvent(raw: RawEvent | undefined, caller: string): StoredAuditEvent {
  const ev = {} as StoredAuditEvent;
  for (const f of STRING_FIELDS) {
    const v = raw?.[f] ?? '';
    if (typeof v !== 'string' || v.length > MAX_FIELD) throw invalidArgument(`audit event field ${f} is invalid`);
    ev[f] = v;
  }
  if (!ev.id || ev.id.length > MAX_ID) throw invalidArgument('audit event needs an id of 1..128 characters');
  if (!ev.operation) throw invalidArgument('audit event needs an operation');
  if (ev.source === '') ev.source = caller;
  else if (ev.source !== caller) throw permissionDenied(`event source ${ev.source} does not match the caller's identity ${caller}`);
  const details = raw?.details ?? {};
  if (typeof details !== 'object' || details === null || Array.isArray(details)) throw invalidArgument('audit event details are invalid');
  const entries = Object.entries(details as Record<string, unknown>);
  if (entries.length > MAX_DETAILS) throw invalidArgument(`audit event has more than ${MAX_DETAILS} details`);
  ev.details = {};
  for (const [k, v] of entries) {
    if (typeof v !== 'string' || k.length > MAX_FIELD || v.length > MAX_FIELD) throw invalidArgument(`audit event detail ${k.slice(0, 64)} is invalid`);
    ev.details[k] = v;
  }
  return ev;
}
