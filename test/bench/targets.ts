/**
 * What one call of the load generator (test/bench/load.ts) is, by --target:
 *
 *   echo           keyshard.bench.Echo of the payload (the bare gRPC baseline, echo-server.ts)
 *   encrypt        KeyService.Encrypt of the payload with --keyname
 *   decrypt        KeyService.Decrypt of one ciphertext of the payload (made by one Encrypt at start)
 *   sign           KeyService.Sign of the payload as the message (--keyname an Ed25519 key)
 *   encrypt-batch  KeyService.EncryptBatch of --items copies of the payload; a failed item fails the call
 *   create-key     KeyService.CreateKey named <--name-prefix>-<call number> [--rotation-period S]
 *   audit          one AuditClient.record() until the sink's durable ack (diagnostics, see load.ts)
 *   aes-gcm-local  --items AES-256-GCM encryptions of the payload in this process, each with a fresh
 *                  random 12-byte nonce (node:crypto, one core): the floor of EncryptBatch
 *   etcd-create, etcd-rotate  raw etcd transactions: etcd-baseline.ts
 *
 * gRPC calls are made like the SDK makes them (`makeClient` + `unaryCall`: mutual TLS,
 * CHANNEL_OPTIONS, x-request-id metadata, a deadline of --timeout-ms, default 10 s), spread over
 * --channels channels by worker.
 */
import { createCipheriv, randomBytes, randomUUID } from 'node:crypto';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { keyshardProto, makeClient, unaryCallUnchecked, type ClientConstructor } from '@keyshard/rpc';
import { AuditClient, loadCheckpointKeys } from '@keyshard/audit-client';
import { auditSinkFromFlags, echoService, required, tlsFromFlags } from './common.ts';
import { etcdTarget } from './etcd-baseline.ts';

export type Flags = Record<string, string>;

export interface Target {
  /** One call; `worker` (0 … concurrency-1) picks the channel, `seq` numbers the calls from 0. */
  call(worker: number, seq: number): Promise<void>;
  close(): Promise<void>;
  /** Extra fields for load.ts's result line, given the number of completed calls. */
  details?(completed: number): Record<string, unknown>;
}

/** --channels clients of one service, each on its own TCP+TLS connection. */
async function channelsTo(flags: Flags, Ctor: ClientConstructor<grpc.Client>) {
  const address = required(flags, 'address');
  const tls = tlsFromFlags(flags);
  const timeoutMs = Number(flags['timeout-ms'] ?? 10_000);
  // A local subchannel pool per channel: otherwise grpc-js would share one connection between
  // channels with equal target, credentials and options.
  const clients = Array.from({ length: Number(flags.channels ?? 1) }, () =>
    makeClient(Ctor, address, tls, { 'grpc.use_local_subchannel_pool': 1 }),
  );
  await Promise.all(
    clients.map((c) => new Promise<void>((resolve, reject) => c.waitForReady(Date.now() + 10_000, (e) => (e ? reject(e) : resolve())))),
  );
  const unary = <Res>(worker: number, method: string, request: unknown) =>
    unaryCallUnchecked<Res>(clients[worker % clients.length]!, method, request, { timeoutMs });
  /** A target calling `method` with `request(seq)`; `check` rejects replies that carry failures. */
  const target = (method: string, request: (seq: number) => unknown, check?: (res: any) => void): Target => ({
    async call(worker, seq) {
      const res = await unary(worker, method, request(seq));
      check?.(res);
    },
    async close() {
      for (const c of clients) c.close();
    },
  });
  return { unary, target };
}

/** Shaped like a grpc ServiceError, so that load.ts counts it by status code. */
function itemFailure(code: number, message: string): Error {
  return Object.assign(new Error(message), { code, details: message, metadata: new grpc.Metadata() });
}

function batchCheck(items: number) {
  return (res: { results?: { error?: { code: number; message: string } | null }[] }) => {
    const results = res.results ?? [];
    const failed = results.find((r) => r.error);
    if (failed) throw itemFailure(failed.error!.code, `batch item: ${failed.error!.message}`);
    if (results.length !== items) throw itemFailure(grpc.status.INTERNAL, `batch of ${items} answered with ${results.length} results`);
  };
}

