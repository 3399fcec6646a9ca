/** The audit sink's configuration file (JSON, passed with --config). */
import { address, tlsFiles, z } from '@keyshard/config';
import { metricsConfig } from '@keyshard/metrics';
import { APPENDER_SCOPES, MAX_APPEND_BATCH, MAX_EVENT_FIELD, type AppenderScope } from '@keyshard/audit-log';

const principal = z.string().min(1).max(256);
const operations = z.array(z.string().min(1).max(256)).max(256);
const seconds = (max: number) => z.number().int().min(1).max(max);

/**
 * Alert rules (alerts.ts), each with its defaults; `enabled: false` turns one off. Windows are
 * on the sink's clock, at the time events become durable.
 */
export const alertRulesSchema = z
  .strictObject({
    /** `threshold` PERMISSION_DENIED/UNAUTHENTICATED outcomes by one principal within `windowSeconds`. */
    denials: z
      .strictObject({
        enabled: z.boolean().default(true),
        threshold: z.number().int().min(1).max(100_000).default(5),
        windowSeconds: seconds(86_400).default(60),
      })
      .prefault({}),
    /** Any successful event with one of these operations: destroy ceremonies opened and completed, scheduled key destruction. */
    destroy: z
      .strictObject({
        enabled: z.boolean().default(true),
        operations: operations.default([
          'ceremony.destroy-key.created',
          'ceremony.destroy-key.completed',
          'ceremony.destroy-cluster.created',
          'ceremony.destroy-cluster.completed',
          'keys.ScheduleKeyDestruction',
        ]),
      })
      .prefault({}),
    /**
     * Any refused (denied or failed) event with one of these operations: a custodian refusing a
     * ceremony (e.g. a join no unsealed replica vouched for), a replica refusing to vouch.
     */
    refusals: z
      .strictObject({
        enabled: z.boolean().default(true),
        operations: operations.default(['custodian.ProposeCeremony', 'ceremony.join.vouch_refused']),
      })
      .prefault({}),
    /**
     * Any event with one of these operations, whatever its result: a record in etcd refused by its
     * integrity check (altered outside keyshard?) — services/coordinator/src/cluster/record-integrity.ts.
     */
    integrity: z
      .strictObject({
        enabled: z.boolean().default(true),
        operations: operations.default(['integrity.record_refused']),
      })
      .prefault({}),
    /**
     * The rate of `operations` over `windowSeconds` above `factor` times their rate over the
     * `baselineSeconds` before it, and at least `minRatePerSecond` (quiet clusters stay quiet).
     */
    decryptSpike: z
      .strictObject({
        enabled: z.boolean().default(true),
        operations: operations.default(['keys.Decrypt', 'keys.DecryptBatch']),
        windowSeconds: seconds(3600).default(10),
        baselineSeconds: seconds(86_400).default(300),
        factor: z.number().min(1).max(1_000_000).default(5),
        minRatePerSecond: z.number().positive().default(20),
      })
      .refine((r) => r.baselineSeconds >= 2 * r.windowSeconds, 'decryptSpike.baselineSeconds must be at least twice windowSeconds')
      .prefault({}),
    /** Events whose own time is older than this (a producer's spool draining after an outage) do not count toward rates. */
    backlogSeconds: seconds(86_400).default(120),
    /** Principals tracked by the denials rule at most (least recently denied dropped first). */
    maxPrincipals: z.number().int().min(1).max(1_000_000).default(10_000),
  })
  .prefault({});

export type AlertRules = z.infer<typeof alertRulesSchema>;

/**
 * One appender: a certificate CN and its scope, the operations it may record (coordinator |
 * custodian; the table: @keyshard/audit-log appender-scope.ts). A bare name (the flat list of
 * earlier versions) is refused at start-up with a message saying what to write instead.
 */
export const appenderSchema = z.strictObject(
  { principal, scope: z.enum(APPENDER_SCOPES) },
  {
    error: (iss) =>
      iss.code === 'invalid_type' && typeof iss.input === 'string'
        ? `a bare name (${JSON.stringify(iss.input.slice(0, 64))}) is not accepted any more: write { "principal": ${JSON.stringify(iss.input.slice(0, 64))}, "scope": "coordinator" | "custodian" } — the scope says which operations it may record`
        : undefined,
  },
);

const rate = (dflt: number) => z.number().positive().max(1e9).default(dflt);
const burst = (dflt: number) => z.number().int().min(1).max(1e10).default(dflt);

/** One scope's token buckets, one pair per appender of that scope. */
const scopeQuota = (d: { events: number; burstEvents: number; bytes: number; burstBytes: number }) =>
  z
    .strictObject({
      /** Sustained events per second per appender. */
      eventsPerSecond: rate(d.events),
      /** Events an appender may send at once after a quiet spell (the bucket's size). */
      burstEvents: burst(d.burstEvents),
      /** Sustained bytes per second per appender (UTF-8 bytes of the events' fields and details). */
      bytesPerSecond: rate(d.bytes),
      burstBytes: burst(d.burstBytes),
    })
    .prefault({});

const MiB = 1024 * 1024;

/**
 * Per-appender quotas (token buckets; quota.ts). A batch over them is refused RESOURCE_EXHAUSTED
 * (reason AUDIT_QUOTA) and stored nowhere; producers try again later (crypto events wait in their
 * spool, other calls fail closed). Defaults sit far above normal load — a coordinator's own
 * audited traffic at full speed (bench:audit) — and bound what one stolen appender certificate
 * can write.
 */
