// metrics/: the prom-client registry, every metric's definition (definitions.ts), subscribers that
// turn other modules' diagnostics_channel events into metrics, worker aggregation, and the scaling
// advisor (advisor.ts core, scaling-monitor.ts windows, scaling.ts service, plan.ts capacity planning).
// May import prom-client only; the event contract is duplicated in channels.ts, never imported.
import { collectDefaultMetrics, Registry } from 'prom-client';

export * from './advisor.js';
export * from './aggregate.js';
export * from './channels.js';
export * from './definitions.js';
export * from './plan.js';
export * from './prometheus-query.js';
export * from './scaling.js';
export * from './scaling-monitor.js';
export * from './subscribe.js';

/** A fresh registry (no process-wide singleton, so tests and workers do not share state). */
export function createRegistry(opts: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  // Node process metrics (CPU, heap, event-loop lag) under our prefix, for the running proxy.
  if (opts.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'hsmproxy_' });
  return registry;
}
