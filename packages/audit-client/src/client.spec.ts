/**
 * AuditClient batching and failure handling against an in-process fake sink (real mTLS, a
 * real Merkle tree and signed checkpoints: test-sink.ts), and its checks of each
 * acknowledgement: a checkpoint signed by the configured sink key, consistent with the last
 * one verified. Before those checks, every lying acknowledgement below was counted as stored.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { KeyshardError } from '@keyshard/errors';
import { AuditClient } from './client.ts';
import { makeTestPki, type TestPki } from '@keyshard/pki/testing';
import { FakeAuditSink } from './test-sink.ts';

describe('AuditClient', () => {
  let dir: string;
  let pki: TestPki;
  let sink: FakeAuditSink;
  let address: string;
  const clients: AuditClient[] = [];
  const alerts: string[] = [];
  const client = (timeoutMs = 2000, keys = sink.keys) => {
    const c = new AuditClient({ address, tls: pki.material('coordinator'), source: 'coordinator', timeoutMs, checkpointKeys: keys, onAlert: (a) => alerts.push(a.reason) });
    clients.push(c);
    return c;
  };

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'audit-client-'));
    pki = await makeTestPki(dir, 'audit-sink', ['coordinator']);
    sink = new FakeAuditSink();
    address = await sink.listen(pki.material('audit-sink'));
  });

  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    sink.close();
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
    sink.lie = 'silent';
    const t0 = Date.now();
    await assert.rejects(c.record({ principal: 'p', operation: 'op', result: 'ok' }), (e: unknown) => e instanceof KeyshardError && e.code === 'UNAVAILABLE' && /audit sink unavailable/.test(e.message));
    assert.ok(Date.now() - t0 < 2500);
    sink.lie = 'none';
    await c.record({ principal: 'p', operation: 'op', result: 'ok' });
    assert.equal(sink.streams, streamsBefore + 1);
  });

  it('rejects every pending event when the stream fails (sendingTo: acknowledged again only after the next acknowledgement)', async () => {
    const c = client();
    assert.deepEqual(c.sendingTo, { address, serverId: 'audit-sink', acknowledged: false }, 'nothing sent yet');
    await c.record({ principal: 'p', operation: 'op', result: 'ok' });
    assert.equal(c.sendingTo.acknowledged, true);
    sink.lie = 'fail';
    const all = await Promise.allSettled(Array.from({ length: 20 }, () => c.record({ principal: 'p', operation: 'op', result: 'ok' })));
    sink.lie = 'none';
    assert.ok(all.every((r) => r.status === 'rejected' && (r.reason as KeyshardError).code === 'UNAVAILABLE'));
    assert.equal(c.sendingTo.acknowledged, false, 'the stream failed');
    await c.record({ principal: 'p', operation: 'op', result: 'ok' });
    assert.equal(c.sendingTo.acknowledged, true);
  });

  it('keeps a quota refusal as RESOURCE_EXHAUSTED with its reason (callers fail closed, the spool retries later); the next batch goes through', async () => {
    const c = client();
    sink.lie = 'quota';
    const all = await Promise.allSettled(Array.from({ length: 5 }, () => c.record({ principal: 'p', operation: 'op', result: 'ok' })));
    sink.lie = 'none';
    assert.deepEqual(new Set(all.map((r) => r.status === 'rejected' && `${(r.reason as KeyshardError).code}/${(r.reason as KeyshardError).reason}`)), new Set(['RESOURCE_EXHAUSTED/AUDIT_QUOTA']));
    await c.record({ principal: 'p', operation: 'op', result: 'ok' });
  });

  it('refuses events without an operation and after close', async () => {
    const c = client();
    await assert.rejects(c.record({ principal: 'p', operation: '', result: 'ok' }), /needs an operation/);
    await assert.rejects(c.record({ principal: 'p', operation: 'op', result: 'ok', details: { big: 'x'.repeat(5000) } }), /details are invalid/);
    await c.close();
    await assert.rejects(c.record({ principal: 'p', operation: 'op', result: 'ok' }), /closed/);
  });

  it('verifies each acknowledgement and sends the size it last verified, so the sink proves consistency', async () => {
    const c = client();
    await c.record({ principal: 'p', operation: 'op', result: 'ok' });
    const first = c.lastCheckpoint!;
    assert.equal(first.tree_size, sink.tree.size);
    await c.record({ principal: 'p', operation: 'op', result: 'ok' });
    assert.equal(sink.knownSizes.at(-1), first.tree_size, 'the batch carried the last verified size');
    assert.equal(c.lastCheckpoint!.tree_size, first.tree_size + 1);
    assert.equal(c.distrusted, undefined);
  });

  for (const [lie, why] of [
    ['bad-signature', /signature does not verify/],
    ['other-key', /no public key with id/],
    ['rollback', /rolled back/],
    ['fork', /not an extension|forked/],
    ['no-proof', /consistency proof does not verify/],
  ] as const) {
    it(`refuses an acknowledgement with ${lie}: the event is not counted as stored, later ones are refused, one alert`, async () => {
      const c = client();
      await c.record({ principal: 'p', operation: 'op', result: 'ok' }); // anchors a verified checkpoint
      const before = alerts.length;
      sink.lie = lie;
      try {
        await assert.rejects(c.record({ principal: 'p', operation: 'keys.Encrypt', result: 'ok' }), (e: unknown) => e instanceof KeyshardError && e.code === 'UNAVAILABLE' && /audit sink not trusted/.test(e.message) && why.test(e.message));
        assert.equal(alerts.length, before + 1, 'one alert');
        assert.match(alerts.at(-1)!, why);
        assert.match(c.distrusted!, why);
        sink.lie = 'none';
        // An honest acknowledgement later does not restore trust: the sink lied once.
        const n = sink.batches.length;
        await assert.rejects(c.record({ principal: 'p', operation: 'keys.Encrypt', result: 'ok' }), /not trusted/);
        await assert.rejects(c.recordAll([{ id: 'x', time: new Date().toISOString(), source: 'coordinator', principal: 'p', operation: 'op', key_id: '', ceremony_id: '', result: 'ok', code: '', request_id: '', details: {} }]), /not trusted/);
        assert.equal(sink.batches.length, n, 'nothing more is even sent');
        assert.equal(alerts.length, before + 1, 'still one alert');
      } finally {
        sink.lie = 'none';
      }
    });
  }

  it('refuses the first acknowledgement too when its signature is not the configured key', async () => {
    const c = client(2000, new FakeAuditSink().keys);
    await assert.rejects(c.record({ principal: 'p', operation: 'op', result: 'ok' }), /not trusted: checkpoint of size \d+: no public key with id/);
  });

  it('needs at least one checkpoint key', () => {
    assert.throws(() => client(2000, new Map()), /at least one sink checkpoint public key/);
  });
});
