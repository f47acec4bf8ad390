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

/** The metric family a line of the text exposition belongs to (`# HELP x …`, `x{…} v`, `x v`). */
function familyOf(line: string): string {
  if (line.startsWith('# ')) return line.split(' ')[2] ?? '';
  return /^[^{ ]+/.exec(line)?.[0] ?? '';
}

/**
 * `source` (the workers' sum) with the families whose names start with `prefix` taken from the
 * primary's own registry instead: things only the primary computes (the scaling advisor's gauges),
 * which the workers define but never set.
 */
export function withPrimaryFamilies(source: MetricsSource, registry: Registry, prefix: string): MetricsSource {
  return {
    contentType: source.contentType,
    metrics: async () => {
      const [shared, own] = await Promise.all([source.metrics(), registry.metrics()]);
      const ours = (line: string) => familyOf(line).startsWith(prefix);
      const kept = shared.split('\n').filter((l) => l !== '' && !ours(l));
      const added = own.split('\n').filter((l) => l !== '' && ours(l));
      return [...kept, ...added].join('\n') + '\n';
    },
  };
}
