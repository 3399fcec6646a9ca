/**
 * bench:audit, part 4: what auditing costs an Encrypt call. One dev cluster (3 custodians,
 * threshold 2, one etcd, the real audit sink: one, or BENCH_AUDIT_REPLICAS replicas of the
 * replicated log) with two coordinator replicas that differ only in where their audit events go:
 *
 *   audited    coordinator-1, as in every dev cluster: each Encrypt is answered once its event
 *              is durable in the replica's local spool (O_DSYNC group commit, on disk); the
 *              spool ships events in batches to the real audit sink, which normalizes them,
 *              replaces sensitive values by HMACs, appends them to its Merkle log (fdatasync)
 *              and signs a checkpoint per group. With replicas the batches go to the leader,
 *              acknowledged once a majority of replicas hold them fsync'ed (REPLICATION.md); the
 *              spool keeps that latency off the Encrypt path, not its CPU. All of it shares the
 *              host's cores.
 *   unaudited  coordinator-2: audit storage switched off, the closest the coordinator allows
 *              without a config switch it does not have (and should not have). Its spool lives
 *              on /dev/shm (a write waits for no disk) and ships to ack-sink.ts, which
 *              acknowledges every Append batch at once and stores nothing. Nothing of its
 *              audit is durable anywhere, and no sink works on it.
 *   What the unaudited replica still does is the producer side of auditing: it builds each
 *   event, writes it to the in-memory spool and sends it to ack-sink over mutual TLS. That
 *   residue keeps the unaudited figure below what a coordinator without any audit code would
 *   reach, so the ratio flatters auditing by that much. (The other way to switch storage off,
 *   no spool and every event straight to ack-sink, costs the coordinator more than the spool
 *   path: it sends many tiny Append batches. It was measured slower than even the audited
 *   replica, so it would flatter the ratio further, and is not used.)
 *
 * Both replicas are unsealed by one ceremony and serve the same key; the load generator
 * (load.ts --target encrypt, the settings of bench:encrypt) alternates between them,
 * BENCH_ROUNDS times; the median run of each side counts.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { APP, DevCluster, coordinatorId } from '@keyshard/devcluster';
import { auditLabel, type BenchRun } from './bench-run.ts';
import { pointAuditAt } from './audit-modes.ts';
import { log, type Child } from './common.ts';
import { compareRounds, runLoad, type Comparison, type Row } from './load-run.ts';
import { formatTable } from './report.ts';

const KEY_NAME = 'bench-audit-encrypt';

export const AUDITED = coordinatorId(0);
export const UNAUDITED = coordinatorId(1);

/**
 * Starts the cluster described above (in run.dir, stopped at cleanup) and ack-sink.ts, and
 * creates the key; resolves once every replica has answered one Encrypt.
 */
