/**
 * `npm run bench:backup`: backup and restore throughput (etcd entries/s) and peak memory, at
 * 10,000 and at 100,000 keys, against a raw etcd range read and put of the same data.
 *
 * 1. A dev cluster (3 custodians, threshold 2, temp dir, one coordinator), unsealed.
 * 2. For each size N (BENCH_BACKUP_SIZES, default "10000,100000"): CreateKey (load.ts, 64 in
 *    flight) until the cluster holds N keys (each key is 3–4 etcd entries: record, version,
 *    name, usage once used); then
 *      raw       the floor: every entry of the cluster's durable prefixes read at one revision
 *                (pages of 1,000, as the backup reads them) with the coordinator's TLS
 *                certificate, then put into a scratch prefix (transactions of 100 puts, 4 in
 *                flight, as the restore writes them), then deleted;
 *      backup    `keyshard backup create --out FILE` (the CLI, its own process) against the
 *                coordinator: from start to the file renamed in place;
 *      restore   the cluster's state deleted from etcd (coordinator stopped and restarted on the
 *                empty prefix), then a restore of FILE through BackupClient: the recover
 *                ceremony (auto-approved custodians; not counted) then, timed, from the
 *                coordinator's "send" to its summary: every chunk checked (signature, AES-GCM,
 *                every KEK and version unwrapped) and written. The cluster is then unsealed on
 *                the restored state and the next size builds on it.
 *    entries/s = entries / time. value = entries / (backup + restore seconds); baseline =
 *    entries / (raw read + raw put seconds), at the largest size. Target ratio >= 0.5.
 * 3. Peak memory: the CLI's peak RSS (VmHWM) during the backup, and the coordinator's peak RSS
 *    above its RSS just before, during the backup and during the restore (its peak is reset
 *    through /proc/<pid>/clear_refs first). Target: each at the largest size within 1.5 x its
 *    value at the smallest.
 * Last line JSON: {"bench":"backup","value","baseline","ratio","memory":{...},...}.
 *
 * Environment: BENCH_BACKUP_SIZES, BENCH_KEEP. Every process it starts is stopped by PID.
 */
import { spawn } from 'node:child_process';
import { createReadStream, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BackupClient } from '@keyshard/client';
import { ADMIN, COORDINATOR } from '@keyshard/devcluster';
import { BACKUP_PREFIXES, clusterPrefix, type Namespace } from '@keyshard/store';
import { Range } from 'etcd3';
import { BenchRun } from './bench-run.ts';
import { log, REPO_ROOT } from './common.ts';
import { atCoordinator, runLoad } from './load-run.ts';

const SIZES = (process.env.BENCH_BACKUP_SIZES ?? '10000,100000').split(',').map(Number);
const TARGET_RATIO = 0.5;
const TARGET_MEMORY = 1.5;

const kib = (pid: number, field: 'VmRSS' | 'VmHWM') => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
/** Resets the process's peak RSS (VmHWM) to its current RSS (Linux clear_refs, value 5). */
const resetPeak = (pid: number) => writeFileSync(`/proc/${pid}/clear_refs`, '5');

interface Sizes {
  keys: number;
  entries: number;
  fileBytes: number;
  rawReadS: number;
  rawPutS: number;
  backupS: number;
  restoreS: number;
  cliPeakKiB: number;
  coordinatorBackupKiB: number;
  coordinatorRestoreKiB: number;
}

/** Every durable entry at one revision, paged like the backup; returns them (for the put). */
async function rawRead(ns: Namespace): Promise<{ key: string; value: Buffer }[]> {
  const revision = (await ns.get('cluster').exec()).header.revision;
  const out: { key: string; value: Buffer }[] = [];
  for (const p of BACKUP_PREFIXES) {
    const end = p.endsWith('/') ? Range.prefix(p).end : Buffer.from(`${p}\0`);
    for (let start: string = p; ; ) {
      const res = await ns.getAll().inRange({ start, end }).revision(revision).limit(1000).exec();
      for (const kv of res.kvs) out.push({ key: kv.key.toString(), value: kv.value });
      if (!res.more || res.kvs.length === 0) break;
      start = `${out[out.length - 1]!.key}\0`;
    }
  }
  return out;
}

