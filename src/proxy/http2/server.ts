// The HTTP/2 side of every TLS listener of one proxy: connections that negotiated ALPN `h2` are
// handed to one node:http2 server (which never listens itself), and each stream becomes an
// H2Exchange for the same Forwarder as HTTP/1.1. nghttp2 enforces what it has settings for
// (concurrent streams, header list size, HPACK table size, flow-control windows, CONTINUATION
// frames per header block); what it leaves to the application is here: rapid reset
// (CVE-2023-44487), the SETTINGS/preface timeout (RFC 9113 §6.5.3), the idle timeout, and
// GOAWAY on shutdown.
import http2, { type Http2Server, type IncomingHttpHeaders, type Http2Session, type ServerHttp2Stream } from 'node:http2';
import type { ProxyExchange } from '../exchange.js';
import { HttpParseError } from '../http1/parse.js';
import type { TlsSocketLike } from '../listener.js';
import { H2Exchange, requestHead } from './exchange.js';

const {
  NGHTTP2_NO_ERROR, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_SETTINGS_TIMEOUT, NGHTTP2_FLAG_END_STREAM, NGHTTP2_CANCEL,
} = http2.constants;

/** What the HTTP/2 server asks of whoever serves requests (the Forwarder). */
export interface Http2Handler {
  request(ex: ProxyExchange): void;
  clientError(socket: TlsSocketLike, status: number, reason: string): void;
}

/** Limits of HTTP/2 connections; read when a connection starts (settings apply to new ones). */
export interface Http2Policy {
  /** SETTINGS_MAX_CONCURRENT_STREAMS: streams beyond it are refused (RST_STREAM REFUSED_STREAM). */
  maxConcurrentStreams: number;
  /** SETTINGS_HEADER_TABLE_SIZE: the HPACK dynamic table the client's encoder may use, bytes. */
  headerTableSize: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2 accounting: name + value + 32 per field). */
  maxHeaderListSize: number;
  /** Header fields per request at most, pseudo-header fields included. */
  maxHeaderListPairs: number;
  /** SETTINGS_INITIAL_WINDOW_SIZE: what one stream may send before we read it, bytes. */
  streamWindowBytes: number;
  /** The connection's receive window (WINDOW_UPDATE on stream 0), bytes. */
  connectionWindowBytes: number;
  /** Client stream resets allowed in a burst, and refilled per second; past them: GOAWAY and close. */
  resetBurst: number;
  resetsPerSecond: number;
  /** The client's preface and its SETTINGS acknowledgement must arrive within this, ms. */
  settingsTimeoutMs: number;
  /** A connection with no open stream for this long gets GOAWAY and is closed, ms. */
  idleMs: number;
  /** The longest silence inside a request body, ms (0: none): 408 past it. */
  bodyIdleMs: number;
}

// How long a connection closed by a guard lingers after its GOAWAY.
const GUARD_LINGER_MS = 250;

/** Why a connection was closed by a guard (for the log and metrics). */
export type Http2CloseReason = 'rapid_reset' | 'settings_timeout' | 'idle' | 'shutdown';

/** Per-connection state the guards need. */
class SessionState {
  open = 0;
  tokens: number;
  refilled = performance.now();
  idleTimer: NodeJS.Timeout | undefined;
  settingsTimer: NodeJS.Timeout | undefined;
  remoteSettings = false;
  localSettingsAcked = false;
  goingAway = false;
  /** A guard closed the connection (GOAWAY with an error sent; destroyed shortly). */
  guarded = false;

  constructor(readonly socket: TlsSocketLike, readonly listener: string, burst: number) {
    this.tokens = burst;
  }
}

/** Serves HTTP/2 on TLS sockets whose ALPN protocol is h2. */
export class Http2Front {
  private readonly server: Http2Server;
  private readonly sessions = new Map<Http2Session, SessionState>();
  private accepting: { socket: TlsSocketLike; listener: string } | undefined;
  private draining = false;

