/**
 * Prometheus metrics for keyshard services (prom-client): one registry per process and a
 * tiny HTTP endpoint serving it at GET /metrics, in the Prometheus text exposition format.
 *
 * The endpoint is plain HTTP without client certificates, the one exception to "mutual TLS on
 * every connection", so it binds to loopback only (a local agent or TLS proxy scrapes it) and
 * is off unless `metrics.listen` is configured. Metrics carry counts and latencies, never a
 * secret; label values come from small fixed sets (rule names, methods), never from callers.
 */
import http from 'node:http';
import { z } from '@keyshard/config';
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';

export { Counter, Gauge, Histogram, Registry } from 'prom-client';
export { createCallMetrics, type CallMetrics } from './call-metrics.ts';

const LOOPBACK_HOST = /^(?:localhost|127(?:\.\d{1,3}){3})$/;

/** 127.x.x.x:port or localhost:port; port 0 picks a free port (the bound one is reported). */
export const loopbackAddress = z
  .string()
  .regex(/^[\w.-]+:\d{1,5}$/, 'expected host:port')
  .refine((a) => LOOPBACK_HOST.test(a.slice(0, a.lastIndexOf(':'))), 'the metrics endpoint has no TLS: bind it to 127.0.0.1 or localhost')
  .refine((a) => Number(a.slice(a.lastIndexOf(':') + 1)) <= 65535, 'port must be at most 65535');

/** The `metrics` section of a service's config; absent means no endpoint. */
export const metricsConfig = z.strictObject({
  /** Where GET /metrics is served (loopback only). */
  listen: loopbackAddress,
});

export type MetricsConfig = z.infer<typeof metricsConfig>;

/** A registry with Node's process metrics (CPU, memory, event-loop lag, GC) unless turned off. */
export function createRegistry(opts: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  return registry;
}

export interface MetricsServer {
  /** host:port actually bound. */
  address: string;
  port: number;
  close(): Promise<void>;
}

const SCRAPE_TIMEOUT_MS = 10_000;

/** Serves `registry` at GET /metrics on `listen` (loopback host:port; port 0 = any free port). */
export async function serveMetrics(registry: Registry, listen: string): Promise<MetricsServer> {
  const host = listen.slice(0, listen.lastIndexOf(':'));
  const server = http.createServer((req, res) => {
    const pathname = (req.url ?? '').split('?', 1)[0];
    if (pathname !== '/metrics') return void res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : body),
      // A failing collector's message is not echoed: the scraper only needs to know it failed.
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n'),
    );
  });
  server.requestTimeout = SCRAPE_TIMEOUT_MS;
  server.headersTimeout = SCRAPE_TIMEOUT_MS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(listen.slice(listen.lastIndexOf(':') + 1)), host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as { port: number }).port;
  let closing: Promise<void> | undefined;
  return {
    address: `${host}:${port}`,
    port,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
}

/**
 * `keyshard_audit_sink_distrusted`: 1 once an acknowledgement of the audit sink failed checkpoint
 * verification (@keyshard/audit-log checkpoint-trust.ts), on every component that audits.
 */
export function auditSinkDistrustedGauge(registry: Registry, distrusted: () => boolean): Gauge {
  return new Gauge({
    name: 'keyshard_audit_sink_distrusted',
    help: '1 once an acknowledgement of the audit sink failed checkpoint verification (nothing is acknowledged until restart)',
    registers: [registry],
    collect() {
      this.set(distrusted() ? 1 : 0);
    },
  });
}
