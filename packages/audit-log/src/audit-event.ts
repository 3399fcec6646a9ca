/**
 * The audit event: keyshard.v1.AuditEvent (proto/keyshard/v1/audit.proto, field names as in the
 * proto) exactly as the sink stores and hashes it (record-format.ts), and the bounds every event
 * keeps. Producers check the bounds before sending (@keyshard/audit-client), so one bad event
 * never fails a batch of others' events; the sink checks them again and refuses what breaks them.
 * An event never carries a secret; values that must stay unreadable are stored as HMACs
 * (sensitive.ts).
 */
import type { pb } from '@keyshard/rpc';

/**
 * keyshard.v1.AuditEvent, every field set: the type generated from audit.proto (its fields and
 * their meaning are described there). Never put secrets in it. `source` must equal the
 * producer's certificate CN (the sink checks); `result` is ok | denied | error; `code` the gRPC
 * status name when not ok.
 */
export type AuditEvent = pb.AuditEvent__Output;

/** Every field of AuditEvent but `details` (a string map): all strings. */
export const AUDIT_EVENT_STRING_FIELDS = ['id', 'time', 'source', 'principal', 'operation', 'key_id', 'ceremony_id', 'result', 'code', 'request_id'] as const satisfies readonly (keyof AuditEvent)[];

// The type check fails if audit.proto gains a field the list above lacks.
type None<T extends never> = T;
export type UnlistedEventFields = None<Exclude<keyof AuditEvent, (typeof AUDIT_EVENT_STRING_FIELDS)[number] | 'details'>>;

// Bounds keep one producer from bloating the log; real events are far smaller.
export const MAX_EVENT_ID = 128;
/** Characters in any string field, and in each detail key and value. */
export const MAX_EVENT_FIELD = 4096;
export const MAX_EVENT_DETAILS = 64;

/**
 * The operation of the events the sink appends itself when an alert rule fires; their details
 * are `rule`, `summary`, `subject`, `trigger_index` and the rule's own facts. Only the sink
 * writes them (it refuses them from producers); readers show them as alerts.
 */
export const ALERT_OPERATION = 'audit.alert';

/**
 * The operation of the events the sink appends itself when it refuses an Append batch: an event
 * outside the appender's scope (appender-scope.ts; code PERMISSION_DENIED) or a batch over the
 * appender's quota (RESOURCE_EXHAUSTED). `principal` is the refused appender; details say why
 * (`reason` AUDIT_SCOPE | AUDIT_QUOTA, `scope`, `tried_operation`, `claimed_source` when an event
 * named another source, `limit`, `events`, `bytes`, `suppressed`: refusals of the same kind not
 * recorded since the last such event), never the refused events themselves. Only the sink
 * writes them. A source claimed falsely is a scope refusal too (PERMISSION_DENIED).
 */
export const APPEND_REFUSED_OPERATION = 'audit.append_refused';

/**
 * Events in one Append request at most: producers batch up to this many (@keyshard/audit-client),
 * the sink refuses larger batches (RESOURCE_EXHAUSTED) unless configured otherwise.
 */
export const MAX_APPEND_BATCH = 1000;
