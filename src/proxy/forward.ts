// One request's trip: route it, pick an upstream, add forwarded headers, proxy it with
// http-proxy (HTTP and WebSocket), map upstream failures to 502/503/504, and record it in the
// access log and the HTTP metrics.
import { randomUUID } from 'node:crypto';
import { STATUS_CODES, type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import type { Logger } from 'pino';
import { DEFAULTS, type RouteConfig, type UpstreamTimeouts } from '../config/index.js';
import type { HsmproxyMetrics } from '../metrics/index.js';
import { ClientIdentityHeaders, type ClientIdentity } from './client-identity.js';
import { ConnectionTracker } from './connections.js';
import { UpstreamRefusedError, UpstreamTimeoutError } from './errors.js';
import type { TlsSocketLike } from './listener.js';
import type { UpstreamPool, UpstreamTarget } from './pool.js';
import type { Router } from './router.js';

/** What routing needs at request time; swapped as a whole on reload. */
export interface RoutingTable { router: Router; pools: Map<string, UpstreamPool> }

interface RequestContext {
  start: number;
  requestId: string;
  route?: RouteConfig;
  target?: UpstreamTarget;
  upstreamStart?: number;
  bytes: number;
  error?: Error;
  /** The client certificate as forwarded (mTLS), for the access log. */
  client?: ClientIdentity;
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'TRACE']);
const REQUEST_ID = /^[\w.:/+=-]{1,200}$/;
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'upgrade'];

/** Proxies requests and upgrades according to the current routing table. */
export class Forwarder {
  private readonly proxy = httpProxy.createProxyServer({ xfwd: false, changeOrigin: false, ws: true });
  private readonly contexts = new WeakMap<IncomingMessage, RequestContext>();
  /** Set during shutdown: responses carry `Connection: close` so keep-alive connections end. */
  draining = false;
  /** Client-certificate identity headers, per accepted connection. */
  readonly identity = new ClientIdentityHeaders();

  constructor(
    private table: () => RoutingTable,
    private readonly connections: ConnectionTracker,
    private readonly logger: Logger,
    private readonly metrics: HsmproxyMetrics,
  ) {
    this.proxy.on('proxyReq', (proxyReq, req) => this.onUpstreamRequest(proxyReq, req, false));
    this.proxy.on('proxyReqWs', (proxyReq, req) => this.onUpstreamRequest(proxyReq, req, true));
    this.proxy.on('proxyRes', (proxyRes, req, res) => {
      // The upstream's hop-by-hop headers describe its connection to us. Copied through, its
      // `Connection: keep-alive` overrode a client's `Connection: close` (and draining), and the
      // client's connection stayed open after the response.
      const listed = String(proxyRes.headers.connection ?? '').toLowerCase().split(',').map((h) => h.trim()).filter(Boolean);
      for (const h of [...listed, ...HOP_BY_HOP]) delete proxyRes.headers[h];
      proxyRes.headers.connection = this.draining || !res.shouldKeepAlive ? 'close' : 'keep-alive';
      const ctx = this.contexts.get(req);
      if (!ctx) return;
      if (ctx.upstreamStart !== undefined && ctx.route && ctx.target) {
        this.metrics.httpUpstreamDuration.observe({ route: ctx.route.name, upstream: ctx.target.url }, (performance.now() - ctx.upstreamStart) / 1000);
      }
      proxyRes.on('data', (chunk: Buffer) => { ctx.bytes += chunk.length; });
    });
    // Errors after a WebSocket was established arrive here, not in a callback.
    this.proxy.on('error', (err) => this.logger.warn({ err: err.message }, 'upstream connection error'));
  }

  /** Handles one HTTP request (the http.Server 'request' listener). */
  handleRequest(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket as TlsSocketLike;
    const ctx: RequestContext = { start: performance.now(), requestId: this.requestId(req), bytes: 0 };
    this.contexts.set(req, ctx);
    this.connections.requestStarted(socket);
    res.setHeader('x-request-id', ctx.requestId);
    if (this.draining) res.setHeader('connection', 'close');
    res.once('close', () => this.finish(req, res, ctx, socket));

    const { router, pools } = this.table();
    const route = router.match(req.headers.host, req.url ?? '/');
    if (!route) return this.reply(res, ctx, 404, 'no route matches this host and path');
    ctx.route = route;
    const target = pools.get(route.upstream)?.pick();
    if (!target) {
      this.metrics.httpUpstreamErrors.inc({ route: route.name, reason: 'unavailable' });
      return this.reply(res, ctx, 503, 'no healthy upstream server for this route; try again shortly');
    }
    this.addForwardedHeaders(req, socket, ctx, false);
    this.send(req, res, ctx, target, new Set());
  }

