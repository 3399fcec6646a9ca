/**
 * Which operations each kind of audit appender may record: the one table of appender scopes.
 * The sink (services/audit-sink, config `appenders: [{ principal, scope }]`) refuses, with
 * PERMISSION_DENIED (reason AUDIT_SCOPE), every Append batch holding an event whose operation
 * the appender's scope does not cover, so one component cannot write events in another's name
 * (a custodian certificate cannot record `keys.Decrypt` by `admin`). Together with `source` =
 * the appender's certificate CN (the sink enforces it), every stored event was written by a
 * component allowed to say it.
 *
 * An operation belongs to a scope when it starts with one of the scope's prefixes. The prefixes
 * are the gRPC service names each component audits its calls under (`<service>.<Method>` and
 * `<service>.<Method>.requested`, @keyshard/audit-client observer.ts) and the names of the events
 * it records itself:
 *   coordinator  keys.*       KeyService calls; keys.rotation.scheduled / keys.rotation.usage
 *                ceremony.*   CeremonyService calls; ceremony.<operation>.<step> of every ceremony
 *                backup.*     BackupService calls; backup.scheduled
 *                restore.*    restore.committing / completed / failed
 *                cluster.*    cluster.seal_epoch.raised / followed, cluster.seal_notice.sent
 *                integrity.*  integrity.record_refused
 *                witness.*    the coordinator's witness of the sink's checkpoints
 *   custodian    custodian.*  CustodianService calls (the only events a custodian records)
 * `audit.*` belongs to no appender: the sink writes those itself (SINK_OPERATIONS).
 * The prefixes of different scopes never overlap (appender-scope.spec.ts), and a spec reads the
 * coordinator's and custodian's sources to check that every operation they record is in scope.
 */
import { ALERT_OPERATION, APPEND_REFUSED_OPERATION } from './audit-event.ts';

export const APPENDER_SCOPES = ['coordinator', 'custodian'] as const;
export type AppenderScope = (typeof APPENDER_SCOPES)[number];

export const SCOPE_OPERATION_PREFIXES: Readonly<Record<AppenderScope, readonly string[]>> = {
  coordinator: ['keys.', 'ceremony.', 'backup.', 'restore.', 'cluster.', 'integrity.', 'witness.'],
  custodian: ['custodian.'],
};

/** Events only the sink writes; every operation under `audit.` is reserved for it. */
export const SINK_OPERATION_PREFIX = 'audit.';
export const SINK_OPERATIONS = [ALERT_OPERATION, APPEND_REFUSED_OPERATION] as const;

export function isAppenderScope(s: unknown): s is AppenderScope {
  return typeof s === 'string' && (APPENDER_SCOPES as readonly string[]).includes(s);
}

/** Whether an appender of `scope` may record an event of `operation`. */
export function scopeAllows(scope: AppenderScope, operation: string): boolean {
  if (operation.startsWith(SINK_OPERATION_PREFIX)) return false;
  for (const p of SCOPE_OPERATION_PREFIXES[scope]) if (operation.length > p.length && operation.startsWith(p)) return true;
  return false;
}
