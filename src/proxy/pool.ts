// Upstream pools: the targets of one `upstreams:` entry, an undici Pool per target (keep-alive,
// at most maxConnections, one request per connection at a time), a bounded wait queue, and the
// balancing choice (round-robin or least in-flight requests) among the targets currently healthy.
import { Pool } from 'undici';
import type { UpstreamConfig } from '../config/index.js';

// Node's own HTTP/2 server advertises 100 concurrent streams by default (undici's default too).
const H2_STREAMS_PER_CONNECTION = 100;

/** One upstream server of a pool. */
export class UpstreamTarget {
  /** Requests sent to this target and not finished yet (for least-connections and the queue cap). */
  inFlight = 0;
  /** With a health check, unknown (not healthy) until the first probe: never report a target not yet seen answering. */
  healthy: boolean;
  /** Whether a health check has probed it yet (its first result decides at once, as Envoy does at startup). */
  checked = false;
  readonly pool: Pool;
  /** scheme://host:port, what undici dispatches to. */
  readonly origin: string;
  /** A path prefix of the target URL (`http://u:8080/app`), prepended to every request path. */
  readonly basePath: string;

  constructor(readonly url: string, private readonly config: UpstreamConfig, checked: boolean) {
    this.healthy = !checked;
    const u = new URL(url);
    this.origin = u.origin;
    this.basePath = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
    const h2 = config.protocol === 'h2' || config.protocol === 'h2c';
    this.pool = new Pool(this.origin, {
      connections: config.maxConnections,
      // HTTP/2 upstreams multiplex: undici keeps up to this many streams on one connection (it
      // still sends a request with a streamed body alone, which it could not retry otherwise).
      pipelining: h2 ? H2_STREAMS_PER_CONNECTION : 1,
      ...(h2 ? { allowH2: true, maxConcurrentStreams: H2_STREAMS_PER_CONNECTION } : {}),
      // Pool builds its connector from `connect` and does not pass Client's useH2c on; undici's
      // types lack the (supported) connector option.
      ...(config.protocol === 'h2c' ? { connect: { useH2c: true } as Pool.Options['connect'] } : {}),
      keepAliveTimeout: config.timeouts.idleMs,
      keepAliveMaxTimeout: config.timeouts.idleMs,
      connectTimeout: config.timeouts.connectMs,
      // Per-request timeouts are set on each dispatch (routes may override them).
      headersTimeout: config.timeouts.responseMs,
      bodyTimeout: config.timeouts.responseMs,
    });
  }

  /** Whether one more request would exceed connections + queue: the caller answers 503. */
  get full(): boolean {
    return this.inFlight >= this.config.maxConnections + this.config.maxQueue;
  }
}

/** A balanced set of targets. */
export class UpstreamPool {
  readonly targets: UpstreamTarget[];
  private next = 0;

  constructor(readonly config: UpstreamConfig) {
    this.targets = config.targets.map((url) => new UpstreamTarget(url, config, config.healthCheck !== undefined));
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

  /** Closes idle keep-alive connections now and the busy ones when their request ends. */
  destroy(): void {
    for (const t of this.targets) void t.pool.close().catch(() => undefined);
  }
}
