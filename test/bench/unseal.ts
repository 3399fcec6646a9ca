/**
 * `npm run bench:unseal`: time from the t-th custodian approval until every coordinator
 * replica serves Encrypt (issue "Quorum governance", Benchmark).
 *
 * A dev cluster with 5 custodians (threshold 3) whose operators approve by hand, and 3
 * coordinator replicas. Each run: seal the cluster, start one unseal ceremony, have two
 * operators approve it and wait until the coordinator has counted both; then the clock
 * starts and the third operator approves; it stops when all three replicas have answered an
 * Encrypt (each polled every BENCH_POLL_MS, default 5 ms). BENCH_UNSEAL_RUNS runs (default 20):
 * p50 and p99.
 * Baseline, in the same run, once the cluster is stopped: the same three share releases made
 * directly against the three HSM tokens with no service — per token, its approval signature
 * and its share wrapped (C_WrapKey, RSA-OAEP) to three replica keys — timed the same number of
 * times, each token in its own process (as the custodians are; SoftHSM reads its config per
 * process); a run's baseline is the slowest of the three (they run side by side in the service). Last line: {"bench":"unseal-3of5-3-replicas","value":<p50 ms>,"baseline":<p50 ms>,
 * "ratio":value/baseline,...}. Target: value (p50) <= 250 ms.
 * Every process is stopped by PID, also on error or SIGINT (BenchRun).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ADMIN, DevCluster, coordinatorId, transportPublicKeyPem } from '@keyshard/devcluster';
import { CustodianToken, SOFTHSM_MODULE } from '@keyshard/hsm';
import type { KeyshardClient } from '@keyshard/client';
import { BenchRun, envNumber } from './bench-run.ts';
import { log } from './common.ts';

const RUNS = envNumber('BENCH_UNSEAL_RUNS', 20, { integer: true });
const POLL_MS = envNumber('BENCH_POLL_MS', 5, { min: 0 });
const TARGET_MS = 250;
const REPLICAS = [coordinatorId(0), coordinatorId(1), coordinatorId(2)];
const APPROVERS = ['custodian-1', 'custodian-2', 'custodian-3'];

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const round = (x: number) => Math.round(x * 10) / 10;

if (process.argv[2] === '--baseline-token') {
  // Child: time RUNS releases of one token (SOFTHSM2_CONF set by the parent); print JSON ms.
  const [, , , label, pinFile, clusterId, recipientsJson] = process.argv;
  const t = CustodianToken.open({ modulePath: SOFTHSM_MODULE, tokenLabel: label!, pin: readFileSync(pinFile!, 'utf8').trim(), oaepHash: 'sha1' });
  const recipients = JSON.parse(recipientsJson!) as { id: string; pem: string }[];
  const out: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    t.signApproval(Buffer.alloc(32, i));
    for (const r of recipients) t.wrapShare(clusterId!, { kind: 'transport', name: r.id }, r.pem);
    out.push(performance.now() - t0);
  }
  t.close();
  process.stdout.write(JSON.stringify(out));
  process.exit(0);
}

await BenchRun.main(async (run) => {
  run.dir = mkdtempSync(path.join(os.tmpdir(), 'keyshard-bench-unseal-'));
  const cluster = await DevCluster.create({ dir: run.dir, custodians: 5, threshold: 3, coordinators: 3, approvalPolicy: 'manual', progress: log });
  run.cluster = cluster;
  await cluster.start();
  const clients = REPLICAS.map((id) => cluster.client(ADMIN, { coordinator: id, timeoutMs: 2_000 }));
  run.onCleanup(() => clients.forEach((c) => c.close()));
  const admin = clients[0]!;
  await admin.init(5, 3);
  const key = (await unsealOnce(cluster, admin, clients)).key;
  const clusterId = (await admin.status()).cluster_id;

  const samples: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    await admin.seal();
    for (const c of clients) while (!(await c.status()).sealed) await sleep(20);
    const { ms } = await unsealOnce(cluster, admin, clients, key);
    samples.push(ms);
    log(`run ${i + 1}/${RUNS}: ${ms.toFixed(1)} ms from the 3rd approval to 3 replicas serving`);
  }

  // Baseline: the same releases straight against the HSMs, with the service stopped.
  await cluster.stop();
  const base = baseline(cluster, clusterId);

  const value = round(pct(samples, 50));
  const p99 = round(pct(samples, 99));
  const baselineP50 = round(pct(base, 50));
  process.stdout.write(
    `\nunseal (3 of 5, 3 replicas), ${RUNS} runs: p50 ${value} ms, p99 ${p99} ms (target p50 <= ${TARGET_MS} ms: ${value <= TARGET_MS ? 'met' : 'NOT met'})\n` +
      `baseline (3 releases directly against the HSMs): p50 ${baselineP50} ms, p99 ${round(pct(base, 99))} ms\n`,
  );
  process.stdout.write(
    `${JSON.stringify({ bench: 'unseal-3of5-3-replicas', value, baseline: baselineP50, ratio: Math.round((value / baselineP50) * 100) / 100, p99_ms: p99, runs: RUNS, target_p50_ms: TARGET_MS })}\n`,
  );
  return 0;
});

/**
 * One unseal through operators: two approvals counted, then the clock runs from the third to
 * the moment every replica has served an Encrypt. Creates the bench key the first time.
 */