function auditTarget(flags: Flags): Target {
  const tls = tlsFromFlags(flags);
  // --address is the sink (its first replica); --audit-replicas, when given, every replica (BenchRun.auditFlags).
  const sink = auditSinkFromFlags({ 'audit-address': required(flags, 'address'), ...flags });
  const audits = Array.from(
    { length: Number(flags.channels ?? 1) },
    () => new AuditClient({ address: sink.address, replicas: sink.replicas, tls, source: required(flags, 'source'), timeoutMs: 10_000, checkpointKeys: loadCheckpointKeys(sink.keyFiles) }),
  );
  // An operation of the coordinator's appender scope: the bench appends as coordinator-1.
  const event = { principal: 'admin', operation: 'keys.Encrypt', result: 'ok', key_id: 'k_AAAAAAAAAAAAAAAAAAAAAA', details: { version: '1' } };
  // AuditClient numbers its batches (private field; diagnostics only): events per batch.
  const batches = () => audits.reduce((n, a) => n + (a as unknown as { batchSeq: number }).batchSeq, 0);
  return {
    call: (worker) => audits[worker % audits.length]!.record({ ...event, request_id: randomUUID() }),
    async close() {
      await Promise.all(audits.map((a) => a.close()));
    },
    details: (completed) => ({
      auditBatches: batches(),
      eventsPerBatch: Math.round((completed / Math.max(1, batches())) * 10) / 10,
    }),
  };
}

function localAesGcm(items: number, payload: Buffer): Target {
  const key = randomBytes(32);
  return {
    async call() {
      for (let i = 0; i < items; i++) {
        const nonce = randomBytes(12);
        const cipher = createCipheriv('aes-256-gcm', key, nonce);
        Buffer.concat([nonce, cipher.update(payload), cipher.final(), cipher.getAuthTag()]);
      }
      await yieldToLoop(); // lets load.ts's phase timers run between batches
    },
    async close() {},
  };
}

export async function openTarget(name: string, flags: Flags, payload: Buffer): Promise<Target> {
  const items = Number(flags.items ?? 1000);
  const key = () => required(flags, 'keyname');
  switch (name) {
    case 'echo':
      return (await channelsTo(flags, echoService())).target('Echo', () => ({ payload }));
    case 'encrypt': {
      const request = { key: key(), plaintext: payload, context: {} };
      return (await channelsTo(flags, keyshardProto().KeyService)).target('Encrypt', () => request);
    }
    case 'decrypt': {
      const ks = await channelsTo(flags, keyshardProto().KeyService);
      const { ciphertext } = await ks.unary<{ ciphertext: Buffer }>(0, 'Encrypt', { key: key(), plaintext: payload, context: {} });
      const request = { ciphertext, context: {} };
      return ks.target('Decrypt', () => request);
    }
    case 'sign': {
      const request = { key: key(), message: payload };
      return (await channelsTo(flags, keyshardProto().KeyService)).target('Sign', () => request);
    }
    case 'encrypt-batch': {
      const item = { key: key(), plaintext: payload, context: {} };
      const request = { items: Array.from({ length: items }, () => item) };
      return (await channelsTo(flags, keyshardProto().KeyService)).target('EncryptBatch', () => request, batchCheck(items));
    }
    case 'create-key': {
      const prefix = required(flags, 'name-prefix');
      const period = Number(flags['rotation-period'] ?? 0);
      const rotation = period > 0 ? { period_seconds: period } : undefined;
      return (await channelsTo(flags, keyshardProto().KeyService)).target('CreateKey', (seq) => ({ name: `${prefix}-${seq}`, rotation }));
    }
    case 'audit':
      return auditTarget(flags);
    case 'aes-gcm-local':
      return localAesGcm(items, payload);
    case 'etcd-create':
    case 'etcd-rotate':
      return etcdTarget(name, flags);
    default:
      throw new Error(`unknown --target ${name}`);
  }
}