  /** Sends to `target`; a refused connection is retried once per target when nothing was sent. */
  private send(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, target: UpstreamTarget, tried: Set<UpstreamTarget>): void {
    ctx.target = target;
    tried.add(target);
    target.inFlight++;
    let released = false;
    const release = () => {
      if (!released) target.inFlight--;
      released = true;
    };
    res.once('close', release);
    this.proxy.web(req, res, { target: target.url, agent: target.agent }, (err) => {
      release();
      const next = this.canRetry(err, req, res) ? this.table().pools.get(ctx.route!.upstream)?.pick(tried) : undefined;
      if (!next) return this.onUpstreamError(err, res, ctx);
      this.logger.info({ requestId: ctx.requestId, upstream: target.url, next: next.url, code: (err as NodeJS.ErrnoException).code }, 'upstream refused, trying another target');
      this.send(req, res, ctx, next, tried);
    });
  }

  /**
   * A refused connection means the upstream never saw the request, so another target may take
   * it — if the request has no body (http-proxy has already consumed the stream).
   */
  private canRetry(err: Error, req: IncomingMessage, res: ServerResponse): boolean {
    if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED' || res.headersSent || res.destroyed) return false;
    const bodyless = req.headers['content-length'] === undefined || req.headers['content-length'] === '0';
    return bodyless && req.headers['transfer-encoding'] === undefined;
  }