  constructor(
    private readonly handler: Http2Handler, private policy: Http2Policy,
    private readonly onGuardClose: (reason: Http2CloseReason, socket: TlsSocketLike) => void = () => undefined,
  ) {
    this.server = http2.createServer(serverOptions(policy));
    this.server.on('session', (s: Http2Session) => this.sessionStarted(s));
    this.server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => this.stream(stream, headers, flags));
    // Protocol errors end the session with the right GOAWAY; they are the peer's fault, not ours.
    this.server.on('sessionError', () => undefined);
  }

  /** Starts serving HTTP/2 on a connection of `listener` that negotiated h2. */
  accept(socket: TlsSocketLike, listener = ''): void {
    this.accepting = { socket, listener };
    try {
      this.server.emit('connection', socket);
    } finally {
      this.accepting = undefined;
    }
  }

  /** New settings for new connections (reload). */
  update(policy: Http2Policy): void {
    this.policy = policy;
    this.server.updateSettings(serverOptions(policy).settings!);
  }

  /** Open HTTP/2 connections. */
  get size(): number {
    return this.sessions.size;
  }

  /**
   * Graceful shutdown (RFC 9113 §6.8): GOAWAY to every connection, whose open streams finish;
   * each connection closes when its last stream has. With `listener`, only that listener's
   * connections (it was closed by a reload); without, every connection, now and later.
   */
  drain(listener?: string): void {
    if (listener === undefined) this.draining = true;
    for (const [s, st] of this.sessions) if (listener === undefined || st.listener === listener) this.goAway(s, st);
  }

  /** Forgets every connection (the caller destroys the sockets). */
  close(): void {
    for (const st of this.sessions.values()) this.clearTimers(st);
    this.sessions.clear();
  }

  private sessionStarted(session: Http2Session): void {
    if (!this.accepting) { session.destroy(); return; }
    const { socket, listener } = this.accepting;
    const p = this.policy;
    const st = new SessionState(socket, listener, p.resetBurst);
    this.sessions.set(session, st);
    session.on('error', () => undefined); // the peer's protocol error (nghttp2 ends the session), or a guard's GOAWAY
    session.once('close', () => {
      this.clearTimers(st);
      this.sessions.delete(session);
      if (!socket.destroyed) socket.destroy();
    });
    session.once('remoteSettings', () => { st.remoteSettings = true; this.settled(st); });
    session.once('localSettings', () => { st.localSettingsAcked = true; this.settled(st); });
    st.settingsTimer = setTimeout(() => this.guardClose(session, st, NGHTTP2_SETTINGS_TIMEOUT, 'settings_timeout'), p.settingsTimeoutMs);
    st.settingsTimer.unref();
    if (p.connectionWindowBytes > 65_535) session.setLocalWindowSize(p.connectionWindowBytes);
    this.armIdle(session, st);
    if (this.draining) this.goAway(session, st);
  }

  private stream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    const session = stream.session;
    const st = session ? this.sessions.get(session) : undefined;
    // An unheard stream 'error' would throw; resets and protocol errors are the peer's business.
    stream.on('error', () => undefined);
    if (!st || !session) { stream.close(NGHTTP2_CANCEL); return; }
    st.open++;
    if (st.idleTimer) { clearTimeout(st.idleTimer); st.idleTimer = undefined; }
    stream.once('close', () => {
      st.open--;
      // A reset with an error code that we did not send: the client's RST_STREAM (or nghttp2's
      // answer to its protocol error on the stream).
      const code = stream.rstCode;
      const byClient = code !== undefined && code !== NGHTTP2_NO_ERROR && !ex?.resetSent;
      if (byClient && !session.destroyed) this.countReset(session, st);
      if (st.open === 0 && !session.destroyed) this.armIdle(session, st);
    });
    let ex: H2Exchange | undefined;
    try {
      checkHeaderList(headers, this.policy);
      const head = requestHead(headers, (flags & NGHTTP2_FLAG_END_STREAM) !== 0);
      ex = new H2Exchange(stream, head, st.socket, this.policy.bodyIdleMs);
    } catch (err) {
      const status = err instanceof HttpParseError ? err.status : 400;
      this.handler.clientError(st.socket, status, (err as Error).message);
      stream.respond({ ':status': status, 'content-type': 'text/plain; charset=utf-8' });
      stream.end(`${status}: ${(err as Error).message}\n`);
      return;
    }
    this.handler.request(ex);
  }

  /** Token bucket of client resets: a burst, refilled at resetsPerSecond. */
  private countReset(session: Http2Session, st: SessionState): void {
    const now = performance.now();
    const p = this.policy;
    st.tokens = Math.min(p.resetBurst, st.tokens + ((now - st.refilled) / 1000) * p.resetsPerSecond);
    st.refilled = now;
    st.tokens -= 1;
    if (st.tokens < 0) this.guardClose(session, st, NGHTTP2_ENHANCE_YOUR_CALM, 'rapid_reset');
  }

  private settled(st: SessionState): void {
    if (st.remoteSettings && st.localSettingsAcked && st.settingsTimer) {
      clearTimeout(st.settingsTimer);
      st.settingsTimer = undefined;
    }
  }

  private armIdle(session: Http2Session, st: SessionState): void {
    if (st.idleTimer) clearTimeout(st.idleTimer);
    st.idleTimer = setTimeout(() => {
      st.idleTimer = undefined;
      if (st.open === 0) {
        this.onGuardClose('idle', st.socket);
        this.goAway(session, st);
      }
    }, this.policy.idleMs);
    st.idleTimer.unref();
  }

  /** GOAWAY with NO_ERROR; the session closes once its open streams have. */
  private goAway(session: Http2Session, st: SessionState): void {
    if (st.goingAway || session.destroyed) return;
    st.goingAway = true;
    session.close();
  }

  /** GOAWAY with an error code, then the connection is closed (RFC 9113 §5.4.1). */
  private guardClose(session: Http2Session, st: SessionState, code: number, reason: Http2CloseReason): void {
    if (session.destroyed || st.guarded) return;
    st.guarded = true;
    this.clearTimers(st);
    this.onGuardClose(reason, st.socket);
    // GOAWAY first, then a moment in which the peer's frames are still read (and ignored) before
    // the socket goes: closing with its unread input in our buffer would make the kernel answer
    // with a reset that can destroy the GOAWAY before the peer reads it.
    st.goingAway = true;
    session.goaway(code);
    setTimeout(() => { if (!session.destroyed) session.destroy(new Error(`http2 connection closed: ${reason}`), code); }, GUARD_LINGER_MS);
  }

  private clearTimers(st: SessionState): void {
    if (st.idleTimer) clearTimeout(st.idleTimer);
    if (st.settingsTimer) clearTimeout(st.settingsTimer);
    st.idleTimer = undefined;
    st.settingsTimer = undefined;
  }
}

/**
 * The header list limits, checked on every request: nghttp2 applies SETTINGS_MAX_HEADER_LIST_SIZE
 * only once the client has acknowledged it, so a request sent with the preface would otherwise
 * pass with up to node's own 64 KiB.
 */
function checkHeaderList(headers: IncomingHttpHeaders, p: Http2Policy): void {
  let size = 0;
  let pairs = 0;
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) {
      size += name.length + one.length + 32; // RFC 9113 §6.5.2
      pairs++;
    }
  }
  if (size > p.maxHeaderListSize || pairs > p.maxHeaderListPairs) {
    throw new HttpParseError(431, `request header fields too large (${pairs} fields, ${size} octets; limit ${p.maxHeaderListPairs} fields, ${p.maxHeaderListSize} octets)`);
  }
}

/** node:http2 server options from the policy. */
function serverOptions(p: Http2Policy): http2.ServerOptions {
  return {
    settings: {
      maxConcurrentStreams: p.maxConcurrentStreams,
      headerTableSize: p.headerTableSize,
      maxHeaderListSize: p.maxHeaderListSize,
      initialWindowSize: p.streamWindowBytes,
      enablePush: false,
    },
    maxHeaderListPairs: p.maxHeaderListPairs,
  };
}
