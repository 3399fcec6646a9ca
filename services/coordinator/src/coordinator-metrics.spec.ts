/** The coordinator's metrics: gauges read at scrape, ceremonies counted from their audit events, etcd failures. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { etcdCall } from '@keyshard/store';
import { createCoordinatorMetrics } from './coordinator-metrics.ts';

const value = (text: string, series: string) => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

describe('coordinator metrics', () => {
  it('reads the gauges at each scrape, counts ceremony outcomes as audited, and etcd failures', async () => {
    const state = { sealed: true, leading: false, pending: 3, inFlight: 0 };
    const m = createCoordinatorMetrics({ sealed: () => state.sealed, leading: () => state.leading, spoolPending: () => state.pending, keyCallsInFlight: () => state.inFlight });
    try {
      let text = await m.registry.metrics();
      assert.deepEqual(['keyshard_sealed', 'keyshard_leader', 'keyshard_audit_spool_pending_events'].map((s) => value(text, s)), [1, 0, 3]);
      state.sealed = false;
      state.leading = true;
      text = await m.registry.metrics();
      assert.deepEqual([value(text, 'keyshard_sealed'), value(text, 'keyshard_leader')], [0, 1]);

      const recorded: string[] = [];
      const audit = m.countingCeremonies({ record: async (e) => void recorded.push(e.operation) });
      for (const operation of ['ceremony.unseal.created', 'ceremony.unseal.share_accepted', 'ceremony.unseal.completed', 'ceremony.StartUnseal', 'ceremony.StartUnseal.requested', 'ceremony.destroy-key.cancelled', 'ceremony.bogus.completed'])
        await audit.record({ operation, principal: 'p', result: 'ok' });
      assert.equal(recorded.length, 7, 'every event is passed on');
      await assert.rejects(m.countingCeremonies({ record: () => Promise.reject(new Error('sink down')) }).record({ operation: 'ceremony.reshare.created', principal: 'p', result: 'ok' }));
      text = await m.registry.metrics();
      assert.equal(value(text, 'keyshard_ceremonies_total{operation="unseal",outcome="created"}'), 1);
      assert.equal(value(text, 'keyshard_ceremonies_total{operation="unseal",outcome="completed"}'), 1);
      assert.equal(value(text, 'keyshard_ceremonies_total{operation="destroy-key",outcome="cancelled"}'), 1);
      assert.doesNotMatch(text, /bogus|share_accepted|StartUnseal|reshare/, 'only lifecycle events of known operations that were recorded');

      await assert.rejects(etcdCall('get x', () => Promise.reject(new Error('connection refused'))), /state store unavailable/);
      assert.equal(value(await m.registry.metrics(), 'keyshard_etcd_errors_total'), 1);
    } finally {
      m.close();
    }
    await assert.rejects(etcdCall('get x', () => Promise.reject(new Error('no'))));
  });
});
