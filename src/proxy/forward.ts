// One request's trip: route it on its normalised path, pick an upstream, rebuild its headers
// (hop-by-hop removed, forwarded headers set, client-certificate headers replaced), send it with
// undici (which frames the body itself: a length or chunked, never the client's framing), stream
// the answer back with backpressure both ways, map upstream failures to 502/503/504, and record
// it in the access log and the HTTP metrics.
import { randomUUID } from 'node:crypto';
import { BlockList, isIPv6 } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { Logger } from 'pino';
import { DEFAULTS, type RouteConfig, type UpstreamTimeouts } from '../config/index.js';
import type { HsmproxyMetrics } from '../metrics/index.js';
import { ClientIdentityHeaders, type ClientIdentity } from './client-identity.js';
import { ConnectionTracker } from './connections.js';
import { UpstreamRefusedError, UpstreamTimeoutError } from './errors.js';
import type { ProxyExchange } from './exchange.js';
import { headerTokens, HttpParseError, type Http1Handler } from './http1/server.js';
import type { TlsSocketLike } from './listener.js';
import type { UpstreamPool, UpstreamTarget } from './pool.js';
import { normaliseTarget } from './request-target.js';
import type { Router } from './router.js';

/** What routing needs at request time; swapped as a whole on reload. */
export interface RoutingTable {
  router: Router;
  pools: Map<string, UpstreamPool>;
  /** Peers whose forwarding headers are believed (null: nobody). */
  trusted: BlockList | null;
  /** Client-certificate header names of every listener: a client's copies are always removed. */
  identityHeaders: ReadonlySet<string>;
}

interface RequestContext {
  requestId: string;
  host: string | undefined;
  path: string;
  route?: RouteConfig;
  target?: UpstreamTarget;
  upstreamStart?: number;
  error?: Error;
  reason?: string;
  client?: ClientIdentity;
  websocket?: boolean;
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'TRACE']);
const REQUEST_ID = /^[\w.:/+=-]{1,200}$/;
// RFC 9110 §7.6.1 hop-by-hop fields, plus the framing and forwarding fields this proxy sets itself.
const REQUEST_DROP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'content-length', 'expect', 'x-request-id',
]);
const FORWARDING = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded', 'x-real-ip']);
const RESPONSE_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'content-length']);
// A Connection token may name any end-to-end field to drop, but never these: dropping framing
// or Host is how a client makes the upstream read its body as a second request.
const PROTECTED = new Set(['host', 'content-length', 'transfer-encoding']);

/** Raised into undici when the client went away, so the upstream request is abandoned. */
class ClientGoneError extends Error {
  constructor() { super('the client closed the connection'); this.name = 'ClientGoneError'; }
}

/** Proxies requests and upgrades according to the current routing table. */
export class Forwarder implements Http1Handler {
  /** Set during shutdown: responses carry `Connection: close` so keep-alive connections end. */
  draining = false;
  /** Client-certificate identity headers, per accepted connection. */
  readonly identity = new ClientIdentityHeaders();
  private readonly trust = new WeakMap<object, { list: BlockList; trusted: boolean }>();

  constructor(
    private table: () => RoutingTable,
    private readonly connections: ConnectionTracker,
    private readonly logger: Logger,
    private readonly metrics: HsmproxyMetrics,
  ) {}

  /** A bad request the connection answered itself. */
  clientError(socket: TlsSocketLike, status: number, reason: string): void {
    this.logger.info({ status, reason, remote: socket.remoteAddress }, 'client error');
  }

