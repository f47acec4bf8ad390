// The scaling service: evaluates the advisor on the monitor's figures every interval, publishes
// the result as gauges (recommended HSMs, HSMs, per-HSM utilisation, windowed p99s), and builds
// the JSON document GET /scaling and `cluster advise` show.
import { ScalingAdvisor, type AdvisorConfig, type Recommendation, type ScalingStats } from './advisor.js';
import type { HsmproxyMetrics } from './definitions.js';
import type { ScalingMonitor, WindowFigures } from './scaling-monitor.js';

/** The /scaling document. */
export interface ScalingReport {
  recommendation: Recommendation;
  stats: ScalingStats;
  /** Fixed windows, whatever the advisor's own: what dashboards compare with. */
  windows: { '1m': WindowFigures; '5m': WindowFigures };
  config: AdvisorConfig;
  /** Whether the cluster follows the advice by itself (hsm.autoscale). */
  autoscale: boolean;
}

/** Options of the service. */
export interface ScalingServiceOptions {
  monitor: ScalingMonitor;
  config: AdvisorConfig;
  metrics?: HsmproxyMetrics;
  /** Evaluation period (default 1,000 ms). */
  intervalMs?: number;
  autoscale?: boolean;
  onRecommendation?: (r: Recommendation) => void;
}

/** Runs the advisor periodically and publishes its advice. */
export class ScalingService {
  readonly advisor: ScalingAdvisor;
  private timer?: NodeJS.Timeout;
  private lastStats?: ScalingStats;
  private readonly utilisationLabels = new Set<string>();

  constructor(private readonly opts: ScalingServiceOptions) {
    this.advisor = new ScalingAdvisor(opts.config);
  }

  /** Starts periodic evaluation (unref'd: it never keeps the process up). */
  start(): void {
    if (this.timer) return;
    this.evaluate();
    this.timer = setInterval(() => this.evaluate(), this.opts.intervalMs ?? 1000);
    this.timer.unref();
  }

  /** Stops evaluating; the monitor is the caller's to close. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Evaluates now, publishes the gauges, and returns the recommendation. */
  evaluate(): Recommendation {
    const stats = this.opts.monitor.stats();
    this.lastStats = stats;
    const r = this.advisor.evaluate(stats);
    this.publish(r, stats);
    this.opts.onRecommendation?.(r);
    return r;
  }

  /** The latest recommendation (evaluating first if none yet). */
  latest(): Recommendation {
    return this.advisor.latest ?? this.evaluate();
  }

  /**
   * The /scaling document, evaluated now: the recommendation, its stats and the fixed windows are
   * read at one instant. (Reusing the last periodic evaluation made them disagree: a sign answered
   * since then was in `windows` but not in `stats` nor in the reason.)
   */
  report(): ScalingReport {
    const recommendation = this.evaluate();
    const stats = this.lastStats!;
    return {
      recommendation, stats,
      windows: { '1m': this.opts.monitor.figures(60_000, stats.atMs), '5m': this.opts.monitor.figures(300_000, stats.atMs) },
      config: this.opts.config, autoscale: this.opts.autoscale ?? false,
    };
  }

  private publish(r: Recommendation, stats: ScalingStats): void {
    const m = this.opts.metrics;
    if (!m) return;
    m.clusterRecommendedHsms.set(r.targetHsms);
    m.clusterHsms.set(r.currentHsms);
    const seen = new Set<string>();
    for (const h of stats.hsms) {
      seen.add(h.hsm);
      m.clusterUtilisation.set({ hsm: h.hsm }, h.utilisation ?? 0);
    }
    // An HSM that left the cluster must not keep its last value on the dashboard.
    for (const id of this.utilisationLabels) if (!seen.has(id)) m.clusterUtilisation.remove({ hsm: id });
    this.utilisationLabels.clear();
    for (const id of seen) this.utilisationLabels.add(id);
    for (const [label, span] of [['1m', 60_000], ['5m', 300_000]] as const) {
      const f = this.opts.monitor.figures(span);
      if (f.signP99Ms !== undefined) m.clusterSignP99.set({ window: label }, f.signP99Ms / 1000);
      if (f.queueP99Ms !== undefined) m.clusterQueueWaitP99.set({ window: label }, f.queueP99Ms / 1000);
    }
  }
}
