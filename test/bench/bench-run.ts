/**
 * The life of one bench process (test/bench/<bench>.ts): its settings, read once from the
 * environment; a dev cluster in a temp dir; the helper processes it starts; and their cleanup.
 * Every process is stopped by its PID on success, on error and on SIGINT/SIGTERM. The temp dir
 * is deleted, unless BENCH_KEEP=1 or the run failed (then its logs are kept and named).
 *
 * Settings every bench shares:
 *   BENCH_SECONDS   measured seconds per timed run (default 10)
 *   BENCH_WARMUP    warm-up seconds per timed run (default 2)
 *   BENCH_CHANNELS  channels (= TLS connections) a load spreads over (default 4, the SDK's default)
 *   BENCH_ROUNDS    baseline/measured pairs, alternating; the median run of each counts (default 3)
 *   BENCH_AUDIT_REPLICAS  audit sink replicas of the cluster: 1 (default, one sink) or 3 (also 5, 7:
 *                   the replicated log, services/audit-sink REPLICATION.md); producers the bench
 *                   starts itself send to every replica, as coordinators do (auditProducer)
 *   BENCH_KEEP=1    keep the cluster directory (logs)
 *   BENCH_CPU_PROF=DIR  run the coordinator, the audit sink and the echo servers under
 *                   `node --cpu-prof`; profiles land in DIR/<process>/ when they exit.
 *                   Summarize with `node --conditions=keyshard-source --import tsx test/bench/cpuprofile-summary.ts FILE`.
 *   BENCH_AUDIT=disk|tmpfs|ack  diagnostics: the audit sink's durability out of the way (audit-modes.ts)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { APP, COORDINATOR, DevCluster, type CoordinatorOverrides } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { readTls } from '@keyshard/rpc';
import { clusterNamespace, connectEtcd, type Etcd3, type Namespace } from '@keyshard/store';
import { applyAuditMode, auditMode, type AuditMode } from './audit-modes.ts';
import { BENCH_DIR, Child, log } from './common.ts';
import { compactHistory } from './etcd-baseline.ts';

/** A numeric environment setting, checked once at start-up. */
export function envNumber(name: string, fallback: number, opts: { min?: number; integer?: boolean } = {}): number {
  const raw = process.env[name];
  const v = raw === undefined || raw === '' ? fallback : Number(raw);
  const min = opts.min ?? 1;
  if (!Number.isFinite(v) || v < min || (opts.integer && !Number.isInteger(v)))
    throw new Error(`${name} must be ${opts.integer ? 'a whole number' : 'a number'} >= ${min} (got ${raw})`);
  return v;
}

function auditReplicas(): number {
  const n = envNumber('BENCH_AUDIT_REPLICAS', 1, { integer: true });
  if (![1, 3, 5, 7].includes(n)) throw new Error(`BENCH_AUDIT_REPLICAS must be 1, 3, 5 or 7 (got ${n})`);
  return n;
}

/** How the bench's own producers reach the cluster's audit log: as a coordinator's `audit` config does. */
export interface AuditProducerConfig {
  /** The first replica (the one tried first). */
  address: string;
  /** Every replica, when there are several (AuditClient `replicas`). */
  replicas?: { address: string; serverId: string }[];
  /** Every replica's checkpoint public key (PEM files). */
  checkpointPublicKeys: string[];
}

/** "one audit sink" / "3 audit sink replicas": how reports label the audit setup. */
export const auditLabel = (replicas: number) => (replicas > 1 ? `${replicas} audit sink replicas` : 'one audit sink');

export interface BenchSettings {
  seconds: number;
  warmup: number;
  channels: number;
  rounds: number;
  keep: boolean;
  /** Audit sink replicas (BENCH_AUDIT_REPLICAS, default 1). */
  auditReplicas: number;
  cpuProf: string | undefined;
  audit: AuditMode;
}

export function benchSettings(): BenchSettings {
  return {
    seconds: envNumber('BENCH_SECONDS', 10),
    warmup: envNumber('BENCH_WARMUP', 2, { min: 0 }),
    channels: envNumber('BENCH_CHANNELS', 4, { integer: true }),
    // Medians of alternating rounds damp the noise of a shared machine.
    rounds: envNumber('BENCH_ROUNDS', 3, { integer: true }),
    keep: process.env.BENCH_KEEP === '1',
    auditReplicas: auditReplicas(),
    cpuProf: process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined,
    audit: auditMode(),
  };
}

export interface ClusterOptions {
  coordinatorOverrides?: CoordinatorOverrides;
}

