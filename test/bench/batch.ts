/**
 * `npm run bench:batch`: EncryptBatch throughput, in MB/s of plaintext, against node:crypto.
 *
 * 1. Starts a real dev cluster (3 custodians, threshold 2, temp dir), unseals it, creates an
 *    AES-256-GCM key and checks one EncryptBatch. Each call is audited once (the spool, then the sink).
 * 2. Alternates two runs of test/bench/load.ts (own process), warm-up then BENCH_SECONDS each:
 *      aes-gcm-local  the floor: in the load process itself, one core, batches of 1,000
 *                     AES-256-GCM encryptions (node:crypto) of the same 1 KiB message, each with a
 *                     fresh random 12-byte nonce (nonce | ciphertext | tag concatenated), no gRPC;
 *      encrypt-batch  EncryptBatch calls of 1,000 items of 1 KiB (one random plaintext, one key,
 *                     empty context), BENCH_BATCH_INFLIGHT calls in flight (default 4) over
 *                     BENCH_CHANNELS connections, 60 s deadline; an item that fails fails its call.
 *    MB/s = calls/s × 1,000 × 1,024 B / 10^6.
 * 3. Prints a table and, as its LAST line, one JSON object:
 *    {"bench":"encrypt-batch-1000x1KiB","value":<MB/s>,"baseline":<MB/s>,"ratio",...}
 *
 * Environment: BENCH_BATCH_INFLIGHT (default 4), BENCH_SECONDS, BENCH_WARMUP, BENCH_CHANNELS,
 * BENCH_ROUNDS, BENCH_KEEP, BENCH_CPU_PROF (test/bench/bench-run.ts). Every process it starts is
 * stopped by PID, also on error or SIGINT/SIGTERM. Exit code 1 if any measured call failed.
 */
import { randomBytes } from 'node:crypto';
import { BenchRun, envNumber } from './bench-run.ts';
import { log } from './common.ts';
import { atCoordinator, compareRounds, runLoad, DEFAULT_PAYLOAD } from './load-run.ts';
import { report } from './report.ts';

const KEY_NAME = 'bench-batch';
const ITEMS = 1000;
const INFLIGHT = envNumber('BENCH_BATCH_INFLIGHT', 4, { integer: true });

await BenchRun.main(async (run) => {
  await run.startCluster();
  await run.withKeyUser(async (app) => {
    const key = await app.createKey(KEY_NAME, { description: 'bench:batch' });
    // One audited batch before any load: fails fast if the path is broken.
    const plaintext = randomBytes(DEFAULT_PAYLOAD);
    const { results } = await app.encryptBatch(Array.from({ length: ITEMS }, () => ({ key: KEY_NAME, plaintext })));
    const failed = results.filter((r) => r.error).length;
    if (results.length !== ITEMS || failed > 0) throw new Error(`EncryptBatch of ${ITEMS}: ${results.length} results, ${failed} failed`);
    log(`key ${key.name} (${key.id})`);
  });
  const items = ['--items', String(ITEMS)];
  const cmp = await compareRounds(run, {
    baseline: (suffix) =>
      runLoad(run, { label: `aes-gcm-local${suffix}`, target: 'aes-gcm-local', concurrency: 1, channels: 1, args: items, watch: {} }),
    measured: (suffix) =>
      runLoad(run, {
        label: `encrypt-batch${suffix}`,
        target: 'encrypt-batch',
        concurrency: INFLIGHT,
        args: [...items, '--keyname', KEY_NAME, '--timeout-ms', '60000'],
        ...atCoordinator(run),
      }),
  });
  const { seconds, warmup, channels } = run.settings;
  return report(run, cmp, {
    title:
      `EncryptBatch (${ITEMS} × ${DEFAULT_PAYLOAD} B, ${INFLIGHT} in flight over ${channels} channel(s), mutual TLS) vs in-process ` +
      `node:crypto AES-256-GCM (one core): one call = ${ITEMS} messages, ${seconds} s measured after ${warmup} s warm-up`,
    bench: 'encrypt-batch-1000x1KiB',
    unit: 'MB/s',
    perCall: (ITEMS * DEFAULT_PAYLOAD) / 1e6,
    target: 0.3,
    ratioName: 'encrypt-batch/aes-gcm-local',
    details: { items: ITEMS, in_flight: INFLIGHT },
  });
});
