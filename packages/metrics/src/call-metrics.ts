/**
 * Request metrics of a gRPC service, fed from `@keyshard/rpc`'s `onReply` (every reply, with
 * its final status): a counter by method and status code and a latency histogram by method.
 * Label values are method names of the proto and gRPC status names: small, fixed sets.
 */
import { Counter, Histogram, type Registry } from 'prom-client';

export interface CallMetrics {
  /** Counts one reply of `method` (e.g. keys.Encrypt) with status `code` (OK or a gRPC status name). */
  observe(method: string, code: string, durationMs: number): void;
}

/** Latency buckets in seconds: sub-millisecond crypto calls up to ceremonies that wait on custodians. */
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createCallMetrics(registry: Registry): CallMetrics {
  const registers = [registry];
  const requests = new Counter({
    name: 'keyshard_rpc_requests_total',
    help: 'gRPC calls answered, by method and status code',
    labelNames: ['method', 'code'] as const,
    registers,
  });
  const seconds = new Histogram({
    name: 'keyshard_rpc_request_duration_seconds',
    help: 'Time from a gRPC call arriving to its reply, by method',
    labelNames: ['method'] as const,
    buckets: BUCKETS,
    registers,
  });
  // Hot path: look each label set up once, not on every call.
  const counters = new Map<string, { inc(): void }>();
  const histograms = new Map<string, { observe(v: number): void }>();
  return {
    observe(method, code, durationMs) {
      const key = `${method} ${code}`;
      let counter = counters.get(key);
      if (!counter) counters.set(key, (counter = requests.labels(method, code)));
      counter.inc();
      let histogram = histograms.get(method);
      if (!histogram) histograms.set(method, (histogram = seconds.labels(method)));
      histogram.observe(durationMs / 1000);
    },
  };
}