export const quotasSchema = z
  .strictObject({
    coordinator: scopeQuota({ events: 50_000, burstEvents: 100_000, bytes: 32 * MiB, burstBytes: 64 * MiB }),
    custodian: scopeQuota({ events: 500, burstEvents: 5_000, bytes: 512 * 1024, burstBytes: 2 * MiB }),
    /** Events in one Append request at most (producers send at most MAX_APPEND_BATCH). */
    maxBatchEvents: z.number().int().min(1).max(100_000).default(MAX_APPEND_BATCH),
    /** Bytes of one Append request's events at most. */
    maxBatchBytes: z.number().int().min(MAX_EVENT_FIELD).max(16 * MiB).default(2 * MiB),
    /** A refusal is recorded in the log (`audit.append_refused`) at most once per this many seconds per appender and kind (and operation, for scope refusals); the rest are counted. */
    refusalRecordSeconds: seconds(86_400).default(60),
  })
  .superRefine((q, ctx) => {
    // A batch of the largest size the sink takes must fit a full bucket, or a producer would resend it forever.
    for (const scope of APPENDER_SCOPES) {
      if (q[scope].burstEvents < q.maxBatchEvents) ctx.addIssue({ code: 'custom', path: [scope, 'burstEvents'], message: `must be at least maxBatchEvents (${q.maxBatchEvents})` });
      if (q[scope].burstBytes < q.maxBatchBytes) ctx.addIssue({ code: 'custom', path: [scope, 'burstBytes'], message: `must be at least maxBatchBytes (${q.maxBatchBytes})` });
    }
  })
  .prefault({});

export type Quotas = z.infer<typeof quotasSchema>;
export type ScopeQuota = Quotas[AppenderScope];

/**
 * Replicated log (replication/replica.ts, REPLICATION.md): every replica lists all replicas,
 * itself included (this one is the entry whose id is its own certificate CN). An odd number;
 * an event is acknowledged once a majority holds it. Absent: one sink, as before.
 */
export const replicationSchema = z
  .strictObject({
    replicas: z
      .array(
        z.strictObject({
          /** The replica's certificate CN: how it is authenticated by the others and pinned by producers. */
          id: principal,
          /** host:port where its AuditService (and the replication service) listens. */
          address,
          /** Its checkpoint public key (Ed25519 SPKI PEM file): its checkpoints verify under it. */
          checkpointPublicKey: z.string().min(1),
        }),
      )
      .min(1)
      .max(7)
      .superRefine((list, ctx) => {
        if (list.length % 2 === 0) ctx.addIssue({ code: 'custom', message: `an odd number of replicas is needed (a majority of an even number tolerates no more failures than one fewer), not ${list.length}` });
        if (new Set(list.map((r) => r.id)).size !== list.length) ctx.addIssue({ code: 'custom', message: 'replica ids must be distinct' });
      }),
    /** A follower that hears no leader for a random time in [this, 2·this) starts an election; a leader that hears no majority for this long steps down. */
    electionTimeoutMs: z.number().int().min(100).max(60_000).default(1000),
    /** How often the leader sends its state to each follower when idle. */
    heartbeatMs: z.number().int().min(10).max(10_000).default(100),
  })
  .refine((r) => r.heartbeatMs * 2 <= r.electionTimeoutMs, 'replication.heartbeatMs must be at most half of electionTimeoutMs');

export type ReplicationConfig = z.infer<typeof replicationSchema>;

export const auditSinkConfigSchema = z.strictObject({
  /** host:port to bind; port 0 picks a free port (the bound one is logged). */
  listen: address,
  /** Directory holding the log: segments/, audit.log (-> active segment), checkpoints.log, keys/ (created 0700 if missing). */
  dataDir: z.string().min(1),
  /** PEM files: cluster CA (verifies client certs), this sink's cert and key. */
  tls: tlsFiles,
  /** Who may Append, and which operations each may record: `[{ "principal": "coordinator-1", "scope": "coordinator" }, …]`. */
  appenders: z.array(appenderSchema).superRefine((list, ctx) => {
    const seen = new Set<string>();
    for (const a of list) {
      if (seen.has(a.principal)) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(a.principal.slice(0, 64))} is listed more than once: one scope per appender` });
      seen.add(a.principal);
    }
  }),
  /** Certificate CNs allowed to read: GetCheckpoint, proofs, Query, Tail, HashValue. */
  readers: z.array(principal),
  /** Ed25519 private key (PKCS#8 PEM) that signs checkpoints; generated if missing. Keep it outside dataDir. */
  checkpointKeyFile: z.string().min(1),
  /** 32-byte HMAC key (hex) for sensitive fields; generated if missing. Keep it outside dataDir. */
  hmacKeyFile: z.string().min(1),
  /** Values stored as HMAC-SHA256 besides every `sensitive.*` detail. */
  sensitive: z
    .strictObject({
      fields: z.array(z.enum(['principal', 'key_id', 'ceremony_id', 'code', 'request_id'])).optional(),
      details: z.array(z.string().min(1).max(256)).optional(),
    })
    .optional(),
  /** A new segment file is started once the active one reaches this size (default 64 MiB). */
  segmentBytes: z.number().int().min(4096).optional(),
  /** How often a checkpoint is written to checkpoints.log when the log grew (default 10 s). */
  checkpointIntervalMs: z.number().int().min(100).optional(),
  alerts: alertRulesSchema,
  quotas: quotasSchema,
  /** Replicas of this log (absent: a single sink). */
  replication: replicationSchema.optional(),
  /** Prometheus endpoint (GET /metrics, loopback only); off when absent. The bound port is logged ("metrics listening"). */
  metrics: metricsConfig.optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
});

export type AuditSinkConfig = z.infer<typeof auditSinkConfigSchema>;
