/**
 * `npm run bench:rotate`: the leader's scheduled-rotation sweep over 10,000 due keys (keys/s),
 * against raw etcd transactions of the same shape.
 *
 * How 10,000 keys become due at one instant:
 * 1. A dev cluster (3 custodians, threshold 2, temp dir, one coordinator, so it is the leader)
 *    with rotationSweepSeconds 1 (BENCH_SWEEP_SECONDS) and keys.minRotationPeriodSeconds 1.
 * 2. BENCH_ROTATE_KEYS (default 10,000) keys `bench-rot-<n>` made through CreateKey (load.ts
 *    --count, 64 in flight), each with a rotation period of 30 days: none is due.
 * 3. Each round rewrites every one of their key records in etcd with raw etcd3 transactions
 *    (50 records each, a compare-and-swap on each record's mod revision) so that
 *    rotation.nextRotationAt is T, one instant BENCH_DUE_MARGIN seconds ahead (default: 5 s, or
 *    1 s per 1,000 keys if more). Not an instant in the past: the rewrite takes a while, and the
 *    sweep would start on a part of the keys before the rest are due. By T the coordinator's
 *    watch has brought every rewritten record into its cache; at T all are due together, and
 *    the leader's next sweep tick (at most rotationSweepSeconds later) finds them all.
 * 4. From T until a watch on the etcd `versions/` prefix has seen the new version of every key:
 *    keys/s = N / (last version write - T), the JSON value. Also shown: the delay from T to the
 *    first rotation (the sweep's tick) and the rate from first to last rotation. Checked: each
 *    key got exactly one new version (none twice, none skipped), its record says so, and the
 *    coordinator logged no "rotation sweep stopped"; any failure exits 1.
 * Baseline (same round, before the sweep), load.ts --target etcd-rotate (etcd-baseline.ts):
 *    the same N keys copied to a scratch prefix, then per key the transactions of keyring.ts
 *    `rotate` as the fenced sweep runs them: get keys/<id>; if its mod revision is unchanged and
 *    the fence key's create revision is, put keys/<id> (one version more) and versions/<id>/<n>
 *    (the size of a real version record). 64 in flight on one etcd3 client (BENCH_ROTATE_BASELINE_INFLIGHT),
 *    the coordinator's TLS certificate, the same etcd. keys/s = N / elapsed.
 *    The sweep additionally records an audit event per key at the sink and makes and wraps the
 *    new key material: that is the service's cost over the floor.
 *
 * Environment: BENCH_ROTATE_KEYS (10000), BENCH_SWEEP_SECONDS (1), BENCH_DUE_MARGIN (s),
 * BENCH_ROTATE_TIMEOUT (s a sweep may take, default 1800; one that rotates nothing for 120 s
 * fails at once), BENCH_ROUNDS (3: rounds rotate the same keys again), BENCH_KEEP,
 * BENCH_CPU_PROF=DIR (profiles of the coordinator and the audit sink, whole lifetime; each sweep
 * logs its window for `cpuprofile-summary.ts --from-us --to-us`). Every process it starts is
 * stopped by PID, also on error or SIGINT/SIGTERM; the scratch prefixes are deleted.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { COORDINATOR } from '@keyshard/devcluster';
import { paths, type Namespace } from '@keyshard/store';
import { BenchRun, envNumber } from './bench-run.ts';
import { log } from './common.ts';
import { listPaged } from './etcd-baseline.ts';
import { atCoordinator, atEtcd, compareRounds, cpuWindow, etcdWindow, logProfileWindow, monotonicUs, runLoad, DEFAULT_CONCURRENCY, type Row } from './load-run.ts';
import { report } from './report.ts';

const KEYS = envNumber('BENCH_ROTATE_KEYS', 10_000, { integer: true });
const SWEEP_SECONDS = envNumber('BENCH_SWEEP_SECONDS', 1);
const DUE_MARGIN = envNumber('BENCH_DUE_MARGIN', Math.max(5, KEYS / 1000));
const TIMEOUT = envNumber('BENCH_ROTATE_TIMEOUT', 1800);
const BASELINE_INFLIGHT = envNumber('BENCH_ROTATE_BASELINE_INFLIGHT', DEFAULT_CONCURRENCY, { integer: true });
const PREFIX = 'bench-rot-';
const PERIOD = 30 * 24 * 3600;
const REWRITES_PER_TXN = 50;
const REWRITES_IN_FLIGHT = 8;
/** versions/<key id>/<version> (packages/store layout). */
const VERSIONS = 'versions/';
/** A sweep that rotates nothing for this long has stopped: fail rather than wait for the timeout. */
const STALL_SECONDS = 120;

interface KeyRecord {
  id: string;
  name: string;
  primaryVersion: number;
  versions: unknown[];
  rotation: { periodSeconds: number; nextRotationAt: string };
}

interface BenchKey {
  record: KeyRecord;
  modRevision: string;
}

