/**
 * `npm run bench:decrypt`: audited Decrypt throughput against a bare gRPC baseline.
 *
 * 1. Starts a real dev cluster (3 custodians, threshold 2, temp dir), unseals it, creates an
 *    AES-256-GCM key and checks one Encrypt/Decrypt round trip. Every Decrypt is audited (the
 *    coordinator's durable spool, then the sink), like Encrypt.
 * 2. Starts test/bench/echo-server.ts (own process, the coordinator's mutual TLS): Echo of 1 KiB.
 * 3. Runs test/bench/load.ts (own process), alternating, against the echo server and against
 *    Decrypt: 64 calls in flight, BENCH_CHANNELS connections, warm-up, then BENCH_SECONDS.
 *    Each load generator makes one ciphertext of a random 1 KiB plaintext (one Encrypt) and
 *    decrypts it over and over: requests of 1 KiB + 60 B (format, key id, version, nonce, tag),
 *    answers of 1 KiB plaintext.
 *    The echo carries 1 KiB each way.
 * 4. Prints a table and, as its LAST line, one JSON object:
 *    {"bench":"decrypt-1KiB-mtls-64","value":<decrypt calls/s>,"baseline":<echo calls/s>,"ratio",...}
 *
 * Environment: BENCH_SECONDS, BENCH_WARMUP, BENCH_CHANNELS, BENCH_ROUNDS, BENCH_KEEP,
 * BENCH_CPU_PROF (test/bench/bench-run.ts). Every process it starts is stopped by PID, also on
 * error or SIGINT/SIGTERM. Exit code 1 if any measured call failed (the JSON line still prints).
 */
import { randomBytes } from 'node:crypto';
import { BenchRun } from './bench-run.ts';
import { log } from './common.ts';
import { compareWithEcho } from './echo-baseline.ts';
import { DEFAULT_PAYLOAD } from './load-run.ts';

const KEY_NAME = 'bench-decrypt';

await BenchRun.main(async (run) => {
  await run.startCluster();
  await run.withKeyUser(async (app) => {
    const key = await app.createKey(KEY_NAME, { description: 'bench:decrypt' });
    const plaintext = randomBytes(DEFAULT_PAYLOAD);
    const { ciphertext } = await app.encrypt(KEY_NAME, plaintext);
    // One audited round trip before any load: fails fast if the path is broken.
    if (!(await app.decrypt(ciphertext)).plaintext.equals(plaintext)) throw new Error('Decrypt did not return the plaintext');
    log(`key ${key.name} (${key.id}); ciphertext of ${plaintext.length} B is ${ciphertext.length} B`);
  });
  return compareWithEcho(run, {
    bench: 'decrypt-1KiB-mtls-64',
    target: 'decrypt',
    keyName: KEY_NAME,
    payloadNote: 'the plaintext of the ciphertext decrypted',
    ratioTarget: 0.6,
  });
});
