/**
 * A custodian node's Prometheus metrics (served by @keyshard/metrics when `metrics.listen` is
 * set): requests and latencies by method, fed by `unaryService`'s onReply, and what the node
 * holds, read at each scrape. No label carries a ceremony, cluster or principal.
 */
import { Gauge, createCallMetrics, createRegistry, type CallMetrics, type Registry } from '@keyshard/metrics';

export interface CustodianState {
  /** Clusters this node's token holds a share for. */
  shareClusters(): number;
  /** Ceremonies waiting for this node's operator. */
  pendingCeremonies(): number;
}

export function createCustodianMetrics(state: CustodianState): { registry: Registry; calls: CallMetrics } {
  const registry = createRegistry();
  const registers = [registry];
  new Gauge({
    name: 'keyshard_custodian_share_clusters',
    help: 'Clusters whose share this custodian token holds',
    registers,
    collect() {
      this.set(state.shareClusters());
    },
  });
  new Gauge({
    name: 'keyshard_custodian_pending_ceremonies',
    help: 'Ceremonies waiting for this custodian operator to approve or deny',
    registers,
    collect() {
      this.set(state.pendingCeremonies());
    },
  });
  return { registry, calls: createCallMetrics(registry) };
}
