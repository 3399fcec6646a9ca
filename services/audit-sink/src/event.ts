/**
 * The audit event as the sink stores it: exactly the fields of keyshard.v1.AuditEvent, checked
 * and copied, so every producer's events hash the same way whatever extra fields they sent
 * (the type and its bounds: @keyshard/audit-log audit-event.ts).
 */
import { AUDIT_EVENT_STRING_FIELDS, MAX_EVENT_DETAILS, MAX_EVENT_FIELD, MAX_EVENT_ID, type AuditEvent } from '@keyshard/audit-log';
import { invalidArgument, permissionDenied, quote } from '@keyshard/errors';

export type RawEvent = Partial<Record<keyof AuditEvent, unknown>>;

/**
 * Copies exactly the proto fields. An event's `source` must be the appender's own identity
 * (empty = filled in), so one component cannot write events in another's name.
 */
export function normalizeEvent(raw: RawEvent | undefined, caller: string): AuditEvent {
  const ev = copyEvent(raw, caller);
  if (ev.source !== caller) throw forgedSource(ev.source, caller);
  return ev;
}

export const forgedSource = (source: string, caller: string) => permissionDenied(`event source ${quote(source)} does not match the caller's identity ${caller}`, { reason: 'AUDIT_SCOPE' });

/**
 * normalizeEvent without the source check, for a caller that checks it itself (the Append
 * handler, which counts and records a forged source as a refusal): an empty source is filled in.
 */
export function copyEvent(raw: RawEvent | undefined, caller: string): AuditEvent {
  const ev = {} as AuditEvent;
  for (const f of AUDIT_EVENT_STRING_FIELDS) {
    const v = raw?.[f] ?? '';
    if (typeof v !== 'string' || v.length > MAX_EVENT_FIELD) throw invalidArgument(`audit event field ${f} is invalid`);
    ev[f] = v;
  }
  if (!ev.id || ev.id.length > MAX_EVENT_ID) throw invalidArgument('audit event needs an id of 1..128 characters');
  if (!ev.operation) throw invalidArgument('audit event needs an operation');
  if (ev.source === '') ev.source = caller;
  const details = raw?.details ?? {};
  if (typeof details !== 'object' || details === null || Array.isArray(details)) throw invalidArgument('audit event details are invalid');
  const entries = Object.entries(details as Record<string, unknown>);
  if (entries.length > MAX_EVENT_DETAILS) throw invalidArgument(`audit event has more than ${MAX_EVENT_DETAILS} details`);
  ev.details = {};
  for (const [k, v] of entries) {
    if (typeof v !== 'string' || k.length > MAX_EVENT_FIELD || v.length > MAX_EVENT_FIELD) throw invalidArgument(`audit event detail ${k.slice(0, 64)} is invalid`);
    ev.details[k] = v;
  }
  return ev;
}

/** An event's size for quotas: UTF-8 bytes of its string fields, detail keys and values. */
export function eventBytes(ev: AuditEvent): number {
  let n = 0;
  for (const f of AUDIT_EVENT_STRING_FIELDS) n += Buffer.byteLength(ev[f]);
  for (const [k, v] of Object.entries(ev.details)) n += Buffer.byteLength(k) + Buffer.byteLength(v);
  return n;
}
