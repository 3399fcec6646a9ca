/**
 * The audit sink process:
 *   node services/audit-sink/dist/main.js --config audit-sink.json
 * Opens (and verifies) the log, serves AuditService over mutual TLS, feeds every durable record
 * to the alert rules (alerts.ts), serves /metrics if configured, and on SIGTERM/SIGINT
 * acknowledges what it has accepted, writes a last checkpoint, stops, and exits 0.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { ConfigError, createLogger, loadConfig, runMain, type Logger } from '@keyshard/config';
import { serveMetrics, type MetricsServer } from '@keyshard/metrics';
import { HealthService, keyshardProto, principalOfCertificate, readTls, serverCredentials, serverOptions } from '@keyshard/rpc';
import { KEYS_DIR, SensitiveFields, keyIdOf, loadCheckpointKeys, loadHmacKey, loadPublicKeys } from '@keyshard/audit-log';
import { AlertEngine, alertReporter } from './alerts.ts';
import { AuditLog } from './audit-log.ts';
import { loadSigner } from './checkpoint-store.ts';
import { auditSinkConfigSchema, type AuditSinkConfig } from './config.ts';
import { AppenderQuotas } from './quota.ts';
import { RefusalRecorder } from './refusals.ts';
import { createAuditService } from './server.ts';
import { CosignedStore } from './cosigned.ts';
import { addReplicaMetrics, createSinkMetrics } from './sink-metrics.ts';
import { Replica, type ReplicaPeer } from './replication/replica.ts';
import { ReplicatedSinkLog, type SinkLog } from './replication/sink-log.ts';
import { ReplicaStore } from './replication/store.ts';

export interface RunningSink {
  address: string; // host:port actually bound
  /** host:port of GET /metrics, when configured. */
  metricsAddress?: string;
  log: AuditLog;
  /** The replication node when `replication` is configured. */
  replica?: Replica;
  /** Drains Append streams, stops the server and closes the log. Idempotent. */
  stop(): Promise<void>;
}

const SHUTDOWN_GRACE_MS = 5_000;

