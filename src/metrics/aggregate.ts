// Metrics across node:cluster workers: each worker keeps its own registry; the primary's admin
// server asks every worker over IPC and sums them (prom-client's AggregatorRegistry).
import { AggregatorRegistry, type Registry } from 'prom-client';

/** What the admin server needs to answer /metrics: a content type and the exposition text. */
export interface MetricsSource { contentType: string; metrics(): Promise<string> }

/** A source reading one in-process registry (workers: 1). */
export function registrySource(registry: Registry): MetricsSource {
  return { contentType: registry.contentType, metrics: () => registry.metrics() };
}

/**
 * A source for the cluster primary: collects every worker's registry over IPC and aggregates
 * (counters and histograms summed, gauges summed per label set). Workers must call
 * `AggregatorRegistry.setRegistries([registry])` so the primary's requests reach their registry.
 */
export function clusterSource(): MetricsSource {
  const agg = new AggregatorRegistry();
  return { contentType: agg.contentType, metrics: async () => (await agg.clusterMetrics()) };
}

/** Called in a worker so the primary's aggregation reads this worker's registry. */
export function exposeToPrimary(registry: Registry): void {
  AggregatorRegistry.setRegistries([registry]);
  // prom-client installs the worker's IPC answer in the AggregatorRegistry constructor only.
  new AggregatorRegistry();
}
