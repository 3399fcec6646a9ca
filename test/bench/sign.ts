/**
 * `npm run bench:sign`: audited Ed25519 Sign throughput against a bare gRPC baseline.
 *
 * 1. Starts a real dev cluster (3 custodians, threshold 2, temp dir), unseals it, creates an
 *    ed25519 key, signs once and checks the signature against GetPublicKey with node:crypto.
 *    Every Sign is audited (the coordinator's durable spool, then the sink).
 * 2. Starts test/bench/echo-server.ts (own process, the coordinator's mutual TLS): Echo of 1 KiB.
 * 3. Runs test/bench/load.ts (own process), alternating, against the echo server and against
 *    Sign: 64 calls in flight, BENCH_CHANNELS connections, warm-up, then BENCH_SECONDS. The
 *    message is 1 KiB of random bytes (pure Ed25519, RFC 8032, signs messages, not digests):
 *    requests of 1 KiB, answers of a 64-byte signature. The echo carries 1 KiB each way.
 * 4. Prints a table and, as its LAST line, one JSON object:
 *    {"bench":"sign-ed25519-1KiB-mtls-64","value":<sign calls/s>,"baseline":<echo calls/s>,"ratio",...}
 *
 * Environment: BENCH_SECONDS, BENCH_WARMUP, BENCH_CHANNELS, BENCH_ROUNDS, BENCH_KEEP,
 * BENCH_CPU_PROF (test/bench/bench-run.ts). Every process it starts is stopped by PID, also on
 * error or SIGINT/SIGTERM. Exit code 1 if any measured call failed (the JSON line still prints).
 */
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { BenchRun } from './bench-run.ts';
import { log } from './common.ts';
import { compareWithEcho } from './echo-baseline.ts';
import { DEFAULT_PAYLOAD } from './load-run.ts';

const KEY_NAME = 'bench-sign';

await BenchRun.main(async (run) => {
  await run.startCluster();
  await run.withKeyUser(async (app) => {
    const key = await app.createKey(KEY_NAME, { type: 'ed25519', description: 'bench:sign' });
    const message = randomBytes(DEFAULT_PAYLOAD);
    // One audited Sign before any load, verified outside the service: fails fast if the path is broken.
    const { signature } = await app.sign(KEY_NAME, { message });
    const { pem } = await app.getPublicKey(KEY_NAME);
    if (!verify(null, message, createPublicKey(pem), signature)) throw new Error('the Ed25519 signature does not verify');
    log(`key ${key.name} (${key.id}), ${key.type}`);
  });
  return compareWithEcho(run, {
    bench: 'sign-ed25519-1KiB-mtls-64',
    target: 'sign',
    keyName: KEY_NAME,
    payloadNote: 'the message signed, Ed25519',
    ratioTarget: 0.5,
  });
});