  /** Handles one request head (the body, if any, is still arriving on `ex.body`). */
  request(ex: ProxyExchange): void {
    const head = ex.head;
    const hosts: string[] = [];
    for (const [n, v] of head.headers) if (n === 'host') hosts.push(v);
    const ctx: RequestContext = { requestId: this.requestId(head.headers), host: hosts[0], path: head.target };
    this.connections.requestStarted(ex.socket);
    ex.onClose(() => this.finish(ex, ctx));
    // RFC 9112 §3.2: a 1.1 request without exactly one Host is refused.
    if (hosts.length > 1 || (head.minor === 1 && hosts.length === 0)) return this.refuse(ex, ctx, 400, 'a request needs exactly one Host header');
    // CONNECT would make us a tunnel; TRACE echoes the request, cookies and credentials included
    // (cross-site tracing): nginx answers both with 405 as well.
    if (head.method === 'CONNECT' || head.method === 'TRACE') return this.refuse(ex, ctx, 405, `${head.method} is not supported by this reverse proxy`);
    let path: string;
    try {
      const t = normaliseTarget(head.method, head.target, ctx.host);
      path = t.path + t.query;
      ctx.path = path;
    } catch (err) {
      return this.refuse(ex, ctx, (err as HttpParseError).status ?? 400, (err as Error).message);
    }
    const { router, pools } = this.table();
    const route = router.match(ctx.host, path);
    if (!route) return this.reply(ex, ctx, 404, 'no route matches this host and path');
    ctx.route = route;
    const websocket = this.isUpgrade(ex);
    if (websocket === 'bad') return this.refuse(ex, ctx, 400, 'an Upgrade request must be a bodiless GET');
    ctx.websocket = websocket;
    const pool = pools.get(route.upstream);
    const target = pool?.pick();
    if (!target) {
      this.metrics.httpUpstreamErrors.inc({ route: route.name, reason: 'unavailable' });
      return this.reply(ex, ctx, 503, 'no healthy upstream server for this route; try again shortly');
    }
    const headers = this.upstreamHeaders(ex, ctx, (pool!.config.protocol ?? 'http1') !== 'http1');
    this.send(ex, ctx, pool!, target, headers, new Set());
  }

  /** Whether `peer` is a trusted proxy; decided once per connection (BlockList.check is not cheap). */
  private trustedPeer(socket: TlsSocketLike, peer: string, trusted: BlockList): boolean {
    let v = this.trust.get(socket);
    if (v === undefined || v.list !== trusted) {
      v = { list: trusted, trusted: peer !== '' && trusted.check(peer, isIPv6(peer) ? 'ipv6' : 'ipv4') };
      this.trust.set(socket, v);
    }
    return v.trusted;
  }

  /** 'bad' for an Upgrade that cannot be one; true for a WebSocket-style upgrade. */
  private isUpgrade(ex: ProxyExchange): boolean | 'bad' {
    const h = ex.head.headers;
    if (!h.some(([n]) => n === 'upgrade') || !headerTokens(h, 'connection').includes('upgrade')) return false;
    return ex.head.method === 'GET' && ex.body === null && ex.head.minor === 1 ? true : 'bad';
  }

  /**
   * The request headers for the upstream, as a flat [name, value, …] list for undici. For an
   * upgrade, undici writes Connection/Upgrade itself; the client's other WebSocket fields pass.
   */
  private upstreamHeaders(ex: ProxyExchange, ctx: RequestContext, h2Upstream: boolean): string[] {
    const { trusted, identityHeaders } = this.table();
    const head = ex.head;
    const socket = ex.socket;
    const listed = new Set(headerTokens(head.headers, 'connection').filter((t) => !PROTECTED.has(t)));
    const peer = socket.remoteAddress ?? '';
    const trustedPeer = trusted !== null && this.trustedPeer(socket, peer, trusted);
    const out: Array<[string, string]> = [];
    const prior: string[] = [];
    for (const h of head.headers) {
      const n = h[0];
      if (REQUEST_DROP.has(n) || listed.has(n) || identityHeaders.has(n)) continue;
      if (FORWARDING.has(n)) {
        // From an untrusted peer these are lies we must not pass on; from a trusted one, history.
        if (!trustedPeer) continue;
        if (n === 'x-forwarded-for') { prior.push(h[1]); continue; }
      }
      out.push(h);
    }
    out.push(['x-forwarded-for', prior.length > 0 ? `${prior.join(', ')}, ${peer}` : peer]);
    if (!trustedPeer || !head.headers.some(([n]) => n === 'x-forwarded-proto')) out.push(['x-forwarded-proto', 'https']);
    if (ctx.host !== undefined && (!trustedPeer || !head.headers.some(([n]) => n === 'x-forwarded-host'))) out.push(['x-forwarded-host', ctx.host]);
    out.push(['x-request-id', ctx.requestId]);
    // TE is hop-by-hop, but `trailers` is how a gRPC client says it reads trailers; an HTTP/2
    // upstream (the only kind that can send them through us) gets it (RFC 9113 §8.2.2).
    if (h2Upstream && headerTokens(head.headers, 'te').includes('trailers')) out.push(['te', 'trailers']);
    ctx.client = this.identity.apply(out, socket);
    const flat: string[] = [];
    for (const [n, v] of out) flat.push(n, v);
    if (head.body.kind === 'length') flat.push('content-length', String(head.body.length));
    return flat;
  }

