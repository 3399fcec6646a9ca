/** Custodian node process: one per HSM token. Configuration, wiring, start and stop. */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ConfigError, createLogger, loadConfig, runMain } from '@keyshard/config';
import { keyshardProto, principalOfCertificate, readTls, serverCredentials, serverOptions, unaryService, decodingSafe, HealthService, requestLogFields } from '@keyshard/rpc';
import { auditSinkDistrustedGauge, serveMetrics, type MetricsServer } from '@keyshard/metrics';
import { CustodianToken } from '@keyshard/hsm';
import { AuditClient, auditIntent, auditObserver, logSinkAlert, sinkCheckpointKeys } from '@keyshard/audit-client';
import { custodianConfig } from './config.ts';
import { Custody } from './custody.ts';
import { TrustedKeys } from './trusted-keys.ts';
import { authorizer, custodianHandlers, STATE_CHANGING } from './server.ts';
import { createCustodianMetrics } from './custodian-metrics.ts';

/**
 * Largest message a custodian accepts: its requests are shares (≤ 1 KiB), ceremonies and peer
 * lists of PEM keys, far below this. Larger ones are refused RESOURCE_EXHAUSTED by grpc-js.
 */
const MAX_MESSAGE_BYTES = 1024 * 1024;

function readPin(pinFile: string | undefined): string {
  const pin = pinFile ? readFileSync(pinFile, 'utf8').trim() : process.env.KEYSHARD_CUSTODIAN_PIN;
  delete process.env.KEYSHARD_CUSTODIAN_PIN; // not inherited by children, not in /proc/<pid>/environ
  if (!pin) throw new ConfigError('no token PIN: set token.pinFile or KEYSHARD_CUSTODIAN_PIN');
  return pin;
}

async function main(): Promise<void> {
  const config = loadConfig(custodianConfig);
  const log = createLogger('custodian', config.logLevel, requestLogFields);
  const tls = readTls(config.tls);
  const checkpointKeys = sinkCheckpointKeys(config.audit.checkpointPublicKeys);
  const token = CustodianToken.open({
    modulePath: config.token.modulePath,
    tokenLabel: config.token.label,
    pin: readPin(config.token.pinFile),
    oaepHash: config.oaepHash,
  });
  const identity = token.ensureIdentity();
  const custody = new Custody(token, config.custodianId, { approval: config.approvalPolicy, join: config.joinPolicy }, new Set(config.coordinators));
  const audit = new AuditClient({
    address: config.audit.address, tls, source: principalOfCertificate(tls.cert), timeoutMs: config.audit.timeoutMs,
    serverId: config.audit.serverId, replicas: config.audit.replicas, checkpointKeys, onAlert: logSinkAlert(log, config.audit.address),
  });

  const proto = keyshardProto();
  const metrics = createCustodianMetrics({ shareClusters: () => token.shareClusterIds().length, pendingCeremonies: () => custody.pending().length });
  auditSinkDistrustedGauge(metrics.registry, () => Boolean(audit.distrusted));
  const server = new grpc.Server(serverOptions(MAX_MESSAGE_BYTES));
  server.addService(
    decodingSafe(proto.CustodianService.service),
    unaryService(
      proto.CustodianService.service,
      custodianHandlers({
        custodianId: config.custodianId,
        tokenLabel: config.token.label,
        oaepHash: config.oaepHash,
        policy: config.approvalPolicy,
        token,
        custody,
        trustedKeys: new TrustedKeys(token, config.custodianId, new Set(config.coordinators)),
        identity,
      }),
      {
        name: 'custodian',
        authorize: authorizer(new Set(config.coordinators), new Set(config.operators)),
        // A call that moves or decides about a share gets an info log line with its request id; polls a debug one.
        observer: auditObserver(audit, log, { infoMethods: STATE_CHANGING }),
        onReply: (r) => metrics.calls.observe(r.ctx.method, r.code, r.durationMs),
        // A share moves or a decision is taken only once its intent is on record (custodian.proto's changes_state).
        before: auditIntent(audit, STATE_CHANGING),
      },
    ),
  );
  const health = new HealthService({ '': 'SERVING', 'keyshard.v1.CustodianService': 'SERVING' }).addToServer(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(config.listen, serverCredentials(tls), (err, p) => (err ? reject(err) : resolve(p))),
  );
  let metricsServer: MetricsServer | undefined;
  if (config.metrics) {
    metricsServer = await serveMetrics(metrics.registry, config.metrics.listen);
    log.info({ address: metricsServer.address, port: metricsServer.port }, 'metrics listening');
  }
  const host = config.listen.slice(0, config.listen.lastIndexOf(':'));
  log.info({ address: `${host}:${port}`, custodianId: config.custodianId, policy: config.approvalPolicy, shares: token.shareClusterIds() }, 'listening');

  const stop = (signal: string) => {
    log.info({ signal }, 'stopping');
    health.shutdown();
    void metricsServer?.close();
    server.tryShutdown(() => {
      void audit.close().finally(() => {
        token.close();
        process.exit(0);
      });
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

void runMain(main);