async function rawPut(scratch: Namespace, entries: { key: string; value: Buffer }[]): Promise<void> {
  const batches: (typeof entries)[] = [];
  for (let i = 0; i < entries.length; i += 100) batches.push(entries.slice(i, i + 100));
  for (let i = 0; i < batches.length; i += 4)
    await Promise.all(batches.slice(i, i + 4).map((b) => scratch.if('cluster', 'Version', '>', -1).then(...b.map((e) => scratch.put(e.key).value(e.value))).commit()));
}

/** Runs the CLI, sampling its peak RSS until it exits. */
async function cli(args: string[], env: Record<string, string>): Promise<{ peakKiB: number; seconds: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  let peak = 0;
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, kib(child.pid!, 'VmHWM'));
    } catch {
      /* exited */
    }
  }, 20);
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  clearInterval(timer);
  if (code !== 0) throw new Error(`keyshard ${args.join(' ')} exited ${code}: ${stderr}`);
  return { peakKiB: peak, seconds: (performance.now() - started) / 1000 };
}

await BenchRun.main(async (run) => {
  const cluster = await run.startCluster();
  const { etcd, ns } = run.connectEtcd();
  // Under the cluster's prefix (the only one the coordinator's etcd user may write), in a folder no coordinator reads.
  const scratch = etcd.namespace(`${clusterPrefix(run.etcd.clusterName)}bench-scratch/backup-${process.pid}/`);
  run.onCleanup(() => scratch.delete().all());
  const admin = cluster.layout.certs[ADMIN]!;
  const env = { KEYSHARD_ADDR: cluster.coordinatorAddress, KEYSHARD_CA: admin.ca, KEYSHARD_CERT: admin.cert, KEYSHARD_KEY: admin.key };
  const file = path.join(run.dir!, 'bench.ksbackup');
  const coordinatorPid = () => cluster.process(COORDINATOR).pid!;
  const results: Sizes[] = [];
  let made = 0;
  for (const n of SIZES) {
    if (n > made)
      await runLoad(run, { label: `create ${n - made} keys`, target: 'create-key', count: n - made, args: ['--name-prefix', `bench-bk-${n}`], ...atCoordinator(run), etcd: false, setupSeconds: 7200 });
    made = n;
    await run.compactEtcd();

    let t = performance.now();
    const entries = await rawRead(ns);
    const rawReadS = (performance.now() - t) / 1000;
    t = performance.now();
    await rawPut(scratch, entries);
    const rawPutS = (performance.now() - t) / 1000;
    await scratch.delete().all();
    const entryCount = entries.length;
    entries.length = 0;
    log(`${n} keys: ${entryCount} entries; raw read ${rawReadS.toFixed(2)} s, raw put ${rawPutS.toFixed(2)} s`);
    await run.compactEtcd();

    const before = kib(coordinatorPid(), 'VmRSS');
    resetPeak(coordinatorPid());
    const backup = await cli(['backup', 'create', '--out', file], env);
    const coordinatorBackupKiB = kib(coordinatorPid(), 'VmHWM') - before;
    log(`backup: ${backup.seconds.toFixed(2)} s, ${(statSync(file).size / 1e6).toFixed(1)} MB, CLI peak ${(backup.peakKiB / 1024).toFixed(0)} MiB, coordinator +${(coordinatorBackupKiB / 1024).toFixed(0)} MiB`);

    // The site is lost: the cluster's state goes, the coordinator restarts on the empty prefix.
    await cluster.process(COORDINATOR).stop();
    await ns.delete().all();
    await run.compactEtcd();
    await cluster.start([COORDINATOR]);
    const restoreBefore = kib(coordinatorPid(), 'VmRSS');
    resetPeak(coordinatorPid());
    const client = new BackupClient({ address: cluster.coordinatorAddress, tls: admin });
    const header = readFileSync(file).subarray(0, 12 + readFileSync(file).readUInt32BE(8));
    let sendAt = 0;
    const summary = await client.restore(header, () => createReadStream(file, { highWaterMark: 256 * 1024 }), {}, (p) => {
      if (p.phase === 'send') sendAt = performance.now();
    });
    const restoreS = (performance.now() - sendAt) / 1000;
    client.close();
    const coordinatorRestoreKiB = kib(coordinatorPid(), 'VmHWM') - restoreBefore;
    if (Number(summary.entries) !== entryCount) throw new Error(`restored ${summary.entries} entries, expected ${entryCount}`);
    log(`restore: ${restoreS.toFixed(2)} s (after the ceremony), coordinator +${(coordinatorRestoreKiB / 1024).toFixed(0)} MiB`);
    await cluster.waitUnsealed([COORDINATOR]);
    await sleep(500);
    results.push({ keys: n, entries: entryCount, fileBytes: statSync(file).size, rawReadS, rawPutS, backupS: backup.seconds, restoreS, cliPeakKiB: backup.peakKiB, coordinatorBackupKiB, coordinatorRestoreKiB });
  }

  console.log('');
  console.log('keys     entries   file MB  raw read s  raw put s  backup s  restore s  backup e/s  restore e/s  raw e/s  CLI peak MiB  coord +MiB backup  coord +MiB restore');
  for (const r of results)
    console.log(
      [r.keys, r.entries, (r.fileBytes / 1e6).toFixed(1), r.rawReadS.toFixed(2), r.rawPutS.toFixed(2), r.backupS.toFixed(2), r.restoreS.toFixed(2),
        (r.entries / r.backupS).toFixed(0), (r.entries / r.restoreS).toFixed(0), (r.entries / (r.rawReadS + r.rawPutS)).toFixed(0),
        (r.cliPeakKiB / 1024).toFixed(0), (r.coordinatorBackupKiB / 1024).toFixed(0), (r.coordinatorRestoreKiB / 1024).toFixed(0)].map(String).join('  '),
    );
  const small = results[0]!;
  const large = results[results.length - 1]!;
  const value = large.entries / (large.backupS + large.restoreS);
  const baseline = large.entries / (large.rawReadS + large.rawPutS);
  const ratio = value / baseline;
  const growth = (f: (r: Sizes) => number) => Math.round((Math.max(f(large), 1024) / Math.max(f(small), 1024)) * 100) / 100; // below 1 MiB counts as 1 MiB
  const memory = { cli_backup: growth((r) => r.cliPeakKiB), coordinator_backup: growth((r) => r.coordinatorBackupKiB), coordinator_restore: growth((r) => r.coordinatorRestoreKiB) };
  const memoryMet = Object.values(memory).every((g) => g <= TARGET_MEMORY);
  console.log(`ratio (backup+restore)/(raw read+put) at ${large.keys} keys = ${ratio.toFixed(3)} (target >= ${TARGET_RATIO}: ${ratio >= TARGET_RATIO ? 'met' : 'NOT met'})`);
  console.log(`peak memory ${large.keys} keys / ${small.keys} keys: ${JSON.stringify(memory)} (target <= ${TARGET_MEMORY}: ${memoryMet ? 'met' : 'NOT met'})`);
  console.log(JSON.stringify({ bench: 'backup', value: Math.round(value), baseline: Math.round(baseline), ratio: Math.round(ratio * 1000) / 1000, unit: 'entries/s', target: TARGET_RATIO, keys: large.keys, entries: large.entries, memory_growth: memory, memory_target: TARGET_MEMORY }));
  return 0;
});
