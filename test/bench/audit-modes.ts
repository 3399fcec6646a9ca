/**
 * BENCH_AUDIT=disk|tmpfs|ack, for every bench (diagnostics; default disk = the real setup): how
 * much of a figure is the audit sink's durability. Applied to the temp cluster's service
 * configs before anything starts:
 *   tmpfs  the audit sink's log (every replica's) and the coordinator's audit spool on /dev/shm
 *          (their fdatasync costs nothing), removed afterwards;
 *   ack    the coordinator audits to test/bench/ack-sink.ts, which acknowledges every batch at
 *          once and stores nothing (with BENCH_AUDIT_REPLICAS > 1: to it alone, the replicas
 *          run idle).
 * The JSON line then carries "diagnostic":"audit=<mode>".
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { COORDINATOR, type DevCluster } from '@keyshard/devcluster';
import type { BenchRun } from './bench-run.ts';
import { log } from './common.ts';

export type AuditMode = 'disk' | 'tmpfs' | 'ack';

export function auditMode(): AuditMode {
  const mode = process.env.BENCH_AUDIT || 'disk';
  if (mode !== 'disk' && mode !== 'tmpfs' && mode !== 'ack') throw new Error('BENCH_AUDIT must be disk, tmpfs or ack');
  return mode;
}

/** Starts ack-sink.ts with the audit sink's certificate; resolves with its address. */
export async function startAckSink(run: BenchRun): Promise<string> {
  const certs = run.cluster!.layout.certs['audit-sink']!;
  const ack = run.spawn('ack-sink', 'ack-sink.ts', ['--ca', certs.ca, '--cert', certs.cert, '--key', certs.key, '--checkpoint-key', run.cluster!.layout.sinkCheckpointKey]);
  return (JSON.parse(await ack.waitFor(/"listening"/)) as { listening: string }).listening;
}

/**
 * A producer's `audit` config sent to one stand-in sink at `address` (ack-sink.ts, with the first
 * replica's certificate `audit-sink` and checkpoint key) instead of the cluster's log: the
 * replica list goes, or the producer would keep sending to the replicas.
 */
export function pointAuditAt(audit: Record<string, unknown>, address: string): void {
  audit.address = address;
  audit.serverId = 'audit-sink';
  delete audit.replicas;
}

export async function applyAuditMode(run: BenchRun, cluster: DevCluster, mode: AuditMode): Promise<void> {
  const edit = (name: string, f: (cfg: Record<string, any>) => void) => {
    const file = cluster.layout.configFile(name);
    const cfg = JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>;
    f(cfg);
    writeFileSync(file, JSON.stringify(cfg, null, 2));
  };
  if (mode === 'tmpfs') {
    const shmDir = mkdtempSync('/dev/shm/keyshard-bench-audit-');
    run.onCleanup(() => rmSync(shmDir, { recursive: true, force: true }), { afterCluster: true });
    for (const id of cluster.auditSinkIds) edit(id, (cfg) => (cfg.dataDir = `${shmDir}/${id}`));
    edit(COORDINATOR, (cfg) => cfg.audit.spoolDir && (cfg.audit.spoolDir = `${shmDir}/spool`));
    log(`DIAGNOSTIC: audit log and the coordinator's audit spool on tmpfs (${shmDir})`);
  } else if (mode === 'ack') {
    const address = await startAckSink(run);
    edit(COORDINATOR, (cfg) => pointAuditAt(cfg.audit, address));
    log(`DIAGNOSTIC: the coordinator audits to an instant-ack stand-in (${address}), not the real sink`);
  }
}
