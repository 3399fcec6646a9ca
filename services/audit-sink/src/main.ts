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
import { createLogger, loadConfig, runMain, type Logger } from '@keyshard/config';
import { serveMetrics, type MetricsServer } from '@keyshard/metrics';
import { HealthService, keyshardProto, principalOfCertificate, readTls, serverCredentials, serverOptions } from '@keyshard/rpc';
import { KEYS_DIR, SensitiveFields, loadHmacKey, loadPublicKeys } from '@keyshard/audit-log';
import { AlertEngine, alertReporter } from './alerts.ts';
import { AuditLog } from './audit-log.ts';
import { loadSigner } from './checkpoint-store.ts';
import { auditSinkConfigSchema, type AuditSinkConfig } from './config.ts';
import { AppenderQuotas } from './quota.ts';
import { RefusalRecorder } from './refusals.ts';
import { createAuditService } from './server.ts';
import { CosignedStore } from './cosigned.ts';
import { createSinkMetrics } from './sink-metrics.ts';

export interface RunningSink {
  address: string; // host:port actually bound
  /** host:port of GET /metrics, when configured. */
  metricsAddress?: string;
  log: AuditLog;
  /** Drains Append streams, stops the server and closes the log. Idempotent. */
  stop(): Promise<void>;
}

const SHUTDOWN_GRACE_MS = 5_000;

export async function startAuditSink(cfg: AuditSinkConfig, logger: Logger): Promise<RunningSink> {
  let stopping: Promise<void> | undefined;
  const signer = loadSigner(cfg.checkpointKeyFile);
  const sensitive = new SensitiveFields(loadHmacKey(cfg.hmacKeyFile), cfg.sensitive);
  const tls = readTls(cfg.tls);
  // Both read `log` only once it is open (at a scrape, or when an alert fires after an append).
  const metrics = createSinkMetrics(() => log.size);
  const alerts = new AlertEngine(
    cfg.alerts,
    alertReporter({ identity: principalOfCertificate(tls.cert), append: (events) => log.append(events), logger, alertsTotal: metrics.alerts }),
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
      try {
        alerts.observe(records);
      } catch (err) {
        logger.error({ err }, 'alert rules failed on committed records');
      }
    },
  });
  const cp = log.checkpoint;
  logger.info({ dataDir: cfg.dataDir, records: log.size, root: cp.root_hash, keyId: cp.key_id, truncatedBytes: log.openInfo.truncatedBytes }, 'audit log opened');

  const cosigned = await CosignedStore.open(cfg.dataDir, loadPublicKeys(path.join(cfg.dataDir, KEYS_DIR)));
  const refusals = new RefusalRecorder({
    identity: principalOfCertificate(tls.cert), append: (events) => log.append(events), sensitive, logger,
    refusalsTotal: metrics.appendRefusals, windowSeconds: cfg.quotas.refusalRecordSeconds,
  });
  const service = createAuditService(log, {
    appenders: cfg.appenders, readers: cfg.readers, quotas: new AppenderQuotas(cfg.quotas), refusals, sensitive, logger,
    appendBatchSeconds: metrics.appendBatchSeconds, cosigned,
  });
  const server = new grpc.Server(serverOptions(16 * 1024 * 1024));
  server.addService(keyshardProto().AuditService.service, service.implementation);
  const health = new HealthService({ '': 'SERVING', 'keyshard.v1.AuditService': 'SERVING' }).addToServer(server);
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(cfg.listen, serverCredentials(tls), (err, p) => (err ? reject(err) : resolve(p))),
    );
  } catch (e) {
    await log.close();
    throw e;
  }
  let metricsServer: MetricsServer | undefined;
  if (cfg.metrics) {
    try {
      metricsServer = await serveMetrics(metrics.registry, cfg.metrics.listen);
    } catch (e) {
      server.forceShutdown();
      await log.close();
      throw e;
    }
    logger.info({ address: metricsServer.address, port: metricsServer.port }, 'metrics listening');
  }
  const host = cfg.listen.slice(0, cfg.listen.lastIndexOf(':'));
  const address = `${host}:${port}`;
  // Last: "listening" is the readiness line supervisors and tests wait for.
  logger.info({ address }, 'listening');

  const stop = () =>
    (stopping ??= (async () => {
      health.shutdown();
      await service.drain();
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
  return { address, metricsAddress: metricsServer?.address, log, stop };
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
