/**
 * The coordinator's Prometheus metrics, all in one registry (served by @keyshard/metrics when
 * `metrics.listen` is set): requests and latencies by method (fed by `unaryService`'s
 * onReply), seal state, leadership, ceremonies by operation and outcome, audit spool depth,
 * KeyService calls in flight and etcd failures. Gauges are read at each scrape. Labels come
 * from fixed sets only (methods, status names, ceremony operations): no key id or principal.
 */
import { Counter, Gauge, createCallMetrics, createRegistry, type CallMetrics, type Registry } from '@keyshard/metrics';
import { OPERATIONS } from '@keyshard/crypto';
import { onEtcdError } from '@keyshard/store';
import type { AuditRecorder } from '@keyshard/audit-client';

/** What the gauges read at each scrape. */
export interface CoordinatorState {
  sealed(): boolean;
  /** Whether this replica is the elected leader running the background jobs. */
  leading(): boolean;
  /** Audit events in the local spool not yet acknowledged by the sink (0 without a spool). */
  spoolPending(): number;
  /** KeyService calls admitted by the concurrency limit and not yet answered. */
  keyCallsInFlight(): number;
  /** Whether this replica's audit witness is in alarm (audit-witness/witness.ts). */
  witnessAlarm?(): boolean;
  /** Tree size of the last checkpoint this replica's witness cosigned. */
  witnessCosignedSize?(): number;
}

export interface CoordinatorMetrics {
  registry: Registry;
  calls: CallMetrics;
  /**
   * `audit`, counting the ceremony lifecycle events recorded through it (created, completed,
   * failed, expired, cancelled): ceremonies are audited at each step, so the audit record is
   * the one place every kind of ceremony passes through.
   */
  countingCeremonies(audit: AuditRecorder): AuditRecorder;
  /** Counts a stored record refused by its integrity check (record-integrity.ts), by kind of record. */
  integrityFailure(path: string): void;
  /** Stops counting etcd errors (the store's listener is process-wide). */
  close(): void;
}

const CEREMONY_EVENT = /^ceremony\.([\w-]+)\.(created|completed|failed|expired|cancelled)$/;
const CEREMONY_OPERATIONS: ReadonlySet<string> = new Set(OPERATIONS);
/** Kinds of MAC'd records (the first segment of the etcd key): a fixed label set. */
const RECORD_KINDS: ReadonlySet<string> = new Set(['keys', 'aliases', 'names', 'ceremonies', 'seal-epoch', 'coordinators', 'share-set-next', 'share-exports', 'cluster', 'usage']);

export function createCoordinatorMetrics(state: CoordinatorState): CoordinatorMetrics {
  const registry = createRegistry();
  const registers = [registry];
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  gauge('keyshard_sealed', '1 while this replica is sealed (holds no root key), 0 while unsealed', () => (state.sealed() ? 1 : 0));
  gauge('keyshard_leader', '1 while this replica is the elected leader running background jobs', () => (state.leading() ? 1 : 0));
  gauge('keyshard_audit_spool_pending_events', 'Audit events in the local spool not yet acknowledged by the sink', () => state.spoolPending());
  gauge('keyshard_audit_witness_alarm', '1 while this replica\'s audit witness saw a checkpoint it cannot prove consistent (rolled back, forked): audited operations are refused until `keyshard audit witness reset`', () => (state.witnessAlarm?.() ? 1 : 0));
  gauge('keyshard_audit_witness_cosigned_tree_size', 'Tree size of the last audit checkpoint this replica cosigned as a witness', () => state.witnessCosignedSize?.() ?? 0);
  gauge('keyshard_key_calls_in_flight', 'KeyService calls running (bounded by maxConcurrentCalls)', () => state.keyCallsInFlight());
  const ceremonies = new Counter({
    name: 'keyshard_ceremonies_total',
    help: 'Ceremony lifecycle events recorded by this replica, by operation and outcome',
    labelNames: ['operation', 'outcome'] as const,
    registers,
  });
  const integrityFailures = new Counter({
    name: 'keyshard_record_integrity_failures_total',
    help: 'Records in etcd refused because they failed their integrity check (altered outside keyshard?), by kind',
    labelNames: ['record'] as const,
    registers,
  });
  const etcdErrors = new Counter({ name: 'keyshard_etcd_errors_total', help: 'etcd calls that failed (answered UNAVAILABLE)', registers });
  const stopCounting = onEtcdError(() => etcdErrors.inc());
  return {
    registry,
    calls: createCallMetrics(registry),
    countingCeremonies: (audit) => ({
      async record(event) {
        await audit.record(event);
        const m = CEREMONY_EVENT.exec(event.operation);
        if (m && CEREMONY_OPERATIONS.has(m[1]!)) ceremonies.inc({ operation: m[1]!, outcome: m[2]! });
      },
    }),
    integrityFailure(path) {
      const kind = path.split('/')[0]!;
      integrityFailures.inc({ record: RECORD_KINDS.has(kind) ? kind : 'other' });
    },
    close: stopCounting,
  };
}
