/** AuditClient batching and failure handling against an in-process fake sink (real mTLS). */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { KeyshardError } from '@keyshard/errors';
import { keyshardProto, serverCredentials } from '@keyshard/rpc';
import { AuditClient, type AuditEvent } from './index.ts';
import { makeTestPki, type TestPki } from './test-pki.ts';

type Mode = 'ack' | 'silent' | 'fail';

/** Fake Append: acks each batch after `delayMs`, recording batch sizes and concurrency. */
class FakeSink {
  mode: Mode = 'ack';
  delayMs = 5;
  batches: number[] = [];
  events: AuditEvent[] = [];
  streams = 0;
  inFlight = 0;
  maxInFlight = 0;
  readonly server = new grpc.Server();

  constructor() {
    this.server.addService(keyshardProto().AuditService.service, {
      Append: (call: grpc.ServerDuplexStream<{ events: AuditEvent[]; batch: string }, unknown>) => {
        this.streams += 1;
        call.on('data', (req) => {
          if (this.mode === 'fail') {
            call.emit('error', { code: grpc.status.INTERNAL, details: 'disk on fire' });
            return;
          }
          if (this.mode === 'silent') return;
          this.inFlight += 1;
          this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
          this.batches.push(req.events.length);
          this.events.push(...req.events);
          setTimeout(() => {
            this.inFlight -= 1;
            call.write({ batch: req.batch, first_index: '0', count: String(req.events.length), head_hash: '' });
          }, this.delayMs);
        });
        call.on('end', () => call.end());
      },
    });
  }
}

describe('AuditClient', () => {
  let dir: string;
  let pki: TestPki;
  let sink: FakeSink;
  let address: string;
  const clients: AuditClient[] = [];
  const client = (timeoutMs = 2000) => {
    const c = new AuditClient({ address, tls: pki.material('coordinator'), source: 'coordinator', timeoutMs });
    clients.push(c);
    return c;
  };

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'audit-client-'));
    pki = await makeTestPki(dir, 'audit-sink', ['coordinator']);
    sink = new FakeSink();
    const port = await new Promise<number>((res, rej) =>
      sink.server.bindAsync('127.0.0.1:0', serverCredentials(pki.material('audit-sink')), (e, p) => (e ? rej(e) : res(p))),
    );
    address = `127.0.0.1:${port}`;
  });

  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    sink.server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it('batches under load with at most one batch in flight, and fills id/time/source', async () => {
    const c = client();
    await c.record({ principal: 'svc-a', operation: 'keys.Encrypt', result: 'ok' }); // warm the stream
    sink.batches = [];
    sink.events = [];
    await Promise.all(Array.from({ length: 1000 }, (_, i) => c.record({ principal: 'svc-a', operation: 'keys.Encrypt', result: 'ok', key_id: `k${i}` })));
    assert.equal(sink.maxInFlight, 1);
    assert.equal(sink.batches.reduce((a, b) => a + b, 0), 1000);
    assert.ok(sink.batches.length <= 5, `expected few batches, got ${sink.batches.length}`);
    const e = sink.events[0]!;
    assert.match(e.id, /^[0-9a-f-]{36}$/);
    assert.ok(!Number.isNaN(Date.parse(e.time)));
    assert.equal(e.source, 'coordinator');
    assert.equal(new Set(sink.events.map((x) => x.id)).size, 1000);
  });

  it('keeps a caller-supplied id (idempotent retry)', async () => {
    sink.events = [];
    await client().record({ id: 'retry-1', principal: 'p', operation: 'ceremony.unseal', result: 'ok' });
    assert.equal(sink.events[0]?.id, 'retry-1');
  });

  it('rejects with UNAVAILABLE when the sink does not acknowledge in time, then reconnects', async () => {
    // 1 s: the reconnection after the silence (a new stream, under a loaded CI machine) must fit in it too.
    const c = client(1000);
    await c.record({ principal: 'p', operation: 'op', result: 'ok' });
    const streamsBefore = sink.streams;
    sink.mode = 'silent';
    const t0 = Date.now();
    await assert.rejects(c.record({ principal: 'p', operation: 'op', result: 'ok' }), (e: unknown) => e instanceof KeyshardError && e.code === 'UNAVAILABLE' && /audit sink unavailable/.test(e.message));
    assert.ok(Date.now() - t0 < 2500);
    sink.mode = 'ack';
    await c.record({ principal: 'p', operation: 'op', result: 'ok' });
    assert.equal(sink.streams, streamsBefore + 1);
  });

  it('rejects every pending event when the stream fails', async () => {
    const c = client();
    await c.record({ principal: 'p', operation: 'op', result: 'ok' });
    sink.mode = 'fail';
    const all = await Promise.allSettled(Array.from({ length: 20 }, () => c.record({ principal: 'p', operation: 'op', result: 'ok' })));
    sink.mode = 'ack';
    assert.ok(all.every((r) => r.status === 'rejected' && (r.reason as KeyshardError).code === 'UNAVAILABLE'));
    await c.record({ principal: 'p', operation: 'op', result: 'ok' });
  });

  it('refuses events without an operation and after close', async () => {
    const c = client();
    await assert.rejects(c.record({ principal: 'p', operation: '', result: 'ok' }), /needs an operation/);
    await assert.rejects(c.record({ principal: 'p', operation: 'op', result: 'ok', details: { big: 'x'.repeat(5000) } }), /details are invalid/);
    await c.close();
    await assert.rejects(c.record({ principal: 'p', operation: 'op', result: 'ok' }), /closed/);
  });
});