  /** Sends to `target`; a refused connection is retried once per target when the request has no body. */
  /** @internal Sends to `target`; a refused connection is retried once per target when the request has no body. */
  send(
    ex: ProxyExchange, ctx: RequestContext, pool: UpstreamPool, target: UpstreamTarget, headers: string[],
    tried: Set<UpstreamTarget>,
  ): void {
    if (target.full) {
      this.metrics.httpUpstreamErrors.inc({ route: ctx.route!.name, reason: 'queue_full' });
      return this.reply(ex, ctx, 503, 'the upstream server has too many requests waiting; try again shortly');
    }
    ctx.target = target;
    ctx.upstreamStart = performance.now();
    tried.add(target);
    target.inFlight++;
    const timeouts: UpstreamTimeouts = {
      ...(pool.config.timeouts ?? DEFAULTS.upstream.timeouts), ...ctx.route!.timeouts
    };
    target.pool.dispatch({
      origin: target.origin,
      path: target.basePath + ctx.path,
      method: ex.head.method as Dispatcher.HttpMethod,
      headers,
      body: ex.body,
      headersTimeout: timeouts.responseMs,
      bodyTimeout: ctx.websocket ? 0 : timeouts.responseMs,
      ...(ctx.websocket ? { upgrade: 'websocket' } : {}),
    }, new UpstreamExchange(this, ex, ctx, pool, target, headers, tried, timeouts));
  }

  /** @internal */
  upstreamResponded(ctx: RequestContext, target: UpstreamTarget): void {
    this.metrics.httpUpstreamDuration.observe(
      { route: ctx.route!.name, upstream: target.url }, (performance.now() - ctx.upstreamStart!) / 1000,
    );
  }

  /** @internal the upstream refused before anything was sent: another target, or the error answer. */
  upstreamFailed(err: Error, u: UpstreamExchange): void {
    const { ex, ctx, pool, target, tried } = u;
    const code = errorCode(err);
    if (code === 'ECONNREFUSED' && !u.responded && ex.body === null && !ex.headersSent) {
      const next = pool.pick(tried);
      if (next) {
        this.logger.info({ requestId: ctx.requestId, upstream: target.url, next: next.url, code }, 'upstream refused, trying another target');
        this.send(ex, ctx, pool, next, u.headers, tried);
        return;
      }
    }
    this.onUpstreamError(err, ex, ctx, u.timeouts);
  }

  /** @internal The upstream switched protocols: answer the client with its 101 and join the two sockets. */
  upgraded(
    ex: ProxyExchange, ctx: RequestContext, statusCode: number,
    resHeaders: Record<string, string | string[] | undefined>,
    upstream: Duplex,
  ): void {
    if (ex.finished) { upstream.destroy(); return; }
    const client = ex.socket;
    const rest = ex.takeOver();
    this.connections.upgraded(client);
    let head = `HTTP/1.1 ${statusCode} Switching Protocols\r\n`;
    for (const [n, v] of Object.entries(resHeaders)) {
      if (v === undefined || n === 'keep-alive' || n === 'proxy-connection') continue;
      for (const one of Array.isArray(v) ? v : [v]) head += `${n}: ${one}\r\n`;
    }
    client.write(Buffer.from(`${head}\r\n`, 'latin1'));
    if (rest) upstream.write(rest);
    // An established WebSocket may stay quiet for as long as its peers like.
    (client as TlsSocketLike & { setTimeout?: (ms: number) => void }).setTimeout?.(0);
    upstream.pipe(client);
    client.pipe(upstream);
    const close = () => { client.destroy(); upstream.destroy(); };
    upstream.on('error', close).on('close', close);
    client.on('error', close).on('close', close);
    this.logger.info({
      type: 'access', method: ex.head.method, host: ctx.host, path: ctx.path, status: 101, upgrade: 'websocket',
      upstream: ctx.target?.url, route: ctx.route?.name,
      durationMs: Math.round((performance.now() - ex.start) * 1e3) / 1e3, requestId: ctx.requestId,
    }, 'websocket');
  }