export async function startAuditComparisonCluster(run: BenchRun): Promise<{ cluster: DevCluster; ackSink: Child }> {
  run.dir = mkdtempSync(path.join(os.tmpdir(), 'keyshard-bench-audit-'));
  log(`cluster in ${run.dir}`);
  const cluster = await DevCluster.create({ dir: run.dir, custodians: 3, threshold: 2, coordinators: 2, auditReplicas: run.settings.auditReplicas, progress: log });
  run.cluster = cluster;
  if (run.settings.cpuProf) for (const name of [AUDITED, UNAUDITED, ...cluster.auditSinkIds]) cluster.process(name).spec.args.unshift(...run.profArgs(name));

  const sinkCerts = cluster.layout.certs['audit-sink']!;
  const ackSink = run.spawn('ack-sink', 'ack-sink.ts', ['--ca', sinkCerts.ca, '--cert', sinkCerts.cert, '--key', sinkCerts.key, '--checkpoint-key', cluster.layout.sinkCheckpointKey]);
  const ackAddress = (JSON.parse(await ackSink.waitFor(/"listening"/)) as { listening: string }).listening;
  const shmDir = mkdtempSync('/dev/shm/keyshard-bench-audit-');
  run.onCleanup(() => rmSync(shmDir, { recursive: true, force: true }), { afterCluster: true });
  const file = cluster.layout.configFile(UNAUDITED);
  const cfg = JSON.parse(readFileSync(file, 'utf8')) as { audit: Record<string, unknown> };
  pointAuditAt(cfg.audit, ackAddress);
  cfg.audit.spoolDir = path.join(shmDir, 'spool');
  writeFileSync(file, JSON.stringify(cfg, null, 2));
  log(`${UNAUDITED} (unaudited): spool on tmpfs (${shmDir}), shipping to ack-sink.ts (${ackAddress}); ${AUDITED} (audited): spool on disk, the real sink (${auditLabel(cluster.auditSinkIds.length)})`);

  await cluster.start();
  await cluster.bootstrap();
  await run.withKeyUser(async (app) => {
    const key = await app.createKey(KEY_NAME, { description: 'bench:audit' });
    log(`key ${key.name} (${key.id})`);
  });
  for (const coordinator of [AUDITED, UNAUDITED]) {
    const client = cluster.client(APP, { coordinator });
    try {
      await client.encrypt(KEY_NAME, Buffer.alloc(1024), {});
    } finally {
      client.close();
    }
  }
  return { cluster, ackSink };
}

/** Encrypt runs against the unaudited and the audited replica, alternating, BENCH_ROUNDS times. */
export function compareAuditedEncrypt(run: BenchRun, ackSink: Child): Promise<Comparison> {
  const cluster = run.cluster!;
  const encrypt = (label: string, coordinator: string) =>
    runLoad(run, {
      label,
      target: 'encrypt',
      args: ['--keyname', KEY_NAME],
      address: cluster.coordinatorAddressOf(coordinator),
      // Both sinks in both rows: the idle one shows that it was.
      watch: { coordinator: () => cluster.process(coordinator).pid, ...run.pids(...run.sinkIds, 'etcd'), 'ack-sink': () => ackSink.pid },
      etcd: true,
    });
  return compareRounds(run, {
    baseline: (suffix) => encrypt(`encrypt unaudited (${UNAUDITED})${suffix}`, UNAUDITED),
    measured: (suffix) => encrypt(`encrypt audited (${AUDITED})${suffix}`, AUDITED),
  });
}

const processesOf = (rows: Row[]) => [...new Set(rows.flatMap((r) => Object.keys(r.cpu)))].filter((k) => k !== 'other' && k !== 'irq+steal');
const usPerCall = (r: Row, k: string) => (r.cpu[k] === undefined || r.result.callsPerSec === 0 ? NaN : (r.cpu[k]! / 100 / r.result.callsPerSec) * 1e6);

/** CPU time per call summed over the watched processes (µs): the cost of a call, less moved by the host's noise than calls/s. */
export function cpuPerCall(r: Row): number {
  return Math.round(processesOf([r]).reduce((sum, k) => sum + (usPerCall(r, k) || 0), 0));
}

/** The runs: calls/s, latency, and CPU per call of each process (µs) and of all of them. */
export function encryptTable(rows: Row[]): string {
  const procs = processesOf(rows);
  const head = ['run', 'calls/s', 'p50 ms', 'p99 ms', 'errors', ...procs.map((k) => `µs/call ${k}`), 'µs/call all', 'cpu% other'];
  const body = rows.map((r) => [
    r.label,
    r.result.callsPerSec.toFixed(1),
    r.result.p50Ms.toFixed(2),
    r.result.p99Ms.toFixed(2),
    String(r.result.errors + r.result.warmupErrors),
    ...procs.map((k) => (Number.isNaN(usPerCall(r, k)) ? '-' : String(Math.round(usPerCall(r, k))))),
    String(cpuPerCall(r)),
    String(r.cpu.other ?? '-'),
  ]);
  return formatTable(head, body);
}
