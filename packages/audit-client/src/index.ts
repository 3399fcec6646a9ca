/**
 * @keyshard/audit-client: what a component that audits uses. The producer (AuditClient,
 * client.ts) records events on the sink and resolves only once they are durable and covered
 * by a verified checkpoint; the durable spool (spool.ts) holds crypto-call events through a
 * sink outage; the observer (observer.ts) audits every RPC outcome; sink-link.ts is the
 * config a producer needs to pin the sink. The read side for auditors is `./reader`; the
 * formats and their verification are @keyshard/audit-log.
 */
export type { TlsMaterial } from '@keyshard/rpc';
export { AuditClient, type AuditClientOptions } from './client.ts';
export { completeEvent, type AuditEvent, type AuditEventInput } from './event.ts';
export { auditIntent, auditObserver, resultOf, type AuditObserverOptions, type AuditRecorder } from './observer.ts';
export { AuditSpool, RoutedAudit, type AuditSpoolOptions } from './spool.ts';
export { CheckpointTrust, loadCheckpointKeys } from '@keyshard/audit-log';
export { auditSinkPinFields, sinkCheckpointKeys, logSinkAlert, SINK_DISTRUSTED_ALERT } from './sink-link.ts';
