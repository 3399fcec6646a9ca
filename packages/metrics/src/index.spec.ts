import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '@keyshard/config';
import { Counter, createRegistry, metricsConfig, serveMetrics } from './index.ts';

describe('metrics endpoint', () => {
  it('serves the registry at GET /metrics on the port actually bound, 404/405 otherwise, and closes', async () => {
    const registry = createRegistry({ processMetrics: false });
    const c = new Counter({ name: 'keyshard_test_things_total', help: 'things', labelNames: ['kind'], registers: [registry] });
    c.inc({ kind: 'a' }, 3);
    const server = await serveMetrics(registry, '127.0.0.1:0');
    try {
      assert.notEqual(server.port, 0);
      assert.equal(server.address, `127.0.0.1:${server.port}`);
      const res = await fetch(`http://${server.address}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
      assert.match(await res.text(), /^keyshard_test_things_total\{kind="a"\} 3$/m);
      assert.equal((await fetch(`http://${server.address}/`)).status, 404);
      assert.equal((await fetch(`http://${server.address}/metrics`, { method: 'POST' })).status, 405);
    } finally {
      await server.close();
    }
    await assert.rejects(fetch(`http://${server.address}/metrics`));
  });

  it('includes process metrics by default', async () => {
    const server = await serveMetrics(createRegistry(), '127.0.0.1:0');
    try {
      assert.match(await (await fetch(`http://${server.address}/metrics`)).text(), /^process_cpu_user_seconds_total /m);
    } finally {
      await server.close();
    }
  });

  it('accepts loopback addresses only', () => {
    assert.deepEqual(parseConfig(metricsConfig, { listen: '127.0.0.1:9464' }), { listen: '127.0.0.1:9464' });
    assert.deepEqual(parseConfig(metricsConfig, { listen: 'localhost:0' }), { listen: 'localhost:0' });
    assert.throws(() => parseConfig(metricsConfig, { listen: '0.0.0.0:9464' }), /listen: the metrics endpoint has no TLS/);
    assert.throws(() => parseConfig(metricsConfig, { listen: '127.0.0.1:70000' }), /port must be at most 65535/);
    assert.throws(() => parseConfig(metricsConfig, { listen: '127.0.0.1:1', extra: 1 }), /Unrecognized key/);
  });
});
