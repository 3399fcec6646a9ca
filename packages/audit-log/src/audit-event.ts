/**
 * The audit event: keyshard.v1.AuditEvent (proto/keyshard/v1/audit.proto, field names as in the
 * proto) exactly as the sink stores and hashes it (record-format.ts), and the bounds every event
 * keeps. Producers check the bounds before sending (@keyshard/audit-client), so one bad event
 * never fails a batch of others' events; the sink checks them again and refuses what breaks them.
 * An event never carries a secret; values that must stay unreadable are stored as HMACs
 * (sensitive.ts).
 */

/** keyshard.v1.AuditEvent. Never put secrets in it. */
export interface AuditEvent {
  id: string; // producer-assigned, unique: makes delivery idempotent
  time: string; // RFC 3339 with milliseconds
  source: string; // producing component; the sink requires it to equal the producer's cert CN
  principal: string;
  operation: string; // e.g. keys.Encrypt
  key_id: string;
  ceremony_id: string;
  result: string; // ok | denied | error
  code: string; // gRPC status name when not ok
  request_id: string;
  details: Record<string, string>;
}

/** Every field of AuditEvent but `details` (a string map): all strings. */
export const AUDIT_EVENT_STRING_FIELDS = ['id', 'time', 'source', 'principal', 'operation', 'key_id', 'ceremony_id', 'result', 'code', 'request_id'] as const;

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
