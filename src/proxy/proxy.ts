// The Proxy: TLS listeners (from a factory) feeding one http.Server, the routing table, upstream
// pools and their health checks, the admin server; start, reload and graceful shutdown.
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import type { Registry } from 'prom-client';
import { DEFAULTS, type Config, type ListenerConfig } from '../config/index.js';
import { createRegistry, defineMetrics, registrySource, subscribeMetrics, type HsmproxyMetrics, type MetricsSource } from '../metrics/index.js';
import { AdminServer, type ReadinessCheck, type ReadinessReport, type ScalingSource } from './admin.js';
import { recordCertificateExpiry } from './cert-expiry.js';
import { cidrList } from './client-gate.js';
import { logDelegatedCredentials } from './delegated-credentials.js';
import { identityHeaderNames } from './client-identity.js';
import { ConnectionTracker } from './connections.js';
import { ProxyStateError, ReloadRefusedError } from './errors.js';
import { Forwarder, type RoutingTable } from './forward.js';
import { HealthChecker } from './health.js';
import { Http1Server, type Http1Policy } from './http1/server.js';
import { http2Policy, Http2Front } from './http2/index.js';
import type { TlsListener, TlsListenerFactory, TlsSocketLike } from './listener.js';
import { UpstreamPool } from './pool.js';
import { Router } from './router.js';

/** What a Proxy is built from; everything but config and the listener factory has a default. */
export interface ProxyOptions {
  config: Config;
  tlsListenerFactory: TlsListenerFactory;
  logger?: Logger;
  registry?: Registry;
  /** Extra readiness condition (certificates loaded, an HSM holding their keys up). */
  readiness?: ReadinessCheck;
  /** Where /metrics reads from (default: `registry`; a cluster primary aggregates workers). */
  metricsSource?: MetricsSource;
  /** Answers GET /scaling on the admin port (the scaling advisor's report), when given. */
  scaling?: ScalingSource;
  /** Start the admin server from config.admin (default true). */
  admin?: boolean;
  /** Turn tls/, hsm/ and engine/ diagnostics_channel events into metrics in `registry` (default true). */
  subscribeEvents?: boolean;
}

/** The result of a graceful shutdown. */
export interface ShutdownReport { drained: boolean; forcedConnections: number; durationMs: number }

interface Runtime extends RoutingTable { config: Config; checkers: HealthChecker[] }

/** A running hsmproxy HTTP layer. */
export class Proxy {
  private runtime: Runtime;
  private readonly listeners = new Map<string, { config: ListenerConfig; handle: TlsListener }>();
  private readonly http: Http1Server;
  private readonly h2: Http2Front;
  private readonly policy: Http1Policy;
  private readonly connections: ConnectionTracker;
  private readonly forwarder: Forwarder;
  private readonly logger: Logger;
  private readonly metrics: HsmproxyMetrics;
  private readonly registry: Registry;
  private admin: AdminServer | undefined;
  private state: 'new' | 'running' | 'draining' | 'stopped' = 'new';
  private unsubscribe: (() => void) | undefined;
  private unsubscribeLog: (() => void) | undefined;

  constructor(private readonly opts: ProxyOptions) {
    this.logger = opts.logger ?? pino({ level: opts.config.log.level });
    this.registry = opts.registry ?? createRegistry();
    this.metrics = defineMetrics(this.registry);
    this.runtime = this.buildRuntime(opts.config, undefined);
    this.connections = new ConnectionTracker((open, inFlight) => {
      this.metrics.httpConnections.set(open);
      this.metrics.httpRequestsInFlight.set(inFlight);
    });
    this.forwarder = new Forwarder(() => this.runtime, this.connections, this.logger, this.metrics);
    this.policy = {
      limits: { maxHeadBytes: 0, maxHeaders: 0 }, headersMs: 0, requestMs: 0, idleMs: 0, bodyIdleMs: 0, draining: false,
    };
    this.applyTimeouts(opts.config);
    this.http = new Http1Server(this.forwarder, this.policy);
    this.h2 = new Http2Front(this.forwarder, http2Policy(opts.config), (reason, socket) => {
      this.metrics.http2ConnectionsClosed.inc({ reason });
      this.logger.info({ reason, remote: socket.remoteAddress }, 'http2 connection closed by the proxy');
    });
  }

