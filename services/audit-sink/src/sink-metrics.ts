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

/** A replica's state at each scrape (replication/replica.ts): leader or not, its term, whether it stopped on a diverged log. */
export function addReplicaMetrics(registry: Registry, state: () => { leader: boolean; term: number; inSync: boolean; diverged: boolean }): void {
  const registers = [registry];
  const gauge = (name: string, help: string, value: (s: ReturnType<typeof state>) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(value(state()));
      },
    });
  gauge('keyshard_audit_replica_leader', '1 while this audit sink replica is the leader of the replicated log', (s) => (s.leader ? 1 : 0));
  gauge('keyshard_audit_replica_term', 'The replication term this replica is in (a rise is an election)', (s) => s.term);
  gauge('keyshard_audit_replica_in_sync', '1 once this replica proved its log a prefix of the leader\'s (it serves reads)', (s) => (s.inSync ? 1 : 0));
  gauge('keyshard_audit_replica_diverged', '1 if this replica found its log differing from the leader\'s and stopped taking part (alert on it)', (s) => (s.diverged ? 1 : 0));
}
