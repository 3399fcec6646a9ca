/**
 * The producer's side of an audit event: what a caller passes (AuditEventInput) and how it is
 * completed (id, time, source, the request id of the call being served) and checked against
 * the bounds the sink enforces (@keyshard/audit-log audit-event.ts) before it is queued or
 * spooled: one bad event in a batch would fail the whole batch, i.e. other callers' events too.
 */
import { randomUUID } from 'node:crypto';
import { AUDIT_EVENT_STRING_FIELDS, MAX_EVENT_DETAILS, MAX_EVENT_FIELD, MAX_EVENT_ID, type AuditEvent } from '@keyshard/audit-log';
import { KeyshardError } from '@keyshard/errors';
import { currentRequestId } from '@keyshard/rpc';

export type { AuditEvent };

/** What a caller passes: id, time and source are filled in; other optional fields default to empty. */
export type AuditEventInput = Pick<AuditEvent, 'principal' | 'operation' | 'result'> & Partial<AuditEvent>;

function invalidReason(e: AuditEvent): string | undefined {
  if (!e.operation) return 'needs an operation';
  if (e.id.length > MAX_EVENT_ID) return `id is longer than ${MAX_EVENT_ID} characters`;
  for (const f of AUDIT_EVENT_STRING_FIELDS) if (typeof e[f] !== 'string' || e[f].length > MAX_EVENT_FIELD) return `field ${f} is invalid`;
  let details = 0;
  for (const k in e.details) {
    const v = e.details[k];
    if (typeof v !== 'string' || k.length > MAX_EVENT_FIELD || v.length > MAX_EVENT_FIELD) return 'details are invalid';
    if (++details > MAX_EVENT_DETAILS) return `has more than ${MAX_EVENT_DETAILS} details`;
  }
  return undefined;
}

/**
 * Fills id, time and source, defaults the optional fields (request_id: that of the call being
 * served, so events a request causes link to it), and checks the sink's limits here.
 */
export function completeEvent(input: AuditEventInput, source: string): AuditEvent {
  // Every field named, in one fixed order: one object shape on the hot path of every call.
  const event: AuditEvent = {
    id: input.id || randomUUID(),
    time: input.time || new Date().toISOString(),
    source: input.source || source,
    principal: input.principal,
    operation: input.operation,
    key_id: input.key_id ?? '',
    ceremony_id: input.ceremony_id ?? '',
    result: input.result,
    code: input.code ?? '',
    request_id: input.request_id || currentRequestId() || '',
    details: { ...input.details },
  };
  const invalid = invalidReason(event);
  if (invalid) throw new KeyshardError('INVALID_ARGUMENT', `audit event ${invalid}`);
  return event;
}
