// metrics/: the prom-client registry, every metric's definition (definitions.ts), subscribers that
// turn other modules' diagnostics_channel events into metrics, and worker aggregation.
// May import prom-client only; the event contract is duplicated in channels.ts, never imported.
import { collectDefaultMetrics, Registry } from 'prom-client';

export * from './aggregate.js';
export * from './channels.js';
export * from './definitions.js';
export * from './subscribe.js';

/** A fresh registry (no process-wide singleton, so tests and workers do not share state). */
export function createRegistry(opts: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  // Node process metrics (CPU, heap, event-loop lag) under our prefix, for the running proxy.
  if (opts.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'hsmproxy_' });
  return registry;
}