async function unsealOnce(cluster: DevCluster, admin: KeyshardClient, clients: KeyshardClient[], key?: string) {
  const c = await admin.startUnseal();
  const approve = async (custodian: string) => {
    const op = cluster.operatorClient(custodian);
    try {
      while (!(await op.pending()).ceremonies.some((x) => x.id === c.id)) await sleep(10);
      await op.approve(c.id);
    } finally {
      op.close();
    }
  };
  await Promise.all(APPROVERS.slice(0, 2).map(approve));
  while ((await admin.getCeremony(c.id)).approved_by.length < 2) await sleep(10);
  if (!key) {
    // First unseal: not timed; makes the key every later run encrypts with.
    await approve(APPROVERS[2]!);
    await cluster.waitUnsealed(REPLICAS);
    return { ms: 0, key: (await admin.createKey('bench-unseal')).id };
  }
  const op = cluster.operatorClient(APPROVERS[2]!);
  while (!(await op.pending()).ceremonies.some((x) => x.id === c.id)) await sleep(10);
  const t0 = performance.now();
  await op.approve(c.id);
  op.close();
  await Promise.all(
    clients.map(async (client) => {
      for (;;) {
        try {
          await client.encrypt(key, Buffer.from('x'));
          return;
        } catch {
          await sleep(POLL_MS);
        }
      }
    }),
  );
  return { ms: performance.now() - t0, key };
}

/** The three approvers' releases made directly against their tokens: sign + wrap to 3 replica keys. */
function baseline(cluster: DevCluster, clusterId: string): number[] {
  // The coordinators' transport keys, enrolled in every token by the dev SO: the only keys a share may be wrapped to.
  const recipients = cluster.coordinatorIds.slice(0, REPLICAS.length).map((id) => ({ id, pem: transportPublicKeyPem(cluster.layout, id) }));
  const perToken = APPROVERS.map((id) => {
    const out = execFileSync(process.execPath, ['--conditions=keyshard-source', '--import', 'tsx', fileURLToPath(import.meta.url), '--baseline-token', id, cluster.layout.pinFile[id]!, clusterId, JSON.stringify(recipients)], {
      env: { ...process.env, SOFTHSM2_CONF: cluster.layout.softhsmConf[id] },
    });
    return JSON.parse(out.toString()) as number[];
  });
  return perToken[0]!.map((_, i) => Math.max(...perToken.map((t) => t[i]!)));
}
