/** Coordinator process: configuration, wiring, start and stop. Starts sealed. */
import * as grpc from '@grpc/grpc-js';
import { createLogger, loadConfig, runMain } from '@keyshard/config';
import { keyshardProto, principalOfCertificate, readTls, serverCredentials, serverOptions, unaryService, decodingSafe, HealthService, addReflection, ConcurrencyLimit, requestLogFields, type CallReply } from '@keyshard/rpc';
import { auditSinkDistrustedGauge, serveMetrics, type MetricsServer } from '@keyshard/metrics';
import { clusterNamespace, compactAndDefragment, connectEtcd } from '@keyshard/store';
import { AuditClient, AuditSpool, RoutedAudit, auditIntent, auditObserver, logSinkAlert, sinkCheckpointKeys, type AuditRecorder } from '@keyshard/audit-client';
import { AuditReader } from '@keyshard/audit-client/reader';
import { coordinatorConfig } from './config.ts';
import { createCoordinatorMetrics } from './coordinator-metrics.ts';
import { auditSinkStatuses, etcdStatus } from './cluster/cluster-status.ts';
import { EtcdReachability } from './cluster/etcd-reachability.ts';
import { Seal } from './cluster/seal.ts';
import { Cluster } from './cluster/cluster.ts';
import { ClusterStore } from './cluster/cluster-store.ts';
import { CustodianLink } from './ceremonies/custodian-link.ts';
import { Keyring } from './keys/keyring.ts';
import { JoinVoucher } from './ceremonies/join-voucher.ts';
import { sealCluster } from './cluster/seal-notice.ts';
import { UnsealCeremonies } from './ceremonies/unseal-ceremony.ts';

import { backupServiceAuthorizer, ceremonyHandlers, ceremonyServiceAuthorizer } from './server/ceremony-service.ts';
import { backupHandlers } from './server/backup-service.ts';
import { writeScheduledBackup } from './backup/backup.ts';
import { Restores } from './backup/restore.ts';
import { BackupStore } from './backup/backup-store.ts';
import { exportShareOperation } from './cluster/share-recovery.ts';
import { keyHandlers, keyServiceAuthorizer } from './server/key-service.ts';
import { SPOOLED_OPERATIONS, STATE_CHANGING_METHODS, intercepted } from './server/methods.ts';
import { KeyOperations } from './keys/key-operations.ts';
import { LeaderJobs } from './cluster/leader-jobs.ts';
import { RequestTokens } from './keys/request-tokens.ts';
import { LeaderElection } from './cluster/leader-election.ts';
import { VersionUsage, rotateAtUsageBound } from './keys/version-usage.ts';
import { Replicas } from './cluster/replicas.ts';
import { ReplicaStore } from './cluster/replica-store.ts';
import { EphemeralKeys, loadOrCreateTransportKey } from './ceremonies/transport-key.ts';
import { RecordIntegrity, integrityReporter } from './cluster/record-integrity.ts';
import { QuorumCeremonies } from './ceremonies/quorum-ceremonies.ts';
import { CeremonyStore } from './ceremonies/ceremony-store.ts';
import { destroyKeyOperation } from './keys/key-destruction.ts';
import { destroyClusterOperation, shareSetOperation, type ShareSetDeps } from './cluster/share-sets.ts';
import { AuditWitness } from './audit-witness/witness.ts';
import { WitnessStore } from './audit-witness/witness-store.ts';
import { loadOrCreateWitnessKey } from './audit-witness/witness-key.ts';

