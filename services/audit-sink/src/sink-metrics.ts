/**
 * The audit sink's Prometheus metrics, all in one registry (served by @keyshard/metrics when
 * `metrics.listen` is set). Labels come from fixed sets only: no principal, key or event value.
 */
import { Counter, Gauge, Histogram, createRegistry, type Registry } from '@keyshard/metrics';
import { ALERT_RULES } from './alerts.ts';
import { REFUSAL_KINDS } from './refusals.ts';

export interface SinkMetrics {
  registry: Registry;
  /** Events newly stored (resent duplicates not counted), alert events included. */
  eventsAppended: Counter;
  /** Seconds from an Append batch's arrival to its durability (write + fdatasync + signature). */
  appendBatchSeconds: Histogram;
  alerts: Counter<'rule'>;
  /** Append batches refused: `scope` (an operation outside the appender's scope), `quota` (over its rate or size quota). */
  appendRefusals: Counter<'reason'>;
}

/** `logRecords` is read at each scrape. */
export function createSinkMetrics(logRecords: () => number): SinkMetrics {
  const registry = createRegistry();
  const registers = [registry];
  const alerts = new Counter({ name: 'keyshard_audit_alerts_total', help: 'Alerts raised, by rule', labelNames: ['rule'] as const, registers });
  for (const rule of ALERT_RULES) alerts.inc({ rule }, 0); // every rule's series exists from the start
  const appendRefusals = new Counter({
    name: 'keyshard_audit_append_refusals_total',
    help: 'Append batches refused, by reason: scope (an operation outside the appender scope) or quota (over its rate or size quota)',
    labelNames: ['reason'] as const,
    registers,
  });
  for (const reason of REFUSAL_KINDS) appendRefusals.inc({ reason }, 0);
  new Gauge({
    name: 'keyshard_audit_log_records',
    help: 'Records in the audit log (its Merkle tree size)',
    registers,
    collect() {
      this.set(logRecords());
    },
  });
  return {
    registry,
    alerts,
    appendRefusals,
    eventsAppended: new Counter({ name: 'keyshard_audit_events_appended_total', help: 'Audit events newly stored in the log', registers }),
    appendBatchSeconds: new Histogram({
      name: 'keyshard_audit_append_batch_seconds',
      help: 'Time from an Append batch arriving to it being durable',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
  };
}
