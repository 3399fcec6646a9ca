/**
 * `npm run bench:create-key`: CreateKey throughput (keys/s) against raw etcd transactions of the
 * same shape.
 *
 * 1. Starts a real dev cluster (3 custodians, threshold 2, temp dir), unseals it and creates a
 *    template key (`bench-ck-template`) with the same request as the load's.
 * 2. Alternates two runs of test/bench/load.ts (own process), 64 in flight, warm-up then
 *    BENCH_SECONDS each:
 *      etcd-create  the floor (etcd-baseline.ts): what keyring.ts `create` writes, as one raw
 *                   etcd3 transaction per key (if names/<name> create == 0 then put names/<name>,
 *                   keys/<id>, versions/<id>/1), with the template's own records as values (same
 *                   sizes), into the same etcd with the coordinator's TLS client certificate,
 *                   under a scratch prefix no coordinator watches; one etcd3 client, like the
 *                   coordinator's;
 *      create-key   CreateKey { name: bench-ck-r<round>-<n> } (aes256-gcm, no rotation, empty
 *                   policy), BENCH_CHANNELS connections. Each call is audited twice before it
 *                   answers: its intent at the sink, its outcome in the coordinator's durable
 *                   spool. The coordinator commits concurrent creates as nested transactions of
 *                   one etcd transaction (CreateBatcher, packages/store/src/cas.ts): "Txn" per
 *                   call below is then a fraction, each create keeping its own compare.
 * 3. Prints a table and, as its LAST line, one JSON object:
 *    {"bench":"create-key-64","value":<keys/s>,"baseline":<etcd txns/s>,"ratio",...}
 *
 * Environment: BENCH_SECONDS, BENCH_WARMUP, BENCH_CHANNELS, BENCH_ROUNDS, BENCH_KEEP,
 * BENCH_CPU_PROF (test/bench/bench-run.ts). Every process it starts is stopped by PID, also on
 * error or SIGINT/SIGTERM; the scratch prefix is deleted. Exit code 1 if any measured call failed.
 */
import { BenchRun } from './bench-run.ts';
import { log } from './common.ts';
import { atCoordinator, atEtcd, compareRounds, runLoad, DEFAULT_CONCURRENCY } from './load-run.ts';
import { report } from './report.ts';

await BenchRun.main(async (run) => {
  await run.startCluster();
  const template = await run.withKeyUser(async (app) => (await app.createKey('bench-ck-template')).id);
  log(`template key ${template}`);
  let round = 0;
  const cmp = await compareRounds(run, {
    baseline: (suffix) => runLoad(run, { label: `etcd-create${suffix}`, target: 'etcd-create', ...atEtcd(run, '--template-key', template) }),
    measured: (suffix) =>
      runLoad(run, { label: `create-key${suffix}`, target: 'create-key', args: ['--name-prefix', `bench-ck-r${++round}`], ...atCoordinator(run) }),
  });
  const { seconds, warmup, channels } = run.settings;
  return report(run, cmp, {
    title:
      `CreateKey (${channels} channel(s), mutual TLS) vs raw etcd transactions of its shape (one etcd3 client, TLS): ` +
      `${DEFAULT_CONCURRENCY} in flight, ${seconds} s measured after ${warmup} s warm-up`,
    bench: `create-key-${DEFAULT_CONCURRENCY}`,
    unit: 'keys/s',
    target: 0.5,
    ratioName: 'create-key/etcd-create',
  });
});