async function benchKeys(ns: Namespace): Promise<BenchKey[]> {
  return (await listPaged(ns, paths.keysPrefix))
    .map((kv) => ({ record: JSON.parse(kv.value.toString()) as KeyRecord, modRevision: kv.modRevision }))
    .filter((k) => k.record.name.startsWith(PREFIX));
}

/** Makes every key due at `dueAt`: compare-and-swap rewrites of the records, a few transactions at once. */
async function makeDue(ns: Namespace, keys: BenchKey[], dueAt: Date): Promise<void> {
  const due = (k: KeyRecord) => JSON.stringify({ ...k, rotation: { ...k.rotation, nextRotationAt: dueAt.toISOString() } });
  let next = 0;
  const writer = async () => {
    while (next < keys.length) {
      const [first, ...rest] = keys.slice(next, (next += REWRITES_PER_TXN));
      const txn = rest.reduce((t, k) => t.and(paths.key(k.record.id), 'Mod', '==', k.modRevision), ns.if(paths.key(first!.record.id), 'Mod', '==', first!.modRevision));
      const res = await txn.then(...[first!, ...rest].map((k) => ns.put(paths.key(k.record.id)).value(due(k.record)))).commit();
      if (!res.succeeded) throw new Error('a key record changed while being made due (is a sweep running?)');
    }
  };
  await Promise.all(Array.from({ length: REWRITES_IN_FLIGHT }, writer));
}

/** Version writes of the bench keys seen by a watch: the first of `version` per key, and anything else. */
class VersionWrites {
  readonly at = new Map<string, number>();
  readonly anomalies: string[] = [];
  first = Infinity;
  last = 0;
  constructor(readonly ids: Set<string>, readonly version: number) {}

  saw(etcdKey: string, at: number): void {
    const rel = etcdKey.slice(etcdKey.indexOf(VERSIONS));
    const [, id, n] = rel.split('/');
    if (!id || !this.ids.has(id)) return;
    if (Number(n) !== this.version || this.at.has(id)) {
      this.anomalies.push(`${rel} written${this.at.has(id) ? ' again' : ''}`);
      return;
    }
    this.at.set(id, at);
    this.first = Math.min(this.first, at);
    this.last = at;
  }
}

const sweepStops = (logFile: string) => (readFileSync(logFile, 'utf8').match(/rotation sweep stopped/g) ?? []).length;

/** Until every key has its new version; fails on a double write, a stall, the timeout or a dead coordinator. */
async function allRotated(run: BenchRun, writes: VersionWrites, dueAt: number, label: string): Promise<void> {
  const coordinator = run.cluster!.process(COORDINATOR);
  let lastLog = Date.now();
  for (;;) {
    const done = `${writes.at.size} of ${KEYS} keys rotated`;
    if (writes.anomalies.length > 0) throw new Error(`${label}: not exactly once: ${writes.anomalies.slice(0, 5).join('; ')}`);
    if (writes.at.size === KEYS) return;
    if (Date.now() > dueAt + TIMEOUT * 1000) throw new Error(`${label}: ${done} within ${TIMEOUT} s (BENCH_ROTATE_TIMEOUT)`);
    if (Date.now() - Math.max(dueAt, writes.last) > STALL_SECONDS * 1000) throw new Error(`${label}: ${done}, none for ${STALL_SECONDS} s; see ${coordinator.logFile}`);
    if (coordinator.pid === undefined) throw new Error(`${COORDINATOR} exited; see ${coordinator.logFile}`);
    await sleep(50);
    if (Date.now() - lastLog >= 10_000) {
      lastLog = Date.now();
      const s = (lastLog - dueAt) / 1000;
      log(`${label}: ${done} after ${s.toFixed(0)} s (${(writes.at.size / s).toFixed(1)} keys/s)`);
    }
  }
}

/** Key records that do not show exactly one rotation more than `from` (or are due again). */
async function wrongRecords(ns: Namespace, from: number): Promise<BenchKey[]> {
  return (await benchKeys(ns)).filter((k) => k.record.primaryVersion !== from + 1 || Date.parse(k.record.rotation.nextRotationAt) <= Date.now());
}

/** A sweep as a row of the report, with when it began and how fast it went once it had. */
type SweepRow = Row & { firstAfterS: number; firstToLastRate: number };

