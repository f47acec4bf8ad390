// Active health checks: each target of a pool with `healthCheck:` is probed on an interval with a
// bounded timeout, one probe at a time per target; state flips after N consecutive results. A
// target is not healthy until its first probe passed (it starts unknown, and that first result
// decides at once — Envoy's startup rule; nginx's `health_check mandatory`): a proxy must not send
// traffic to an upstream it never saw answer, nor report it healthy.
import http from 'node:http';
import https from 'node:https';
import type { HealthCheckConfig } from '../config/index.js';
import type { UpstreamPool, UpstreamTarget } from './pool.js';

/** Called when a target changes state (and once at start with its initial state). */
export type HealthObserver = (pool: string, target: UpstreamTarget) => void;

/** Sends one GET; resolves true on a 2xx/3xx answer within the timeout. Never rejects. */
export function probe(url: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    const req = get(url, { agent: false, timeout: timeoutMs, headers: { 'user-agent': 'hsmproxy-health-check' } }, (res) => {
      res.resume();
      resolve(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 400);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/** Probes every target of one pool until stopped. */
export class HealthChecker {
  private timer: NodeJS.Timeout | undefined;
  private readonly running = new Set<UpstreamTarget>();
  private readonly streak = new Map<UpstreamTarget, { ok: number; bad: number }>();

  constructor(
    private readonly pool: UpstreamPool, private readonly check: HealthCheckConfig,
    private readonly observer: HealthObserver,
  ) {}

  /** Starts probing now and then every intervalMs; resolves when the first round has answered (within timeoutMs). */
  start(): Promise<void> {
    for (const t of this.pool.targets) this.observer(this.pool.config.name, t);
    this.timer = setInterval(() => void this.tick(), this.check.intervalMs);
    this.timer.unref();
    return this.tick();
  }

  /** Stops probing; probes already sent finish on their own timeout. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round of probes (exposed so a caller can force a check). */
  async tick(): Promise<void> {
    await Promise.all(this.pool.targets.map((t) => this.probeTarget(t)));
  }

  private async probeTarget(t: UpstreamTarget): Promise<void> {
    if (this.running.has(t)) return;
    this.running.add(t);
    try {
      const ok = await probe(t.url + this.check.path, this.check.timeoutMs);
      const s = this.streak.get(t) ?? { ok: 0, bad: 0 };
      if (ok) { s.ok++; s.bad = 0; } else { s.bad++; s.ok = 0; }
      this.streak.set(t, s);
      const first = !t.checked;
      t.checked = true;
      const next = first ? ok : t.healthy ? s.bad < this.check.unhealthyAfter : s.ok >= this.check.healthyAfter;
      if (next !== t.healthy && this.timer !== undefined) {
        t.healthy = next;
        this.observer(this.pool.config.name, t);
      }
    } finally {
      this.running.delete(t);
    }
  }
}