  /** Closes idle upstream connections (pools close with their runtime). */
  close(): void {
    // Nothing of its own: pools are owned by the routing table.
  }

  private requestId(headers: ReadonlyArray<[string, string]>): string {
    for (const [n, v] of headers) if (n === 'x-request-id') return REQUEST_ID.test(v) ? v : randomUUID();
    return randomUUID();
  }

  private onUpstreamError(err: Error, ex: ProxyExchange, ctx: RequestContext, timeouts: UpstreamTimeouts): void {
    const target = ctx.target?.url ?? '';
    const code = errorCode(err);
    const reason = code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' ? 'timeout'
      : code === 'ECONNREFUSED' ? 'refused' : 'reset';
    ctx.reason = reason;
    ctx.error = reason === 'timeout'
      ? new UpstreamTimeoutError(target, code === 'UND_ERR_CONNECT_TIMEOUT' ? 'connect' : 'response', code === 'UND_ERR_CONNECT_TIMEOUT' ? timeouts.connectMs : timeouts.responseMs)
      : new UpstreamRefusedError(target, code ?? err.message);
    if (ctx.route) this.metrics.httpUpstreamErrors.inc({ route: ctx.route.name, reason });
    this.logger.warn({ requestId: ctx.requestId, upstream: target, code, reason, err: ctx.error.message }, 'upstream request failed');
    if (ex.headersSent) { ex.abort(); return; }
    if (ctx.websocket) this.refuse(ex, ctx, 502, 'the upstream server refused the WebSocket connection');
    else if (reason === 'timeout') this.reply(ex, ctx, 504, 'the upstream server did not answer in time');
    else this.reply(ex, ctx, 502, 'the upstream server refused or dropped the connection');
  }

  private reply(ex: ProxyExchange, ctx: RequestContext, status: number, message: string): void {
    ex.reply(status, `${status} ${STATUS_TEXT[status] ?? ''}: ${message} (request id ${ctx.requestId})\n`, [['x-request-id', ctx.requestId]]);
  }

  private refuse(ex: ProxyExchange, ctx: RequestContext, status: number, message: string): void {
    this.logger.info({ status, reason: message, remote: ex.socket.remoteAddress, requestId: ctx.requestId }, 'client error');
    ex.refuse(status, `${status} ${STATUS_TEXT[status] ?? ''}: ${message} (request id ${ctx.requestId})\n`);
  }

  private finish(ex: ProxyExchange, ctx: RequestContext): void {
    this.connections.requestEnded(ex.socket);
    if (ctx.websocket && ex.status === 0 && ex.complete) return; // logged as 'websocket'
    const socket = ex.socket;
    const seconds = (performance.now() - ex.start) / 1000;
    const status = ex.headersSent ? ex.status : 499; // 499: the client went away first (nginx's code)
    const method = METHODS.has(ex.head.method) ? ex.head.method : 'OTHER';
    const route = ctx.route?.name ?? 'none';
    this.metrics.httpRequestDuration.observe({ method, status_class: `${Math.floor(status / 100)}xx`, route, protocol: ex.protocol }, seconds);
    if (!this.logger.isLevelEnabled('info')) return;
    this.logger.info({
      type: 'access', protocol: ex.protocol, method: ex.head.method, host: ctx.host, path: ctx.path, status, bytes: ex.bytes,
      durationMs: Math.round(seconds * 1e6) / 1e3, upstream: ctx.target?.url, route: ctx.route?.name,
      tlsVersion: socket.getProtocol?.() ?? undefined, resumed: socket.isSessionReused?.() ?? undefined,
      requestId: ctx.requestId, complete: ex.complete, ...(ctx.reason ? { upstreamError: ctx.reason } : {}),
      ...(ctx.client && ctx.client.verify !== 'NONE' ? { clientVerify: ctx.client.verify, clientSubject: ctx.client.subject, clientFingerprint: ctx.client.fingerprint256 } : {}),
    }, 'request');
  }
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};