async function main(): Promise<void> {
  const config = loadConfig(coordinatorConfig);
  const log = createLogger('coordinator', config.logLevel, requestLogFields);
  const tls = readTls(config.tls);
  const checkpointKeys = sinkCheckpointKeys(config.audit.checkpointPublicKeys);
  const etcdConfig = {
    endpoints: config.etcd.endpoints,
    tls: config.etcd.tls ? readTls(config.etcd.tls) : undefined,
    serverName: config.etcd.serverName,
    callTimeoutMs: config.etcd.callTimeoutMs,
  };
  const etcd = connectEtcd(etcdConfig);
  const ns = clusterNamespace(etcd, config.clusterName);
  const source = principalOfCertificate(tls.cert);
  const sink = new AuditClient({
    address: config.audit.address, tls, source, timeoutMs: config.audit.timeoutMs,
    serverId: config.audit.serverId, replicas: config.audit.replicas, checkpointKeys, onAlert: logSinkAlert(log, config.audit.address),
  });
  // The witness anchors the producer on its record in etcd before anything is recorded (the
  // spool ships what it holds as soon as it opens): the sink must prove consistency from there.
  const witnessKey = loadOrCreateWitnessKey(config.witnessKeyFile, source);
  if (witnessKey.created) log.info({ file: config.witnessKeyFile, vkey: witnessKey.vkey }, "created the witness key: give its vkey to the audit log's auditors (trust file)");
  // Status asks each sink replica for a checkpoint; a short reconnect backoff so it notices at once that one is back.
  const statusReader = (address: string, serverId: string) =>
    new AuditReader({ address, tls, timeoutMs: 1_000, serverId, channelOptions: { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1_000 } });
  // audit.address pinned like the producer pins it: as the replica at that address, if one is.
  const sinkReader = statusReader(config.audit.address, config.audit.replicas?.find((r) => r.address === config.audit.address)?.serverId ?? config.audit.serverId);
  const replicaReaders = (config.audit.replicas ?? [])
    .filter((r) => r.address !== config.audit.address)
    .map((r) => ({ ...r, reader: statusReader(r.address, r.serverId) }));
  // What Status probes: every configured replica (one sink: that sink), in config order.
  const sinkProbes = (config.audit.replicas ?? [{ address: config.audit.address, serverId: config.audit.serverId }]).map((r) => ({
    ...r,
    reader: r.address === config.audit.address ? sinkReader : replicaReaders.find((x) => x.address === r.address)!.reader,
  }));
  const witnessStore = new WitnessStore(ns, source);
  const witness = new AuditWitness({
    key: witnessKey, store: witnessStore, sink, sinkKeys: checkpointKeys, log, refreshSeconds: config.witnessRefreshSeconds,
    // A replicated sink: every replica keeps the cosignatures it is given (services/audit-sink
    // REPLICATION.md); published wherever it can be, failing only if no replica took it.
    publish: async (c) => {
      const results = await Promise.allSettled([sinkReader, ...replicaReaders.map((r) => r.reader)].map((r) => r.addCosignature(c)));
      if (!results.some((r) => r.status === 'fulfilled')) throw (results[0] as PromiseRejectedResult).reason;
    },
    sinkCheckpoint: () => sinkReader.checkpoint(),
    intervalMs: config.witnessIntervalMs,
    initialized: () => cluster.initialized,
  });
  await witness.anchor();
  const spool = config.audit.spoolDir
    ? await AuditSpool.open({ dir: config.audit.spoolDir, source, maxPending: config.audit.spoolMaxEvents }, sink, log)
    : undefined;
  const audit: AuditRecorder = spool ? new RoutedAudit(sink, spool, SPOOLED_OPERATIONS) : sink;
  const links = config.custodians.map((c) => new CustodianLink(c.id, c.address, tls));
  const seal = new Seal();
  const keyCalls = new ConcurrencyLimit(config.maxConcurrentCalls);
  const metrics = createCoordinatorMetrics({
    sealed: () => seal.sealed,
    leading: () => leader.leading,
    spoolPending: () => spool?.pending ?? 0,
    keyCallsInFlight: () => keyCalls.inFlight,
    witnessAlarm: () => Boolean(witness.status().alarm),
    witnessCosignedSize: () => witness.cosigned?.checkpoint.tree_size ?? 0,
  });
  auditSinkDistrustedGauge(metrics.registry, () => Boolean(sink.distrusted));
  // Ceremonies record each step through this: their outcomes are counted as they are audited.
  const ceremonyAudit = metrics.countingCeremonies(audit);
  // A record that fails its MAC is refused where it is read, and reported (logged, counted, audited).
  const integrity = new RecordIntegrity(seal, integrityReporter({ principal: config.coordinatorId, log, audit, count: (path) => metrics.integrityFailure(path) }));
  witnessStore.useMacs(integrity); // the reset record is MAC'd (witness-store.ts)
  const clusterStore = new ClusterStore(ns, integrity);
  const cluster = new Cluster(clusterStore, links, seal, config.oaepHash);
  await cluster.load();
  const unfollowCluster = await cluster.follow(); // another replica's init, restore or destroy-cluster: sealed vs uninitialized stays right
  // The long-term transport key (custodian SOs enroll its public key) and per-ceremony ephemeral keys.
  const transport = loadOrCreateTransportKey(config.transportKeyFile);
  if (transport.created) log.info({ file: config.transportKeyFile }, 'created the transport key: enroll its public key in every custodian token');
  const replica = { coordinatorId: config.coordinatorId, publicKeyPem: transport.publicKeyPem, privateKey: transport.privateKey, ephemeral: new EphemeralKeys() };

  // Registration (lease-bound: it vanishes when this process dies) and the cluster-wide seal.
  const me = { id: config.coordinatorId, address: config.advertiseAddress ?? config.listen, publicKeyPem: replica.publicKeyPem, ephemeralPublicKeyPem: replica.ephemeral.currentPem };
  const replicaStore = new ReplicaStore(etcd, me, { clusterName: config.clusterName, ttlSeconds: config.registrationTtlSeconds, integrity, log });
  const replicas = new Replicas({ store: replicaStore, clusterStore, integrity, log, audit });
  await replicas.start();
  replica.ephemeral.onRotate((pem) => void replicas.setEphemeral(pem).catch((e: Error) => log.warn({ err: e.message }, 'could not publish the new ephemeral key')));
  replicas.followSeal(seal);

  const keyring = new Keyring(ns, cluster, seal, integrity, { minRotationPeriodSeconds: config.keys.minRotationPeriodSeconds });
  const requestTokens = new RequestTokens(ns, integrity);
  const usage = new VersionUsage(
    ns,
    integrity,
    {
      limit: config.keys.usage.limit,
      rotateAt: config.keys.usage.rotateAt,
      reserveBlock: config.keys.usage.reserveBlock,
      flushSeconds: config.keys.usage.lastUseFlushSeconds,
    },
    rotateAtUsageBound(keyring, audit, config.coordinatorId, log),
    log,
  );
  usage.start();
  const keyOps = new KeyOperations(keyring, usage, {
    maxPlaintextBytes: config.maxPlaintextBytes,
    admins: new Set(config.admins),
    minDestructionWaitSeconds: config.keys.minDestructionWaitSeconds,
    defaultDestructionWaitSeconds: config.keys.defaultDestructionWaitSeconds,
  });
  const ceremonies = new CeremonyStore(ns, integrity);
  const voucher = new JoinVoucher({ store: ceremonies, cluster, seal, replicas, audit: ceremonyAudit, log });
  const sealEverywhere = (principal: string) => sealCluster({ seal, cluster, links, replicas, audit: ceremonyAudit, log }, principal);
  const unseal = new UnsealCeremonies({
    store: ceremonies, replicas, cluster, seal, links, replica, audit: ceremonyAudit, log, voucher,
    oaepHash: config.oaepHash,
    ttlSeconds: config.ceremonyTtlSeconds,
    pollMs: config.custodianPollMs,
  });
  await unseal.watch();
  // Defragment needs etcd's root role, which a coordinator does not hold (deploy/etcd-auth.sh):
  // the compaction is done, the operator defragments (README "etcd access"); said in the log and
  // in the ceremony's completed audit event (key-destruction.ts).
  const compact = async (revision: string) => {
    const outcome = await compactAndDefragment(etcd, revision);
    if (!outcome.defragmented) log.warn({ revision, reason: outcome.reason }, 'etcd compacted but not defragmented');
    return outcome;
  };
  const shareSets: ShareSetDeps = {
    store: clusterStore, cluster, seal, links, log, compact,
    sealCluster: () => sealEverywhere(config.coordinatorId),
    crashAt: config.faultInjection.crashAt,
  };
  const quorum = new QuorumCeremonies(
    { store: ceremonies, driver: replicas, cluster, seal, links, audit: ceremonyAudit, log, ttlSeconds: config.ceremonyTtlSeconds, pollMs: config.custodianPollMs },
    {
      'destroy-key': destroyKeyOperation(keyring, compact),
      reshare: shareSetOperation(shareSets, 'reshare'),
      'rotate-root': shareSetOperation(shareSets, 'rotate-root'),
      'destroy-cluster': destroyClusterOperation(shareSets),
      'export-share': exportShareOperation(clusterStore, cluster, links),
    },
  );
  replicas.followClusterSeal(seal, () => void unseal.cancelCurrent('the cluster was sealed').catch(() => {}));
  // A replica that (re)started while its peers are unsealed asks to join them.
  const joinTimer = setInterval(() => {
    void unseal.joinIfPeersUnsealed().then(
      (c) => c && log.info({ ceremonyId: c.id }, 'asked the custodians to join the unsealed replicas'),
      (e: Error) => log.warn({ err: e.message }, 'join ceremony could not start'),
    );
  }, config.joinCheckSeconds * 1000);
  joinTimer.unref();
  const backups = { store: new BackupStore(ns), etcd: etcdConfig, cluster, seal, clusterName: config.clusterName };
  const election = new LeaderElection(ns, { candidate: config.coordinatorId, ttlSeconds: config.leaderTtlSeconds, log });
  const leader = new LeaderJobs(election, keyring, seal, audit, log, {
    coordinatorId: config.coordinatorId,
    sweepSeconds: config.rotationSweepSeconds,
    requestTokens,
    backup: config.backups.dir
      ? { everySeconds: config.backups.intervalSeconds, write: () => writeScheduledBackup(backups, { dir: config.backups.dir!, retain: config.backups.retain }) }
      : undefined,
  });
  leader.start();
  // A linearizable read of one small key: it needs etcd's leader and a quorum, as this replica's work does.
  const probeTimeoutMs = Math.min(config.etcd.callTimeoutMs, config.etcd.unreachableAfterMs / 2);
  const { probeIntervalMs: intervalMs, unreachableAfterMs } = config.etcd;
  const etcdReads = new EtcdReachability(() => clusterStore.probe(probeTimeoutMs), { intervalMs, unreachableAfterMs, log });
  const onReply = (r: CallReply) => metrics.calls.observe(r.ctx.method, r.code, r.durationMs);
  // State-changing calls are recorded before they run; crypto calls are recorded before they answer (the protos' method policy, server/methods.ts).
  const before = auditIntent(audit, STATE_CHANGING_METHODS);
  // Each state-changing call gets an info log line with its request id; crypto calls and reads a debug one.
  const observer = auditObserver(audit, log, { infoMethods: STATE_CHANGING_METHODS });
  const proto = keyshardProto();
  // A message over maxMessageBytes (each one of a stream too) is refused RESOURCE_EXHAUSTED by grpc-js before decoding.
  const server = new grpc.Server(serverOptions(config.maxMessageBytes));
  const keyService = intercepted('keys', keyHandlers(keyring, keyOps, (id, versions) => usage.ofKey(id, versions), requestTokens), seal); // refused while sealed
  server.addService(decodingSafe(proto.KeyService.service), unaryService(proto.KeyService.service, keyService, {
      name: 'keys',
      observer,
      before,
      limit: keyCalls,
      onReply,
      authorize: keyServiceAuthorizer(new Set(config.admins), new Set(config.keyUsers)),
    }));
  server.addService(
    decodingSafe(proto.CeremonyService.service),
    unaryService(
      proto.CeremonyService.service,
      ceremonyHandlers({
        cluster, seal, unseal, quorum, ceremonies, links, replicas, clusterStore, coordinatorId: config.coordinatorId, leaderId: () => leader.currentLeader(), sealCluster: sealEverywhere,
        etcdStatus: () => etcdStatus(etcd, etcdReads),
        etcdReachable: () => etcdReads.reachable,
        auditSinkStatus: () => auditSinkStatuses(sinkProbes, sink),
        witness,
        tokens: requestTokens,
      }),
      {
        name: 'ceremony',
        observer,
        before,
        onReply,
        authorize: ceremonyServiceAuthorizer(new Set(config.admins), new Set(config.keyUsers)),
      },
    ),
  );
  const restores = new Restores({
    store: backups.store, etcd: etcdConfig, cluster, seal, links, replica, audit: ceremonyAudit, log,
    oaepHash: config.oaepHash,
    clusterName: config.clusterName,
    ttlSeconds: config.ceremonyTtlSeconds,
    pollMs: config.custodianPollMs,
  });
  server.addService(
    decodingSafe(proto.BackupService.service),
    unaryService(proto.BackupService.service, backupHandlers(backups, restores), {
      name: 'backup',
      observer,
      before,
      onReply,
      authorize: backupServiceAuthorizer(new Set(config.admins)),
    }),
  );
  // Health: crypto ("" and KeyService, readiness) is served only while unsealed and etcd is
  // reachable; ceremonies always (liveness): a restart drops the root key, so an etcd outage must
  // not get replicas restarted.
  const health = new HealthService({ 'keyshard.v1.CeremonyService': 'SERVING' }).addToServer(server);
  const followState = health.track(['', 'keyshard.v1.KeyService'], () => !seal.sealed && etcdReads.reachable);
  seal.onOpen(followState);
  seal.onSeal(followState);
  etcdReads.onChange(followState);
  etcdReads.start();
  addReflection(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(config.listen, serverCredentials(tls), (err, p) => (err ? reject(err) : resolve(p))),
  );
  let metricsServer: MetricsServer | undefined;
  if (config.metrics) {
    metricsServer = await serveMetrics(metrics.registry, config.metrics.listen);
    log.info({ address: metricsServer.address, port: metricsServer.port }, 'metrics listening');
  }
  witness.start();
  const host = config.listen.slice(0, config.listen.lastIndexOf(':'));
  log.info({ address: `${host}:${port}`, coordinatorId: config.coordinatorId, initialized: cluster.initialized, sealed: true }, 'listening');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    clearInterval(joinTimer);
    await usage.stop().catch(() => {}); // last-use times, written (with their record MAC) while still unsealed
    seal.seal();
    await leader.stop();
    await witness.stop();
    await unfollowCluster().catch(() => {});
    etcdReads.stop();
    health.shutdown();
    await new Promise<void>((r) => server.tryShutdown(() => r()));
    await metricsServer?.close();
    metrics.close();
    sinkReader.close();
    for (const r of replicaReaders) r.reader.close();
    await replicas.stop();
    await spool?.close();
    await sink.close();
    etcd.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

void runMain(main);