/** One measured sweep: every key made due at one instant T, then timed until all have a new version, then checked. */
async function sweepRound(run: BenchRun, ns: Namespace, label: string): Promise<SweepRow> {
  const keys = await benchKeys(ns);
  if (keys.length !== KEYS) throw new Error(`etcd has ${keys.length} bench keys, not ${KEYS}`);
  const from = keys[0]!.record.primaryVersion;
  if (keys.some((k) => k.record.primaryVersion !== from)) throw new Error('bench keys are not all at the same version');
  const writes = new VersionWrites(new Set(keys.map((k) => k.record.id)), from + 1);
  const watcher = await ns.watch().prefix(VERSIONS).create();
  watcher.on('put', (kv) => writes.saw(kv.key.toString(), Date.now()));
  const logFile = run.cluster!.process(COORDINATOR).logFile;
  const stopsBefore = sweepStops(logFile);
  try {
    const dueAt = Date.now() + DUE_MARGIN * 1000;
    const t = performance.now();
    await makeDue(ns, keys, new Date(dueAt));
    await run.compactEtcd();
    log(`${label}: ${KEYS} keys made due at ${new Date(dueAt).toISOString()} (rewrite and compaction took ${((performance.now() - t) / 1000).toFixed(1)} s)`);
    if (Date.now() > dueAt - 250) throw new Error(`the rewrite ended too close to the due instant: raise BENCH_DUE_MARGIN (${DUE_MARGIN} s)`);
    if (writes.at.size > 0 || writes.anomalies.length > 0) throw new Error('keys were rotated before they were due');
    await sleep(dueAt - Date.now());
    const window = cpuWindow(run.pids(COORDINATOR, 'audit-sink', 'etcd'));
    const etcdServed = await etcdWindow(run);
    await allRotated(run, writes, dueAt, label);
    const cpu = window.stop();
    const etcd = await etcdServed.stop();
    const seconds = (writes.last - dueAt) / 1000;
    log(`${label}: first rotation ${((writes.first - dueAt) / 1000).toFixed(2)} s after the due instant, the last after ${seconds.toFixed(2)} s`);
    const wallToMonotonic = (ms: number) => monotonicUs() - Math.round((Date.now() - ms) * 1000);
    logProfileWindow(run, label, wallToMonotonic(dueAt), wallToMonotonic(writes.last));

    // Each version is written in one transaction with its key record: the records are final now.
    const wrong = await wrongRecords(ns, from);
    const stops = sweepStops(logFile) - stopsBefore;
    if (wrong.length) log(`${label}: ${wrong.length} key records not at version ${from + 1} or still due (e.g. ${wrong[0]!.record.name})`);
    if (stops) log(`${label}: the coordinator logged "rotation sweep stopped" ${stops} time(s); see ${logFile}`);
    return {
      label,
      result: {
        target: 'sweep',
        calls: KEYS,
        seconds,
        callsPerSec: Math.round((KEYS / seconds) * 10) / 10,
        p50Ms: NaN,
        p99Ms: NaN,
        errors: wrong.length + stops,
        warmupErrors: 0,
        loadCpuSec: 0,
      },
      cpu,
      etcd,
      firstAfterS: Math.round(writes.first - dueAt) / 1000,
      firstToLastRate: Math.round((KEYS / Math.max(0.001, (writes.last - writes.first) / 1000)) * 10) / 10,
    };
  } finally {
    await watcher.cancel();
  }
}

async function waitForLeader(run: BenchRun): Promise<string> {
  return run.withAdmin(async (admin) => {
    for (let i = 0; i < 120; i++) {
      const leader = (await admin.status()).leader_id;
      if (leader) return leader;
      await sleep(500);
    }
    throw new Error('no leader elected within 60 s');
  });
}

await BenchRun.main(async (run) => {
  await run.startCluster({
    coordinatorOverrides: { rotationSweepSeconds: SWEEP_SECONDS, keys: { minRotationPeriodSeconds: 1 } },
  });
  const created = await runLoad(run, {
    label: `CreateKey x ${KEYS}`,
    target: 'create-key',
    count: KEYS,
    args: ['--name-prefix', PREFIX.slice(0, -1), '--rotation-period', String(PERIOD)],
    setupSeconds: TIMEOUT,
    ...atCoordinator(run),
  });
  if (created.result.errors > 0) throw new Error(`creating the keys: ${created.result.errors} calls failed (${created.result.firstError})`);
  log(`${KEYS} keys created in ${created.result.seconds} s (${created.result.callsPerSec} keys/s)`);
  log(`leader: ${await waitForLeader(run)}`);

  const { ns } = run.connectEtcd();
  const cmp = await compareRounds(run, {
    baseline: (suffix) =>
      runLoad(run, {
        label: `etcd-rotate${suffix}`,
        target: 'etcd-rotate',
        concurrency: BASELINE_INFLIGHT,
        count: KEYS,
        setupSeconds: TIMEOUT,
        ...atEtcd(run, '--name-prefix', PREFIX),
      }),
    measured: (suffix) => sweepRound(run, ns, `sweep${suffix}`),
  });
  const sweep = cmp.value as SweepRow;
  return report(run, cmp, {
    title:
      `Rotation sweep of ${KEYS} due keys (leader coordinator, sweep every ${SWEEP_SECONDS} s; keys/s from the due instant to the ` +
      `last new version) vs raw etcd transactions of its shape (${BASELINE_INFLIGHT} in flight, one etcd3 client, TLS)`,
    bench: `rotate-sweep-${KEYS}`,
    unit: 'keys/s',
    target: 0.5,
    ratioName: 'sweep/etcd-rotate',
    before: [created],
    details: { keys: KEYS, sweep_seconds: sweep.result.seconds, first_rotation_after_s: sweep.firstAfterS, first_to_last_keys_per_s: sweep.firstToLastRate },
  });
});
