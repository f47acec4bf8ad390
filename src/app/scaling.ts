// Wiring of the scaling advisor for a running proxy on the simulated cluster: the monitor reads
// the diagnostics channels, the service evaluates the advisor and sets the gauges, and — when
// `hsm.autoscale` asks for it — the Autoscaler (hsm/cluster) carries the advice out. The two
// sides meet only here: hsm/ does not import metrics/, and metrics/ knows no cluster.
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { AUTOSCALE_DEFAULTS, type AutoscaleConfig } from '../config/index.js';
import type { ClusterClient } from '../hsm/client/cluster-client.js';
import { Autoscaler, type AutoscaleEvent } from '../hsm/cluster/autoscale.js';
import type { Supervisor } from '../hsm/cluster/supervisor.js';
import { ADVISOR_DEFAULTS, ScalingMonitor, ScalingService, defineMetrics, type AdvisorConfig, type HsmproxyMetrics } from '../metrics/index.js';
import type { HsmSide } from './hsm-side.js';

/** The advisor's config from `hsm.autoscale` (defaults when the section is absent). */
export function advisorConfig(a: AutoscaleConfig = AUTOSCALE_DEFAULTS): AdvisorConfig {
  return {
    ...ADVISOR_DEFAULTS,
    min: a.min, max: a.max, sloP99Ms: a.sloP99Ms, cooldownMs: a.cooldownMs, sustainMs: a.sustainMs,
    removeSustainMs: a.removeAfterMs,
  };
}

/** What `startScaling` runs. */
export interface ScalingRuntime {
  service: ScalingService;
  monitor: ScalingMonitor;
  autoscaler?: Autoscaler;
  stop(): Promise<void>;
}

/** Options of `startScaling`. */
export interface StartScalingOptions {
  client: ClusterClient;
  /** The cluster directory (needed to autoscale). */
  dir: string;
  /** The local supervisor (embedded mode). */
  supervisor?: Supervisor;
  autoscale?: AutoscaleConfig;
  metrics?: HsmproxyMetrics;
  log?: Logger;
  scryptCost?: number;
  /** Join and drain bounds for the autoscaler (tests shorten them). */
  joinTimeoutMs?: number;
  drainTimeoutMs?: number;
  /** Called after each autoscale action (besides the log line and the metric). */
  onAutoscale?: (e: AutoscaleEvent) => void;
}

/** Starts the advisor (always) and the autoscaler (when `autoscale.enabled`). */
export function startScaling(opts: StartScalingOptions): ScalingRuntime {
  const a = opts.autoscale ?? AUTOSCALE_DEFAULTS;
  const members = () => opts.client.stats().map((s) => ({ hsm: s.hsm, inRotation: s.inRotation }));
  const monitor = new ScalingMonitor({ windowMs: a.windowMs, members });
  let lastAdvice = 'hold';
  const service = new ScalingService({
    monitor, config: advisorConfig(a), intervalMs: a.intervalMs, autoscale: a.enabled,
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
    onRecommendation: (r) => {
      // A change of advice is worth a log line; the same advice every second is not.
      const advice = r.action === 'hold' ? 'hold' : `${r.action}:${r.targetHsms}`;
      if (advice !== lastAdvice && r.action !== 'hold') opts.log?.warn({ recommendation: r }, `scaling advice: ${r.reason}`);
      lastAdvice = advice;
    },
  });
  service.start();
  let autoscaler: Autoscaler | undefined;
  if (a.enabled) {
    autoscaler = new Autoscaler({
      dir: opts.dir, client: opts.client, min: a.min, intervalMs: a.intervalMs, from: a.from,
      // The service evaluates on its own timer; the autoscaler acts on a fresh evaluation.
      decide: () => service.evaluate(),
      ...(opts.supervisor ? { supervisor: opts.supervisor } : {}),
      ...(opts.scryptCost ? { scryptCost: opts.scryptCost } : {}),
      ...(opts.joinTimeoutMs ? { joinTimeoutMs: opts.joinTimeoutMs } : {}),
      ...(opts.drainTimeoutMs ? { drainTimeoutMs: opts.drainTimeoutMs } : {}),
      onEvent: (e: AutoscaleEvent) => {
        opts.onAutoscale?.(e);
        if (e.result === 'ok') opts.log?.info({ autoscale: e }, `autoscale: ${e.action === 'add' ? 'added' : 'removed'} ${e.hsm} in ${e.durationMs} ms (${e.hsms} HSMs now): ${e.reason}`);
        else opts.log?.error({ autoscale: e }, `autoscale: could not ${e.action} ${e.hsm || 'an HSM'}: ${e.error ?? 'unknown error'}`);
      },
    });
    autoscaler.start();
  }
  return {
    service, monitor, ...(autoscaler ? { autoscaler } : {}),
    async stop() {
      await autoscaler?.stop();
      service.stop();
      monitor.close();
    },
  };
}

/**
 * The scaling advisor of a proxy on the simulated cluster, its gauges in `registry` (and the
 * autoscaler with hsm.autoscale); none on PKCS#11, whose tokens it cannot count or add to.
 */
export function scalingFor(
  hsm: HsmSide, autoscale: AutoscaleConfig | undefined, registry: Registry, log: Logger,
): ScalingRuntime | undefined {
  if (!hsm.cluster || !hsm.dir) return undefined;
  return startScaling({
    client: hsm.cluster, dir: hsm.dir, ...(hsm.supervisor ? { supervisor: hsm.supervisor } : {}), autoscale,
    metrics: defineMetrics(registry), log,
  });
}