  /** Handles a WebSocket upgrade (the http.Server 'upgrade' listener). */
  handleUpgrade(req: IncomingMessage, clientSocket: Duplex, head: Buffer): void {
    const socket = req.socket as TlsSocketLike;
    const ctx: RequestContext = { start: performance.now(), requestId: this.requestId(req), bytes: 0 };
    this.contexts.set(req, ctx);
    const refuse = (status: number, why: string) => {
      clientSocket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${why.length + 1}\r\n\r\n${why}\n`);
      this.logger.info({ type: 'access', method: req.method, host: req.headers.host, path: req.url, status, upgrade: 'websocket', requestId: ctx.requestId }, 'websocket refused');
    };
    const { router, pools } = this.table();
    const route = router.match(req.headers.host, req.url ?? '/');
    if (!route) return refuse(404, 'no route matches this host and path');
    const target = pools.get(route.upstream)?.pick();
    if (!target) return refuse(503, 'no healthy upstream server for this route; try again shortly');
    ctx.route = route;
    ctx.target = target;
    this.connections.upgraded(socket);
    this.addForwardedHeaders(req, socket, ctx, true);
    this.proxy.ws(req, clientSocket, head, { target: target.url }, (err) => {
      this.logger.warn({ requestId: ctx.requestId, upstream: target.url, err: err.message }, 'websocket upstream failed');
      if (clientSocket.writable) refuse(502, 'the upstream server refused the WebSocket connection');
    });
  }

  /** Closes idle upstream connections held by http-proxy. */
  close(): void {
    this.proxy.close();
  }

  private requestId(req: IncomingMessage): string {
    const given = req.headers['x-request-id'];
    const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    req.headers['x-request-id'] = id;
    return id;
  }

  /**
   * Hop-by-hop headers (RFC 9110 §7.6.1) describe the client's connection to us, not ours to the
   * upstream: drop them and any header the client listed in Connection. A WebSocket keeps its
   * Connection/Upgrade pair, which http-proxy needs to forward the upgrade.
   */
  private dropHopByHop(req: IncomingMessage, upgrade: boolean): void {
    const listed = String(req.headers.connection ?? '').toLowerCase().split(',').map((h) => h.trim()).filter(Boolean);
    for (const h of [...listed, ...HOP_BY_HOP]) {
      if (upgrade && (h === 'connection' || h === 'upgrade')) continue;
      delete req.headers[h];
    }
  }

  private addForwardedHeaders(req: IncomingMessage, socket: TlsSocketLike, ctx: RequestContext, upgrade: boolean): void {
    this.dropHopByHop(req, upgrade);
    const client = socket.remoteAddress ?? '';
    const prior = req.headers['x-forwarded-for'];
    req.headers['x-forwarded-for'] = prior ? `${Array.isArray(prior) ? prior.join(', ') : prior}, ${client}` : client;
    req.headers['x-forwarded-proto'] = 'https';
    if (req.headers.host) req.headers['x-forwarded-host'] = req.headers.host;
    req.headers['x-request-id'] = ctx.requestId;
    ctx.client = this.identity.apply(req.headers, socket);
  }

  private onUpstreamRequest(proxyReq: ClientRequest, req: IncomingMessage, websocket: boolean): void {
    const ctx = this.contexts.get(req);
    if (!ctx?.route || !ctx.target) return;
    ctx.upstreamStart = performance.now();
    const poolTimeouts = this.table().pools.get(ctx.route.upstream)?.config.timeouts ?? DEFAULTS.upstream.timeouts;
    const timeouts: UpstreamTimeouts = { ...poolTimeouts, ...ctx.route.timeouts };
    const target = ctx.target.url;
    proxyReq.on('socket', (s) => {
      if (!(s as { connecting?: boolean }).connecting) return;
      const timer = setTimeout(() => proxyReq.destroy(new UpstreamTimeoutError(target, 'connect', timeouts.connectMs)), timeouts.connectMs);
      s.once('connect', () => clearTimeout(timer));
      s.once('close', () => clearTimeout(timer));
    });
    // Idle timeout on the upstream socket: no response head, or a stalled body, for responseMs.
    proxyReq.setTimeout(timeouts.responseMs, () => proxyReq.destroy(new UpstreamTimeoutError(target, 'response', timeouts.responseMs)));
    // An established WebSocket may stay quiet for as long as its peers like.
    if (!websocket) return;
    proxyReq.once('upgrade', (_res, s) => {
      s.setTimeout(0);
      this.logger.info({
        type: 'access', method: req.method, host: req.headers.host, path: req.url, status: 101, upgrade: 'websocket',
        upstream: target, route: ctx.route?.name, durationMs: Math.round((performance.now() - ctx.start) * 1e3) / 1e3, requestId: ctx.requestId,
      }, 'websocket');
    });
  }

  private onUpstreamError(err: Error, res: ServerResponse | Duplex, ctx: RequestContext): void {
    const target = ctx.target?.url ?? '';
    const timedOut = err instanceof UpstreamTimeoutError;
    ctx.error = timedOut ? err : new UpstreamRefusedError(target, (err as NodeJS.ErrnoException).code ?? err.message);
    if (ctx.route) this.metrics.httpUpstreamErrors.inc({ route: ctx.route.name, reason: timedOut ? 'timeout' : 'refused' });
    this.logger.warn({ requestId: ctx.requestId, upstream: target, code: (err as NodeJS.ErrnoException).code, err: ctx.error.message }, 'upstream request failed');
    if (!('setHeader' in res)) return;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (timedOut) this.reply(res, ctx, 504, 'the upstream server did not answer in time');
    else this.reply(res, ctx, 502, 'the upstream server refused or dropped the connection');
  }

  private reply(res: ServerResponse, ctx: RequestContext, status: number, message: string): void {
    const body = `${status} ${STATUS_CODES[status]}: ${message} (request id ${ctx.requestId})\n`;
    ctx.bytes = Buffer.byteLength(body);
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': ctx.bytes, 'cache-control': 'no-store' });
    res.end(body);
  }

  private finish(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, socket: TlsSocketLike): void {
    this.connections.requestEnded(socket);
    const seconds = (performance.now() - ctx.start) / 1000;
    const status = res.headersSent ? res.statusCode : 499; // 499: the client went away first (nginx's code)
    const method = METHODS.has(req.method ?? '') ? req.method! : 'OTHER';
    const route = ctx.route?.name ?? 'none';
    this.metrics.httpRequestDuration.observe({ method, status_class: `${Math.floor(status / 100)}xx`, route }, seconds);
    this.logger.info({
      type: 'access', method: req.method, host: req.headers.host, path: req.url, status, bytes: ctx.bytes,
      durationMs: Math.round(seconds * 1e6) / 1e3, upstream: ctx.target?.url, route: ctx.route?.name,
      tlsVersion: socket.getProtocol?.() ?? undefined, resumed: socket.isSessionReused?.() ?? undefined,
      requestId: ctx.requestId, complete: res.writableFinished,
      ...(ctx.client && ctx.client.verify !== 'NONE' ? { clientVerify: ctx.client.verify, clientSubject: ctx.client.subject, clientFingerprint: ctx.client.fingerprint256 } : {}),
    }, 'request');
  }
}
