/**
 * @keyshard/audit-log: the tamper-evident audit log's formats and their verification, with no
 * network and no service in it, so the sink that writes the log, the producers that check its
 * acknowledgements, and auditors who read or verify a copy all use the same code:
 *   audit-event.ts       keyshard.v1.AuditEvent, its bounds, the sink's own events (alerts, refusals)
 *   appender-scope.ts    which operations each kind of appender (coordinator, custodian) may record
 *   record-format.ts     one record line on disk; its Merkle entry (canonical JSON of the event)
 *   id-index.ts          every event id with its record index (beyond the 2^24 entries of one Map)
 *   merkle.ts            RFC 6962 / RFC 9162 tree hashing, inclusion and consistency proofs
 *   checkpoint.ts        signed checkpoints (tree heads): body bytes, Ed25519, key ids
 *   checkpoint-trust.ts  what a producer accepts from the sink, checkpoint after checkpoint
 *   cosignature.ts       witness cosignatures (C2SP tlog-checkpoint / tlog-cosignature v1), vkeys
 *   sensitive.ts         HMAC-SHA256 of sensitive fields
 *   log-dir.ts           a log directory on disk: segments, keys, checkpoints.log, cosigned.log
 *   trust.ts             what a verifier is given from outside a log directory: trust roots, cosigned files
 *   verify.ts            offline verification of a log directory, trusting only those roots
 * Every byte format is described in VECTORS.md and frozen by vectors/*.json, which the specs
 * recompute.
 */
export * from './appender-scope.ts';
export * from './audit-event.ts';
export * from './checkpoint.ts';
export * from './checkpoint-trust.ts';
export * from './cosignature.ts';
export * from './id-index.ts';
export * from './log-dir.ts';
export * from './merkle.ts';
export * from './record-format.ts';
export * from './sensitive.ts';
export * from './trust.ts';
export * from './verify.ts';