function errorCode(err: Error): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/**
 * The upstream's response fields minus its hop-by-hop ones, and the body length to frame with
 * (undefined: unknown, so chunked). HEAD and 304 answers keep the upstream's Content-Length as a
 * plain field: it describes the representation, not a body that follows.
 */
function responseHeaders(
  h: Record<string, string | string[] | undefined>, ex: ProxyExchange, requestId: string,
): { list: Array<[string, string]>; length: number | undefined } {
  const conn = h.connection;
  const listed = new Set<string>();
  if (conn !== undefined) for (const t of (Array.isArray(conn) ? conn.join(',') : conn).split(',')) { const s = t.trim().toLowerCase(); if (s && !PROTECTED.has(s)) listed.add(s); }
  const list: Array<[string, string]> = [];
  for (const n in h) {
    const v = h[n];
    if (v === undefined || RESPONSE_DROP.has(n) || listed.has(n) || n === 'x-request-id') continue;
    if (Array.isArray(v)) for (const one of v) list.push([n, one]);
    else list.push([n, v]);
  }
  list.push(['x-request-id', requestId]);
  const cl = h['content-length'];
  const clText = Array.isArray(cl) ? cl[0] : cl;
  const bodiless = ex.head.method === 'HEAD';
  if (bodiless) {
    if (clText !== undefined) list.push(['content-length', clText]);
    return { list, length: undefined };
  }
  const length = clText !== undefined && /^\d{1,15}$/.test(clText) ? Number(clText) : undefined;
  return { list, length };
}

/**
 * One request's trip to one upstream target, as undici's dispatch handler: streams the answer to
 * the client with backpressure, aborts the upstream request when the client goes away. A class,
 * not a literal of closures: nothing is allocated per request beyond this object.
 */
class UpstreamExchange implements Dispatcher.DispatchHandler {
  responded = false;
  private controller: Dispatcher.DispatchController | undefined;
  private released = false;

  constructor(
    private readonly forwarder: Forwarder, readonly ex: ProxyExchange, readonly ctx: RequestContext,
    readonly pool: UpstreamPool,
    readonly target: UpstreamTarget, readonly headers: string[], readonly tried: Set<UpstreamTarget>,
    readonly timeouts: UpstreamTimeouts,
  ) {
    ex.onClose(() => { if (!ex.complete) this.controller?.abort(new ClientGoneError()); });
  }

  private release(): void {
    if (!this.released) this.target.inFlight--;
    this.released = true;
  }

  onRequestStart(c: Dispatcher.DispatchController): void {
    this.controller = c;
    if (this.ex.finished) c.abort(new ClientGoneError());
  }

  onRequestUpgrade(
    _c: Dispatcher.DispatchController, statusCode: number, resHeaders: Record<string, string | string[] | undefined>,
    socket: Duplex,
  ): void {
    this.release();
    this.forwarder.upgraded(this.ex, this.ctx, statusCode, resHeaders, socket);
  }

  onResponseStart(
    c: Dispatcher.DispatchController, statusCode: number, resHeaders: Record<string, string | string[] | undefined>,
  ): void {
    if (statusCode < 200) return; // 1xx from the upstream: ours (100 Continue) was sent already
    this.responded = true;
    this.forwarder.upstreamResponded(this.ctx, this.target);
    const { list, length } = responseHeaders(resHeaders, this.ex, this.ctx.requestId);
    this.ex.respond(statusCode, list, length);
    if (this.ex.finished && !this.ex.complete) c.abort(new ClientGoneError());
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.ex.write(chunk)) {
      c.pause();
      this.ex.onDrain(() => c.resume());
    }
  }

  onResponseEnd(c: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    this.release();
    // undici 7 parses HTTP/2 trailers (an object, not a flat list) into {}; the controller keeps
    // the object itself. gRPC's grpc-status travels there.
    const raw = (c as { rawTrailers?: unknown }).rawTrailers;
    this.ex.end(raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? raw as Record<string, string | string[] | undefined> : trailers);
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.release();
    if (err instanceof ClientGoneError || this.ex.finished) return;
    this.forwarder.upstreamFailed(err, this);
  }
}
