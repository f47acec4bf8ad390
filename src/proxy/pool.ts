// Upstream pools: the targets of one `upstreams:` entry, a keep-alive agent per target, and the
// balancing choice (round-robin or least in-flight requests) among the targets currently healthy.
import http from 'node:http';
import https from 'node:https';
import type { UpstreamConfig } from '../config/index.js';

/** One upstream server of a pool. */
export class UpstreamTarget {
  /** Requests sent to this target and not finished yet (for least-connections). */
  inFlight = 0;
  /** With a health check, unknown (not healthy) until the first probe: a pool never reports a target it has not seen answer. */
  healthy: boolean;
  /** Whether a health check has probed it yet (its first result decides at once, as Envoy does at startup). */
  checked = false;
  readonly agent: http.Agent;

  constructor(readonly url: string, idleMs: number, checked: boolean) {
    this.healthy = !checked;
    const opts: http.AgentOptions = { keepAlive: true, timeout: idleMs, scheduling: 'lifo' };
    this.agent = url.startsWith('https:') ? new https.Agent(opts) : new http.Agent(opts);
  }
}

/** A balanced set of targets. */
export class UpstreamPool {
  readonly targets: UpstreamTarget[];
  private next = 0;

  constructor(readonly config: UpstreamConfig) {
    this.targets = config.targets.map((url) => new UpstreamTarget(url, config.timeouts.idleMs, config.healthCheck !== undefined));
  }

  /** Picks a healthy target not in `exclude`, or undefined when there is none (the caller answers 503). */
  pick(exclude?: ReadonlySet<UpstreamTarget>): UpstreamTarget | undefined {
    const healthy = this.targets.filter((t) => t.healthy && !exclude?.has(t));
    if (healthy.length === 0) return undefined;
    if (this.config.balance === 'least-connections') {
      // Ties rotate so equal targets share load instead of the first one taking everything.
      const start = this.next++ % healthy.length;
      let best = healthy[start]!;
      for (let i = 1; i < healthy.length; i++) {
        const t = healthy[(start + i) % healthy.length]!;
        if (t.inFlight < best.inFlight) best = t;
      }
      return best;
    }
    return healthy[this.next++ % healthy.length];
  }

  /** Closes idle keep-alive sockets; in-flight requests finish on theirs. */
  destroy(): void {
    for (const t of this.targets) t.agent.destroy();
  }
}