/** The cluster's etcd as the coordinator reaches it: its client certificate, its namespace. */
export interface ClusterEtcd {
  endpoint: string;
  certs: { ca: string; cert: string; key: string };
  clusterName: string;
}

export class BenchRun {
  readonly settings = benchSettings();
  cluster: DevCluster | undefined;
  dir: string | undefined;
  #keep = this.settings.keep;
  #interrupted = false;
  #children = new Set<Child>();
  #cleanups: (() => unknown)[] = [];
  #lateCleanups: (() => unknown)[] = [];
  #cleaning: Promise<void> | undefined;
  #etcd: { etcd: Etcd3; ns: Namespace } | undefined;

  private constructor() {
    for (const sig of ['SIGINT', 'SIGTERM'] as const)
      process.once(sig, () => {
        this.#interrupted = true;
        log(`${sig}: stopping everything`);
        void this.cleanup().finally(() => process.exit(130));
      });
  }

  /**
   * Runs a bench: `main` returns the exit code (non-zero when measured calls failed). An error
   * exits 1 and keeps the cluster's logs; a signal exits 130. Everything is cleaned up first.
   */
  static async main(main: (run: BenchRun) => Promise<number>): Promise<never> {
    const run = new BenchRun();
    let code = 1;
    try {
      code = await main(run);
    } catch (e) {
      if (!run.#interrupted) {
        log(`FAILED: ${(e as Error).stack ?? e}`);
        if (run.dir) log(`cluster logs: ${path.join(run.dir, 'logs')} (kept)`);
        run.#keep = true;
      }
    } finally {
      await run.cleanup();
    }
    process.exit(run.#interrupted ? 130 : code);
  }

  /** `node --cpu-prof` flags for a process named `name`, when BENCH_CPU_PROF is set. */
  profArgs(name: string): string[] {
    const dir = this.settings.cpuProf;
    return dir ? ['--cpu-prof', `--cpu-prof-dir=${path.join(dir, name.replace(/[^\w+-]+/g, '_'))}`] : [];
  }

  /** A 3-custodian, threshold-2 dev cluster in a temp dir, started, initialized and unsealed. */
  async startCluster(opts: ClusterOptions = {}): Promise<DevCluster> {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'keyshard-bench-'));
    log(`cluster in ${this.dir}`);
    const cluster = await DevCluster.create({
      dir: this.dir,
      custodians: 3,
      threshold: 2,
      auditReplicas: this.settings.auditReplicas,
      coordinatorOverrides: opts.coordinatorOverrides,
      progress: log,
    });
    this.cluster = cluster;
    if (this.settings.cpuProf) {
      // Diagnostics only: DevCluster runs services as `node dist/main.js` (or from source); put --cpu-prof first.
      for (const name of [COORDINATOR, ...cluster.auditSinkIds]) cluster.process(name).spec.args.unshift(...this.profArgs(name));
      log(`CPU profiles of ${COORDINATOR}, ${cluster.auditSinkIds.join(', ')} and echo servers go to ${this.settings.cpuProf}`);
    }
    await applyAuditMode(this, cluster, this.settings.audit);
    await cluster.start();
    await cluster.bootstrap();
    return cluster;
  }

  /**
   * Runs `fn` with an SDK client of the service principal app (closed after): the benches' keys
   * are made and used by it (admins administer keys, they do not use them).
   */
  async withKeyUser<T>(fn: (app: KeyshardClient) => Promise<T>): Promise<T> {
    const app = this.cluster!.client(APP);
    try {
      return await fn(app);
    } finally {
      app.close();
    }
  }

  /** Runs `fn` with an SDK client of the admin (closed after): cluster status and ceremonies. */
  async withAdmin<T>(fn: (admin: KeyshardClient) => Promise<T>): Promise<T> {
    const admin = this.cluster!.client();
    try {
      return await fn(admin);
    } finally {
      admin.close();
    }
  }

  /** The cluster's audit sink replicas (process names = certificate CNs): `audit-sink`, then `audit-sink-2`, … */
  get sinkIds(): string[] {
    return this.cluster!.auditSinkIds;
  }

  /** Where a producer the bench starts sends audit events: every replica, as the coordinators' config says. */
  auditProducer(): AuditProducerConfig {
    const l = this.cluster!.layout;
    const replicas = l.auditSinkIds.map((id) => ({ address: l.auditSinkAddress(id), serverId: id }));
    return { address: replicas[0]!.address, ...(replicas.length > 1 ? { replicas } : {}), checkpointPublicKeys: l.sinkCheckpointPublicKeys };
  }

  /** auditProducer() as flags of a bench child (echo-server.ts, load.ts --target audit): see `auditFlagsProducer` in common.ts. */
  auditFlags(): string[] {
    const p = this.auditProducer();
    return [
      '--audit-address', p.address,
      '--audit-key', p.checkpointPublicKeys.join(','),
      ...(p.replicas ? ['--audit-replicas', p.replicas.map((r) => `${r.serverId}=${r.address}`).join(',')] : []),
    ];
  }

  /** PID getters of the cluster's processes, for CPU sampling. */
  pids(...names: string[]): Record<string, () => number | undefined> {
    return Object.fromEntries(names.map((n) => [n === COORDINATOR ? 'coordinator' : n, () => this.cluster!.process(n).pid]));
  }

  get etcd(): ClusterEtcd {
    const { plan, certs } = this.cluster!.layout;
    return { endpoint: `https://127.0.0.1:${plan.ports.etcdClient}`, certs: certs[COORDINATOR]!, clusterName: plan.clusterName };
  }

  /**
   * etcd's own count of the requests it has served: unary calls by method (Range, Txn, Put, …)
   * and watch events sent ("Watch events"), from its /metrics on the client URL.
   */
  async etcdRequests(): Promise<Record<string, number>> {
    const e = this.etcd;
    const tls = readTls(e.certs);
    const text = await new Promise<string>((resolve, reject) => {
      const req = https.get(`${e.endpoint}/metrics`, { ...tls, servername: 'localhost' }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve(body)).on('error', reject);
      });
      req.on('error', reject);
      req.setTimeout(5_000, () => req.destroy(new Error('etcd /metrics timed out')));
    });
    const counts: Record<string, number> = {};
    const add = (k: string, n: number) => (counts[k] = (counts[k] ?? 0) + n);
    for (const line of text.split('\n')) {
      const m = /^grpc_server_(handled|msg_sent)_total\{(.*)\} (\S+)$/.exec(line);
      const method = m && /grpc_method="(\w+)"/.exec(m[2]!)?.[1];
      if (!m || !method) continue;
      if (m[1] === 'handled' && m[2]!.includes('grpc_type="unary"')) add(method, Number(m[3]));
      else if (m[1] === 'msg_sent' && method === 'Watch') add('Watch events', Number(m[3]));
    }
    return counts;
  }

  /** The bench's etcd client (the coordinator's certificate, closed at cleanup) and the cluster's namespace. */
  connectEtcd(): { etcd: Etcd3; ns: Namespace } {
    if (!this.#etcd) {
      const e = this.etcd;
      // A bench deletes and compacts hundreds of thousands of entries at once: no 5 s deadline.
      const etcd = connectEtcd({ endpoints: [e.endpoint], tls: readTls(e.certs), callTimeoutMs: 300_000 });
      this.onCleanup(() => etcd.close());
      this.#etcd = { etcd, ns: clusterNamespace(etcd, e.clusterName) };
    }
    return this.#etcd;
  }

  /** etcd-baseline.ts `compactHistory` on the cluster's etcd. */
  compactEtcd(): Promise<void> {
    return compactHistory(this.connectEtcd().etcd);
  }

  /** A `node --conditions=keyshard-source --import tsx test/bench/<file>` child, stopped by PID at cleanup. */
  spawn(name: string, file: string, args: string[], nodeArgs: string[] = []): Child {
    const c = new Child(name, path.join(BENCH_DIR, file), args, { nodeArgs });
    this.#children.add(c);
    void c.exited.then(() => this.#children.delete(c));
    return c;
  }

  /**
   * Runs `fn` at cleanup (last registered first): before the children and the cluster are
   * stopped, or with `afterCluster` once they are (e.g. removing a directory a service writes to).
   */
  onCleanup(fn: () => unknown, opts: { afterCluster?: boolean } = {}): void {
    (opts.afterCluster ? this.#lateCleanups : this.#cleanups).unshift(fn);
  }

  cleanup(): Promise<void> {
    const runAll = async (fns: (() => unknown)[]) => {
      for (const fn of fns) await Promise.resolve().then(fn).catch((e) => log(`cleanup: ${(e as Error).message}`));
    };
    return (this.#cleaning ??= (async () => {
      await runAll(this.#cleanups);
      await Promise.allSettled([...this.#children].map((c) => c.stop()));
      this.#children.clear();
      if (this.cluster) await this.cluster.stop().catch((e) => log(`stopping the cluster: ${(e as Error).message}`));
      await runAll(this.#lateCleanups);
      if (this.dir) {
        if (this.#keep) log(`kept ${this.dir}`);
        else rmSync(this.dir, { recursive: true, force: true });
      }
    })());
  }
}