  /** Opens every listener and the admin server, and starts health checks. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new ProxyStateError('the proxy was already started');
    this.state = 'running';
    if (this.opts.subscribeEvents !== false) this.unsubscribe = subscribeMetrics(this.metrics);
    this.unsubscribeLog = logDelegatedCredentials(this.logger);
    try {
      for (const l of this.runtime.config.listeners) {
        this.listeners.set(l.name, { config: l, handle: await this.openListener(l) });
      }
      await recordCertificateExpiry(this.metrics, this.runtime.config.listeners);
      if (this.opts.admin !== false) {
        this.admin = new AdminServer(
          this.opts.metricsSource ?? registrySource(this.registry), () => this.readiness(), this.opts.scaling,
        );
        await this.admin.listen(this.runtime.config.admin.port, this.runtime.config.admin.address);
      }
    } catch (err) {
      await this.shutdown(0);
      throw err;
    }
    // Each pool's first health check decides whether its targets get traffic: wait for it (bounded by its timeout).
    await Promise.all(this.runtime.checkers.map((c) => c.start()));
    this.logger.info({ listeners: Object.fromEntries([...this.listeners].map(([n, l]) => [n, l.handle.address()])), admin: this.admin?.address() }, 'proxy started');
  }

  /** The configuration being served. */
  get config(): Config {
    return this.runtime.config;
  }

  /** The bound address of a listener, by name. */
  listenerAddress(name: string): AddressInfo | undefined {
    const a = this.listeners.get(name)?.handle.address();
    return a && typeof a === 'object' ? a : undefined;
  }

  /** Client input read ahead of the request being served, all connections (diagnostics, tests). */
  get inputBufferedBytes(): number {
    return this.http.bufferedBytes;
  }

  /** The bound address of the admin server. */
  adminAddress(): AddressInfo | undefined {
    return this.admin?.address();
  }

  /** Whether the proxy should receive traffic: running, listeners open, and the caller's check. */
  async readiness(): Promise<ReadinessReport> {
    const reasons: string[] = [];
    if (this.state !== 'running') reasons.push(`proxy is ${this.state}`);
    if (this.listeners.size === 0) reasons.push('no listener is open');
    if (this.opts.readiness) reasons.push(...(await this.opts.readiness()).reasons);
    return { ready: reasons.length === 0, reasons };
  }

  /**
   * Switches to `next` (routes, pools, timeouts, certificates) without dropping established
   * connections. If any listener refuses its new certificates, every change is rolled back and
   * a ReloadRefusedError says why; the previous configuration keeps serving.
   */
  async reload(next: Config): Promise<void> {
    if (this.state !== 'running') throw new ProxyStateError(`cannot reload: the proxy is ${this.state}`);
    const updated: Array<{ name: string; previous: ListenerConfig }> = [];
    const opened = new Map<string, TlsListener>();
    try {
      for (const l of next.listeners) {
        const cur = this.listeners.get(l.name);
        if (cur && cur.config.address === l.address && cur.config.port === l.port && cur.handle.update) {
          await cur.handle.update(l);
          updated.push({ name: l.name, previous: cur.config });
        } else if (!cur || cur.config.address !== l.address || cur.config.port !== l.port) {
          opened.set(l.name, await this.openListener(l));
        } else {
          throw new Error(`listener "${l.name}" cannot change certificates in place; restart to apply`);
        }
      }
    } catch (err) {
      for (const u of updated) await this.listeners.get(u.name)!.handle.update!(u.previous).catch(() => undefined);
      for (const h of opened.values()) await h.close();
      this.logger.error({ err: (err as Error).message }, 'reload refused');
      throw new ReloadRefusedError((err as Error).message, { cause: err });
    }
    // Commit: nothing below can fail on bad input.
    const names = new Set(next.listeners.map((l) => l.name));
    for (const [name, l] of this.listeners) {
      if (!names.has(name) || opened.has(name)) {
        await l.handle.close();
        this.h2.drain(name); // its HTTP/2 clients get GOAWAY and reconnect to what serves now
      }
      if (!names.has(name)) this.listeners.delete(name);
    }
    for (const l of next.listeners) {
      const handle = opened.get(l.name) ?? this.listeners.get(l.name)!.handle;
      this.listeners.set(l.name, { config: l, handle });
    }
    const previous = this.runtime;
    const runtime = this.buildRuntime(next, previous);
    // A new pool's targets are unknown until their first check: switch once it has answered.
    await Promise.all(runtime.checkers.map((c) => c.start()));
    if (this.state !== 'running') {
      // Shut down meanwhile: these checkers were never the runtime's, so nothing else stops them.
      for (const c of runtime.checkers) c.stop();
      return;
    }
    this.runtime = runtime;
    for (const c of previous.checkers) c.stop();
    for (const [name, pool] of previous.pools) if (this.runtime.pools.get(name) !== pool) this.retirePool(pool);
    this.applyTimeouts(next);
    this.h2.update(http2Policy(next));
    if (next.admin.port !== previous.config.admin.port || next.admin.address !== previous.config.admin.address) {
      this.logger.warn('the admin address changed; it takes effect at the next restart');
    }
    await recordCertificateExpiry(this.metrics, next.listeners);
    this.logger.info({ listeners: next.listeners.length, routes: next.routes.length }, 'configuration reloaded');
  }