export async function startAuditSink(cfg: AuditSinkConfig, logger: Logger): Promise<RunningSink> {
  let stopping: Promise<void> | undefined;
  const signer = loadSigner(cfg.checkpointKeyFile);
  const sensitive = new SensitiveFields(loadHmacKey(cfg.hmacKeyFile), cfg.sensitive);
  const tls = readTls(cfg.tls);
  const self = principalOfCertificate(tls.cert);
  const peers = cfg.replication ? replicaPeers(cfg.replication.replicas, self) : undefined;
  let replica: Replica | undefined;
  // Both read `log` only once it is open (at a scrape, or when an alert fires after an append).
  const metrics = createSinkMetrics(() => log.size);
  const alerts = new AlertEngine(
    cfg.alerts,
    alertReporter({ identity: self, append: (events) => sinkLog.append(events), logger, alertsTotal: metrics.alerts }),
  );
  const log = await AuditLog.open(cfg.dataDir, {
    signer,
    segmentBytes: cfg.segmentBytes,
    checkpointIntervalMs: cfg.checkpointIntervalMs,
    // The log refuses all writes after an I/O failure; exit so a supervisor restarts us and
    // the reopen re-verifies the files and drops the torn tail.
    onFailure: (err) => {
      logger.fatal({ err }, 'audit log write failed; exiting');
      void (stopping ?? Promise.resolve()).finally(() => process.exit(1));
    },
    onCommitted: (records) => {
      metrics.eventsAppended.inc(records.length);
      // Alert rules run on the leader only (it appends what they raise); a new leader starts
      // with empty windows.
      if (replica && replica.role !== 'leader') return;
      try {
        alerts.observe(records);
      } catch (err) {
        logger.error({ err }, 'alert rules failed on committed records');
      }
    },
  });
  let sinkLog: SinkLog = log;
  if (cfg.replication && peers) {
    let store: ReplicaStore;
    try {
      store = await ReplicaStore.open(cfg.dataDir);
    } catch (e) {
      await log.close();
      throw e;
    }
    replica = new Replica({
      self, replicas: peers, log, store, tls, logger,
      electionMs: cfg.replication.electionTimeoutMs, heartbeatMs: cfg.replication.heartbeatMs,
    });
    const r = replica;
    addReplicaMetrics(metrics.registry, () => ({ leader: r.role === 'leader', term: r.currentTerm, inSync: r.inSync, diverged: r.divergedReason !== undefined }));
    sinkLog = new ReplicatedSinkLog(log, replica);
  }
  const cp = log.checkpoint;
  logger.info({ dataDir: cfg.dataDir, records: log.size, root: cp.root_hash, keyId: cp.key_id, truncatedBytes: log.openInfo.truncatedBytes }, 'audit log opened');

  // A replica takes cosignatures of any replica's checkpoints (the witnesses cosign the leader's),
  // still only for roots its own log has at that size.
  const cosignedKeys = loadPublicKeys(path.join(cfg.dataDir, KEYS_DIR));
  for (const p of peers ?? []) cosignedKeys.set(keyIdOf(p.publicKey), p.publicKey);
  const cosigned = await CosignedStore.open(cfg.dataDir, cosignedKeys);
  const refusals = new RefusalRecorder({
    identity: self, append: (events) => sinkLog.append(events), sensitive, logger,
    refusalsTotal: metrics.appendRefusals, windowSeconds: cfg.quotas.refusalRecordSeconds,
  });
  const service = createAuditService(sinkLog, {
    appenders: cfg.appenders, readers: cfg.readers, quotas: new AppenderQuotas(cfg.quotas), refusals, sensitive, logger,
    appendBatchSeconds: metrics.appendBatchSeconds, cosigned,
    appendRefusal: replica ? () => (replica!.role === 'leader' ? undefined : replica!.notLeader()) : undefined,
  });
  const server = new grpc.Server(serverOptions(16 * 1024 * 1024));
  server.addService(keyshardProto().AuditService.service, service.implementation);
  if (replica) server.addService(replica.service.definition, replica.service.implementation);
  const health = new HealthService({ '': 'SERVING', 'keyshard.v1.AuditService': 'SERVING' }).addToServer(server);
  // A replica's AuditService is SERVING once it is the leader or a follower that proved its log
  // against the leader's (REPLICATION.md); the process itself ('') serves either way.
  const r = replica;
  const healthTimer = r ? setInterval(health.track(['keyshard.v1.AuditService'], () => r.inSync), 250) : undefined;
  healthTimer?.unref();
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(cfg.listen, serverCredentials(tls), (err, p) => (err ? reject(err) : resolve(p))),
    );
  } catch (e) {
    await replica?.close();
    await log.close();
    throw e;
  }
  replica?.start();
  let metricsServer: MetricsServer | undefined;
  if (cfg.metrics) {
    try {
      metricsServer = await serveMetrics(metrics.registry, cfg.metrics.listen);
    } catch (e) {
      server.forceShutdown();
      await replica?.close();
      await log.close();
      throw e;
    }
    logger.info({ address: metricsServer.address, port: metricsServer.port }, 'metrics listening');
  }
  const host = cfg.listen.slice(0, cfg.listen.lastIndexOf(':'));
  const address = `${host}:${port}`;
  // Last: "listening" is the readiness line supervisors and tests wait for.
  logger.info({ address, ...(replica ? { replica: self, replicas: peers!.length } : {}) }, 'listening');

  const stop = () =>
    (stopping ??= (async () => {
      clearInterval(healthTimer);
      health.shutdown();
      await service.drain();
      await replica?.close();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, SHUTDOWN_GRACE_MS);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await log.close();
      await cosigned.close();
      await metricsServer?.close();
      logger.info({ records: log.size, root: log.checkpoint.root_hash }, 'stopped');
    })());
  return { address, metricsAddress: metricsServer?.address, log, replica, stop };
}

/** The configured replicas with their checkpoint keys; this sink (its certificate CN) must be one. ConfigError otherwise. */
function replicaPeers(list: NonNullable<AuditSinkConfig['replication']>['replicas'], self: string): ReplicaPeer[] {
  if (!list.some((r) => r.id === self)) throw new ConfigError(`invalid config: replication.replicas: no replica has this sink's certificate name ${JSON.stringify(self)}`);
  return list.map((r) => {
    let keys: Map<string, import('node:crypto').KeyObject>;
    try {
      keys = loadCheckpointKeys([r.checkpointPublicKey]);
    } catch (e) {
      throw new ConfigError(`invalid config: replication.replicas ${JSON.stringify(r.id)}: ${(e as Error).message}`);
    }
    return { id: r.id, address: r.address, publicKey: [...keys.values()][0]! };
  });
}

async function main(): Promise<void> {
  const cfg = loadConfig(auditSinkConfigSchema);
  const logger = createLogger('audit-sink', cfg.logLevel ?? 'info');
  const sink = await startAuditSink(cfg, logger);
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'shutting down');
    sink.stop().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}

// Importable (startAuditSink) without starting a process.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void runMain(main);
}
