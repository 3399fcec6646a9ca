/**
 * `npm run bench:audit`: audit log append throughput with group commit.
 *
 * 1. In process: PRODUCERS concurrent producers append batches of BATCH events to a real
 *    AuditLog (Merkle tree, canonical JSON, fdatasync per group, one Ed25519 checkpoint per
 *    group) for BENCH_SECONDS.
 * 2. Baseline, same run, same disk: a plain file append of the same record lines with one
 *    fdatasync per batch of BATCH events (what a log without group commit costs).
 * 3. Through the real sink process (mutual TLS, gRPC Append streams): AuditClient.recordAll
 *    from PRODUCERS callers; informative (the client and the sink share the 2 cores).
 * Last line, JSON: {"bench":"audit-append","value":<events/s, 1>,"baseline":<events/s, 2>,"ratio",...}.
 * Target (issue 5): value ≥ 20,000 events/s.
 *
 * Environment: BENCH_SECONDS (default 5), BENCH_BATCH (default 16), BENCH_PRODUCERS (default 32),
 * BENCH_KEEP=1 keeps the temp directory.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { canonicalJson } from '@keyshard/crypto';
import { leafHash } from '@keyshard/audit-client/merkle';
import { AuditClient, type AuditEvent } from '@keyshard/audit-client';
import { AuditLog } from '@keyshard/audit-sink/audit-log';
import { signerFromKey } from '../../services/audit-sink/src/checkpoint-store.ts';
import { encodeRecord } from '../../services/audit-sink/src/record-format.ts';
import { COORDINATOR, DevCluster } from '@keyshard/devcluster';
import { readTls } from '@keyshard/rpc';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const BATCH = Number(process.env.BENCH_BATCH ?? 16);
const PRODUCERS = Number(process.env.BENCH_PRODUCERS ?? 32);

const event = (i: number): AuditEvent => ({
  id: randomUUID(),
  time: new Date().toISOString(),
  source: COORDINATOR,
  principal: 'app',
  operation: 'keys.Encrypt',
  key_id: 'k_AIoq0mFtHqvnipR8XTN68Q',
  ceremony_id: '',
  result: 'ok',
  code: '',
  request_id: randomUUID(),
  details: { version: String(1 + (i % 3)) },
});
const batch = () => Array.from({ length: BATCH }, (_, i) => event(i));

/** Runs `producers` closed loops of `step` for SECONDS; returns events/s. */
async function closedLoop(producers: number, step: () => Promise<number>): Promise<number> {
  const end = performance.now() + SECONDS * 1000;
  let events = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: producers }, async () => {
      while (performance.now() < end) {
        const n = await step(); // not `events += await step()`: that reads `events` before the await
        events += n;
      }
    }),
  );
  return events / ((performance.now() - t0) / 1000);
}

async function groupCommit(dir: string): Promise<{ rate: number; syncs: number; records: number }> {
  const log = await AuditLog.open(dir, { signer: signerFromKey(generateKeyPairSync('ed25519').privateKey) });
  const rate = await closedLoop(PRODUCERS, async () => (await log.append(batch())).count);
  const r = { rate, syncs: log.syncs, records: log.size };
  await log.close();
  return r;
}

async function plainAppend(file: string): Promise<number> {
  const fh = await fs.promises.open(file, 'a', 0o600);
  let index = 0;
  try {
    return await closedLoop(1, async () => {
      const lines = batch().map((e) => {
        const json = canonicalJson(e);
        return encodeRecord(index++, leafHash(json), json);
      });
      await fh.write(lines.join(''));
      await fh.datasync();
      return lines.length;
    });
  } finally {
    await fh.close();
  }
}

async function throughSink(dir: string): Promise<number> {
  const cluster = await DevCluster.create({ dir, custodians: 1, threshold: 1 });
  await cluster.start(['audit-sink']);
  const client = new AuditClient({ address: `127.0.0.1:${cluster.layout.plan.ports.audit}`, tls: readTls(cluster.layout.certs[COORDINATOR]!), source: COORDINATOR, timeoutMs: 10_000 });
  try {
    return await closedLoop(PRODUCERS, async () => {
      await client.recordAll(batch());
      return BATCH;
    });
  } finally {
    await client.close();
    await cluster.stop();
  }
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'keyshard-bench-audit-'));
try {
  const gc = await groupCommit(path.join(root, 'log'));
  const plain = await plainAppend(path.join(root, 'plain.log'));
  const sink = await throughSink(path.join(root, 'cluster'));
  const row = (name: string, v: number, extra = '') => process.stdout.write(`${name.padEnd(44)} ${Math.round(v).toString().padStart(9)} events/s ${extra}\n`);
  process.stdout.write(`audit append, ${SECONDS} s each, batches of ${BATCH}, ${PRODUCERS} producers\n`);
  row('AuditLog, group commit (in process)', gc.rate, `(${gc.records} records, ${gc.syncs} fsyncs: ${(gc.records / Math.max(1, gc.syncs)).toFixed(0)} events/fsync)`);
  row('plain file append, fsync per batch', plain);
  row('sink process over mTLS (AuditClient)', sink);
  const result = { bench: 'audit-append', value: Math.round(gc.rate), baseline: Math.round(plain), ratio: Number((gc.rate / plain).toFixed(2)), target: 20_000, sink_mtls: Math.round(sink), unit: 'events/s' };
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  if (!process.env.BENCH_KEEP) fs.rmSync(root, { recursive: true, force: true });
}