  /**
   * Graceful shutdown: stop accepting, let in-flight requests finish (keep-alive connections are
   * closed as their last response ends), and destroy whatever is still open at the deadline.
   */
  async shutdown(deadlineMs = this.runtime.config.timeouts.shutdownMs): Promise<ShutdownReport> {
    const started = performance.now();
    if (this.state === 'stopped') return { drained: true, forcedConnections: 0, durationMs: 0 };
    this.state = 'draining';
    this.forwarder.draining = true;
    this.policy.draining = true;
    for (const c of this.runtime.checkers) c.stop();
    await Promise.all([...this.listeners.values()].map((l) => l.handle.close()));
    this.http.closeIdleConnections();
    this.h2.drain(); // GOAWAY: each connection closes once its open streams have finished
    const deadline = started + deadlineMs;
    while (this.connections.size > 0 && performance.now() < deadline) {
      this.http.closeIdleConnections();
      await new Promise((r) => setTimeout(r, Math.min(25, Math.max(1, deadline - performance.now()))));
    }
    const forcedConnections = this.connections.destroyAll();
    this.http.close();
    this.h2.close();
    for (const pool of this.runtime.pools.values()) pool.destroy();
    this.forwarder.close();
    await this.admin?.close();
    this.unsubscribe?.();
    this.unsubscribeLog?.();
    this.state = 'stopped';
    const report = {
      drained: forcedConnections === 0, forcedConnections, durationMs: Math.round(performance.now() - started),
    };
    this.logger.info(report, 'proxy stopped');
    return report;
  }

  private async openListener(l: ListenerConfig): Promise<TlsListener> {
    return this.opts.tlsListenerFactory(
      l, (socket) => this.accept(socket, this.listeners.get(l.name)?.config ?? l),
      { handshakeTimeoutMs: this.runtime.config.timeouts.handshakeMs },
    );
  }

  private accept(socket: TlsSocketLike, listener: ListenerConfig): void {
    if (this.state !== 'running') {
      socket.destroy();
      return;
    }
    this.forwarder.identity.bind(socket, listener.clientAuth);
    this.connections.add(socket);
    socket.on('error', (err) => this.logger.debug({ err: err.message }, 'client connection error'));
    if (socket.alpnProtocol === 'h2') this.h2.accept(socket, listener.name);
    else this.http.accept(socket);
  }

  /** Client-side timeouts and head limits, read by every connection at each use. */
  private applyTimeouts(config: Config): void {
    const t = config.timeouts;
    this.policy.headersMs = t.headersMs;
    this.policy.requestMs = t.requestMs;
    this.policy.bodyIdleMs = t.bodyIdleMs ?? DEFAULTS.timeouts.bodyIdleMs;
    this.policy.idleMs = t.idleMs;
    this.policy.limits = { maxHeadBytes: config.http.maxHeaderBytes, maxHeaders: config.http.maxHeaders };
  }

  /** Pools are rebuilt on reload unless their config is unchanged (keeping agents and health). */
  private buildRuntime(config: Config, previous: Runtime | undefined): Runtime {
    const pools = new Map<string, UpstreamPool>();
    const checkers: HealthChecker[] = [];
    for (const [name, up] of Object.entries(config.upstreams)) {
      const old = previous?.pools.get(name);
      const pool = old && JSON.stringify(old.config) === JSON.stringify(up) ? old : new UpstreamPool(up);
      pools.set(name, pool);
      for (const t of pool.targets) {
        this.metrics.upstreamHealthy.set({ upstream: name, target: t.url }, t.healthy ? 1 : 0);
      }
      if (up.healthCheck) {
        checkers.push(new HealthChecker(pool, up.healthCheck, (poolName, t) => {
          this.metrics.upstreamHealthy.set({ upstream: poolName, target: t.url }, t.healthy ? 1 : 0);
          this.logger.info({ upstream: poolName, target: t.url, healthy: t.healthy }, 'upstream health');
        }));
      }
    }
    const trusted = config.trustedProxies.length > 0 ? cidrList(config.trustedProxies) : null;
    return {
      config, router: new Router(config.routes), pools, checkers, trusted,
      identityHeaders: identityHeaderNames(config.listeners),
    };
  }

  private retirePool(pool: UpstreamPool): void {
    // In-flight requests keep their sockets; idle ones close after the agent's idle timeout.
    for (const t of pool.targets) this.metrics.upstreamHealthy.remove({ upstream: pool.config.name, target: t.url });
    setTimeout(() => pool.destroy(), this.runtime.config.timeouts.requestMs).unref();
  }
}
