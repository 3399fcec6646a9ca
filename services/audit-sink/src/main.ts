/**
 * The audit sink process:
 *   node --import tsx services/audit-sink/src/main.ts --config audit-sink.json
 * Opens (and verifies) the log, serves AuditService over mutual TLS, and on SIGTERM/SIGINT
 * acknowledges what it has accepted, writes a last checkpoint, stops, and exits 0.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { createLogger, loadConfig, runMain, type Logger } from '@keyshard/config';
import { keyshardProto, readTls, serverCredentials, serverOptions } from '@keyshard/rpc';
import { AuditLog } from './audit-log.ts';
import { loadSigner } from './checkpoint-store.ts';
import { auditSinkConfigSchema, type AuditSinkConfig } from './config.ts';
import { SensitiveFields, loadHmacKey } from './sensitive.ts';
import { createAuditService } from './server.ts';

export interface RunningSink {
  address: string; // host:port actually bound
  log: AuditLog;
  /** Drains Append streams, stops the server and closes the log. Idempotent. */
  stop(): Promise<void>;
}

const SHUTDOWN_GRACE_MS = 5_000;

export async function startAuditSink(cfg: AuditSinkConfig, logger: Logger): Promise<RunningSink> {
  let stopping: Promise<void> | undefined;
  const signer = loadSigner(cfg.checkpointKeyFile);
  const sensitive = new SensitiveFields(loadHmacKey(cfg.hmacKeyFile), cfg.sensitive);
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
  });
  const cp = log.checkpoint;
  logger.info({ dataDir: cfg.dataDir, records: log.size, root: cp.root_hash, keyId: cp.key_id, truncatedBytes: log.openInfo.truncatedBytes }, 'audit log opened');

  const service = createAuditService(log, { appenders: cfg.appenders, readers: cfg.readers, sensitive, logger });
  const server = new grpc.Server(serverOptions(16 * 1024 * 1024));
  server.addService(keyshardProto().AuditService.service, service.implementation);
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(cfg.listen, serverCredentials(readTls(cfg.tls)), (err, p) => (err ? reject(err) : resolve(p))),
    );
  } catch (e) {
    await log.close();
    throw e;
  }
  const host = cfg.listen.slice(0, cfg.listen.lastIndexOf(':'));
  const address = `${host}:${port}`;
  logger.info({ address }, 'listening');

  const stop = () =>
    (stopping ??= (async () => {
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
      logger.info({ records: log.size, root: log.checkpoint.root_hash }, 'stopped');
    })());
  return { address, log, stop };
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
