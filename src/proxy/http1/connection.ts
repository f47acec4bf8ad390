// One client connection speaking HTTP/1.1 over a decrypted TLS socket. Requests are read one at
// a time, as nginx and Envoy do: the next pipelined request is parsed only after the previous
// response has been written, and the socket stops being read while parsed-but-unserved bytes
// pile up, so a pipelining client gets its answers in order and costs the upstream one
// connection. Responses are framed here (Content-Length, chunked, or close-delimited for 1.0).
import { STATUS_CODES } from 'node:http';
import { Readable } from 'node:stream';
import { replyText, type ProxyExchange } from '../exchange.js';
import type { TlsSocketLike } from '../listener.js';
import { BodyDecoder, HttpParseError, headEnd, headerTokens, parseHead, type HeadLimits, type RequestHead } from './parse.js';

/** What the connection asks of whoever serves requests (the Forwarder). */
export interface Http1Handler {
  /** A request head was read; its body (if any) streams on `ex.body`. Answer through `ex`. */
  request(ex: Exchange): void;
  /** A client error the connection answered itself (400, 408, 431…), for the log and metrics. */
  clientError(socket: TlsSocketLike, status: number, reason: string): void;
}

/** Timing and size policy shared by the connections of one server; read at each use (reload). */
export interface Http1Policy {
  limits: HeadLimits;
  /** A request head must arrive within this long of its first byte. */
  headersMs: number;
  /** The whole request (head and body) must arrive within this long. */
  requestMs: number;
  /** A keep-alive connection with no request for this long is closed. */
  idleMs: number;
  /** Longest silence inside a request body while we are reading it (0 = only requestMs applies). */
  bodyIdleMs: number;
  /** Set during shutdown: every response says `connection: close`. */
  draining: boolean;
}

// Parsed-ahead bytes held while a response is pending, before the socket stops being read; it is
// read again once under a quarter of that (hysteresis: not one pause/resume per served request).
const PIPELINE_BUFFER = 64 * 1024;
const PIPELINE_RESUME = PIPELINE_BUFFER / 4;
// After refusing a request, what the client still sends is read and dropped for this long, so its
// kernel does not answer our close with a reset that destroys the refusal unread (nginx's lingering close).
const LINGER_MS = 2_000;
const CRLF = Buffer.from('\r\n');
const LAST_CHUNK = Buffer.from('0\r\n\r\n');

type Phase = 'head' | 'body' | 'wait' | 'upgraded' | 'closed';

/** One request and its response. */
export class Exchange implements ProxyExchange {
  readonly protocol = 'http1';
  /** The request body as decoded payload bytes, or null when the request has none. */
  body: Readable | null = null;
  /** performance.now() when the head was complete. */
  readonly start = performance.now();
  /** Response body bytes written. */
  bytes = 0;
  /** Status sent, once the head is written. */
  status = 0;
  /** The response was written completely. */
  complete = false;
  private headSent = false;
  private chunked = false;
  private noBody = false;
  private keepAlive = true;
  private closed = false;
  private readonly closeListeners: Array<() => void> = [];

  constructor(private readonly conn: Http1Connection, readonly head: RequestHead) {}

  get socket(): TlsSocketLike { return this.conn.socket; }
  get method(): string { return this.head.method; }
  get headersSent(): boolean { return this.headSent; }
  /** The connection is gone or the exchange is over. */
  get finished(): boolean { return this.closed; }

  /** Called once when the exchange ends, completed or not. */
  onClose(cb: () => void): void {
    if (this.closed) cb();
    else this.closeListeners.push(cb);
  }

  /**
   * Writes the response head. `length` is the body's length when known (Content-Length is then
   * sent); otherwise HTTP/1.1 clients get chunked coding and HTTP/1.0 clients a close-delimited body.
   */
  respond(status: number, headers: ReadonlyArray<[string, string]>, length: number | undefined): void {
    if (this.headSent || this.closed) return;
    this.headSent = true;
    this.status = status;
    this.noBody = this.head.method === 'HEAD' || status === 204 || status === 304 || status < 200;
    let out = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    for (const [n, v] of headers) out += `${n}: ${v}\r\n`;
    if (!this.noBody) {
      if (length !== undefined) out += `content-length: ${length}\r\n`;
      else if (this.head.minor === 1) { out += 'transfer-encoding: chunked\r\n'; this.chunked = true; }
    }
    this.keepAlive = this.conn.mayKeepAlive(this, length !== undefined || this.chunked || this.noBody);
    out += this.keepAlive ? 'connection: keep-alive\r\n\r\n' : 'connection: close\r\n\r\n';
    this.conn.write(Buffer.from(out, 'latin1'), true);
  }

  /** Writes body bytes; false means the client is slow: wait for `onDrain`. */
  write(chunk: Buffer): boolean {
    if (!this.headSent || this.closed || this.noBody || chunk.length === 0) return true;
    this.bytes += chunk.length;
    if (!this.chunked) return this.conn.write(chunk, false);
    // Small chunks travel as one buffer: fewer writes, fewer TLS records.
    const size = Buffer.from(`${chunk.length.toString(16)}\r\n`, 'latin1');
    if (chunk.length <= 4096) return this.conn.write(Buffer.concat([size, chunk, CRLF]), false);
    this.conn.write(size, false);
    this.conn.write(chunk, false);
    return this.conn.write(CRLF, false);
  }

  /** Runs `cb` once the client has taken what was written. */
  onDrain(cb: () => void): void {
    this.conn.onDrain(cb);
  }

  /** Ends the response; the connection moves on to the next request or closes. */
  end(): void {
    if (!this.headSent || this.closed) return;
    if (this.chunked) this.conn.write(LAST_CHUNK, false);
    this.complete = true;
    this.close();
    this.conn.exchangeDone(this, this.keepAlive);
  }

  /** A short plain-text answer (errors, 404…). */
  reply(status: number, text: string, extra: ReadonlyArray<[string, string]> = []): void {
    replyText(this, status, text, extra);
  }

  /** Refuses the request (400, 405…) and closes the connection after the answer. */
  refuse(status: number, text: string): void {
    this.conn.closeAfterResponse();
    this.reply(status, text);
  }

  /** The response cannot be completed (upstream failed mid-body): drop the connection. */
  abort(): void {
    if (this.closed) return;
    this.close();
    this.conn.destroy();
  }

  /** Hands the raw socket over (a successful Upgrade); returns bytes the client sent after the head. */
  takeOver(): Buffer | null {
    this.headSent = true;
    this.complete = true;
    this.close();
    return this.conn.detach();
  }

  /** @internal the connection ended under this exchange. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const cb of this.closeListeners.splice(0)) cb();
  }
}

/** The HTTP/1.1 server side of one TLS connection. */
export class Http1Connection {
  /** Unparsed input: `buf` is contiguous; later chunks wait in `more` until a head needs them (no copy per chunk). */
  private buf: Buffer | null = null;
  private more: Buffer[] = [];
  private moreBytes = 0;
  private phase: Phase = 'head';
  private ex: Exchange | null = null;
  private decoder: BodyDecoder | null = null;
  private bodyPaused = false;
  private pipelinePaused = false;
  private corked = false;
  private parseScheduled = false;
  /** The connection closes after the response being written (a refused request). */
  private closing = false;
  /** Deadline (performance.now() ms) checked by the server's sweeper, and what it means. */
  deadline: number;
  private deadlineKind: 'headers' | 'idle' | 'request' | 'none' = 'idle';
  /** When the request being read must be complete (performance.now() ms); bodyIdleMs ticks inside it. */
  private requestDeadline = 0;
  private readonly onData = (chunk: Buffer) => this.received(chunk);

  constructor(
    readonly socket: TlsSocketLike, private readonly policy: Http1Policy, private readonly handler: Http1Handler,
    private readonly onGone: (c: Http1Connection) => void,
  ) {
    // A new connection must send its first request head within headersMs (slowloris).
    this.deadline = performance.now() + policy.headersMs;
    this.deadlineKind = 'headers';
    socket.on('data', this.onData);
    socket.on('end', () => this.peerEnded());
    socket.on('close', () => this.gone());
  }

  /** Idle between requests: nothing parsed, nothing pending (shutdown closes these at once). */
  get idle(): boolean {
    return this.phase === 'head' && this.buf === null && this.moreBytes === 0;
  }

  /** Closes the connection if it is idle; true when it did. */
  closeIfIdle(): boolean {
    if (!this.idle) return false;
    this.end();
    return true;
  }

  /** Called by the sweeper with the current time. */
  checkDeadline(now: number): void {
    if (this.deadlineKind === 'none' || now < this.deadline) return;
    const kind = this.deadlineKind;
    this.deadlineKind = 'none';
    if (kind === 'idle' || (kind === 'headers' && this.buffered === 0)) { this.end(); return; }
    if (this.ex?.headersSent) { this.destroy(); return; }
    this.fail(new HttpParseError(408, kind === 'headers' ? 'request head not received in time' : 'request body not received in time'));
  }

  // ---- reading ----

  /** Bytes read from the client and not parsed yet (pipelined requests). */
  get buffered(): number {
    return (this.buf?.length ?? 0) + this.moreBytes;
  }

  private append(chunk: Buffer): void {
    if (!this.buf) this.buf = chunk;
    else { this.more.push(chunk); this.moreBytes += chunk.length; }
  }

  private received(chunk: Buffer): void {
    switch (this.phase) {
      case 'head':
        this.append(chunk);
        if (this.deadlineKind === 'idle') this.setDeadline('headers', this.policy.headersMs);
        this.parse();
        return;
      case 'body':
        this.feedBody(chunk);
        return;
      case 'wait':
        this.append(chunk);
        if (this.buffered > PIPELINE_BUFFER && !this.pipelinePaused) {
          this.pipelinePaused = true;
          this.socket.pause();
        }
        return;
      default:
    }
  }

  /** Reads the socket again after a pipelining pause. */
  private resumePipeline(): void {
    if (!this.pipelinePaused) return;
    this.pipelinePaused = false;
    if (!this.bodyPaused) this.socket.resume();
  }

  private parse(): void {
    this.parseScheduled = false;
    if (this.phase !== 'head' || !this.buf) return;
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    let skip = 0;
    while (skip + 1 < this.buf.length && this.buf[skip] === 0x0d && this.buf[skip + 1] === 0x0a && skip < 8) skip += 2;
    if (skip > 0) this.buf = skip === this.buf.length ? null : this.buf.subarray(skip);
    if (!this.buf && this.more.length > 0) this.takeMore();
    if (!this.buf) return;
    let head: RequestHead;
    try {
      let end = headEnd(this.buf, this.policy.limits);
      if (end < 0 && this.more.length > 0) {
        // The head continues in later chunks: join them (once per chunk boundary, not per chunk).
        this.buf = Buffer.concat([this.buf, ...this.more]);
        this.more = [];
        this.moreBytes = 0;
        end = headEnd(this.buf, this.policy.limits);
      }
      if (end < 0) {
        this.resumePipeline(); // the rest of this head is still in the socket
        return;
      }
      head = parseHead(this.buf, end, this.policy.limits);
      this.buf = end === this.buf.length ? null : this.buf.subarray(end);
      if (!this.buf && this.more.length > 0) this.takeMore();
    } catch (err) {
      this.fail(err as HttpParseError);
      return;
    }
    const ex = new Exchange(this, head);
    this.ex = ex;
    if (head.body.kind === 'none') {
      this.phase = 'wait';
      this.deadlineKind = 'none';
    } else {
      this.phase = 'body';
      this.decoder = new BodyDecoder(head.body);
      ex.body = new Readable({ read: () => this.resumeBody() });
      // Destroyed with an error when the client breaks its framing or goes away; whoever reads it
      // (undici) sees that, but it may not be reading yet, and an unheard 'error' would throw.
      ex.body.on('error', () => undefined);
      this.setDeadline('request', this.policy.requestMs);
      this.requestDeadline = this.deadline;
      this.bodyProgress();
      const rest = this.buf;
      const later = this.more;
      this.buf = null;
      this.more = [];
      this.moreBytes = 0;
      if (rest) this.feedBody(rest);
      for (const c of later) if (this.phase === 'body') this.feedBody(c); else this.received(c);
    }
    if ((this.phase as Phase) === 'closed') return; // feedBody refused the body
    // Expect: 100-continue is answered by reading the body (RFC 9110 §10.1.1); other expectations fail.
    const expect = headerTokens(head.headers, 'expect');
    if (expect.length > 0) {
      if (expect.length !== 1 || expect[0] !== '100-continue') { ex.reply(417, 'only Expect: 100-continue is supported\n'); return; }
      if (head.minor === 1 && this.phase === 'body') this.write(Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1'), false);
    }
    this.handler.request(ex);
  }

  private feedBody(chunk: Buffer): void {
    const ex = this.ex!;
    let result: { payload: Buffer[]; consumed: number };
    try {
      result = this.decoder!.feed(chunk);
    } catch (err) {
      ex.body?.destroy(err as Error);
      if (ex.headersSent) this.destroy();
      else this.fail(err as HttpParseError);
      return;
    }
    for (const p of result.payload) {
      if (!ex.body!.push(p) && !this.bodyPaused) {
        this.bodyPaused = true;
        this.socket.pause();
      }
    }
    if (!this.decoder!.done) {
      this.bodyProgress();
      return;
    }
    ex.body!.push(null);
    this.decoder = null;
    this.deadlineKind = 'none';
    const rest = result.consumed < chunk.length ? chunk.subarray(result.consumed) : null;
    if (ex.finished) {
      // The response went out before the body was read; mayKeepAlive chose close then.
      return;
    }
    this.phase = 'wait';
    if (rest) this.received(rest);
  }

  private resumeBody(): void {
    if (!this.bodyPaused) return;
    this.bodyPaused = false;
    if (!this.pipelinePaused) this.socket.resume();
    this.bodyProgress();
  }

  /**
   * Body bytes arrived (or we read again): the client has bodyIdleMs for the next ones, within the
   * request's deadline (a body trickled a byte at a time holds a connection no longer than that).
   * While we are not reading (backpressure), only the request's deadline runs.
   */
  private bodyProgress(): void {
    if (this.phase !== 'body' || this.deadlineKind !== 'request') return;
    const idle = this.policy.bodyIdleMs;
    this.deadline = idle > 0 && !this.bodyPaused
      ? Math.min(this.requestDeadline, performance.now() + idle) : this.requestDeadline;
  }

  // ---- writing ----

  /** Whether the connection can stay open after this response. */
  mayKeepAlive(ex: Exchange, framed: boolean): boolean {
    if (!framed || this.closing || this.policy.draining || this.phase === 'body' || this.phase === 'closed') return false;
    const tokens = headerTokens(ex.head.headers, 'connection');
    return ex.head.minor === 1 ? !tokens.includes('close') : tokens.includes('keep-alive');
  }

  /** @internal the connection closes after the response being written. */
  closeAfterResponse(): void {
    this.closing = true;
  }

  /** @internal writes to the socket; the first write of a response corks until the end of the tick. */
  write(data: Buffer, startOfResponse: boolean): boolean {
    if (this.phase === 'closed' || this.phase === 'upgraded' || this.socket.destroyed) return true;
    if (startOfResponse && !this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => { this.corked = false; this.socket.uncork(); });
    }
    return this.socket.write(data);
  }

  /** @internal */
  onDrain(cb: () => void): void {
    if (this.socket.destroyed) return;
    this.socket.once('drain', cb);
  }

  /** @internal the response of `ex` was written. */
  exchangeDone(ex: Exchange, keepAlive: boolean): void {
    if (this.ex !== ex) return;
    this.ex = null;
    if (!keepAlive || this.phase === 'closed') { this.end(); return; }
    this.phase = 'head';
    if (this.buffered < PIPELINE_RESUME) this.resumePipeline();
    if (this.buffered > 0) {
      this.setDeadline('headers', this.policy.headersMs);
      // Later, not now: a response written synchronously would otherwise recurse per pipelined
      // request, and undici's Pool sees the upstream connection free again only a loop turn after
      // the response ended (measured: parsing one turn later opened a second upstream connection
      // and alternated between the two; two turns later reuses one).
      if (!this.parseScheduled) {
        this.parseScheduled = true;
        setImmediate(() => setImmediate(() => this.parse()));
      }
    } else this.setDeadline('idle', this.policy.idleMs);
  }

  // ---- ending ----

  /** Answers a bad request itself and closes. */
  private fail(err: HttpParseError): void {
    const status = err instanceof HttpParseError ? err.status : 400;
    this.handler.clientError(this.socket, status, err.message);
    this.phase = 'wait';
    this.closing = true;
    const ex = this.ex && !this.ex.headersSent ? this.ex : new Exchange(this, { method: 'GET', target: '', minor: 1, headers: [], body: { kind: 'none' }, size: 0 });
    this.ex = ex;
    this.buf = null;
    this.more = [];
    this.moreBytes = 0;
    ex.reply(status, `${status} ${STATUS_CODES[status] ?? ''}: ${err.message}\n`);
    this.end(true);
  }

  /** Moves the waiting chunks into `buf` (it was used up). */
  private takeMore(): void {
    this.buf = this.more.length === 1 ? this.more[0]! : Buffer.concat(this.more, this.moreBytes);
    this.more = [];
    this.moreBytes = 0;
  }

  private setDeadline(kind: 'headers' | 'idle' | 'request', ms: number): void {
    this.deadlineKind = kind;
    this.deadline = performance.now() + ms;
  }

  /**
   * Graceful close: what was written goes out, then close_notify and FIN. `linger`: keep reading
   * and dropping what the client still sends for a while (after a refusal it may be mid-request).
   */
  end(linger = false): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.deadlineKind = 'none';
    this.socket.off('data', this.onData);
    this.ex?.close();
    const s = this.socket as TlsSocketLike & { destroySoon?: () => void };
    if (linger && !s.destroyed) {
      s.on('data', () => undefined);
      s.resume();
      s.end();
      setTimeout(() => s.destroy(), LINGER_MS).unref();
    } else if (typeof s.destroySoon === 'function') s.destroySoon();
    else s.end();
  }

  /** @internal abrupt close. */
  destroy(): void {
    this.phase = 'closed';
    this.deadlineKind = 'none';
    this.socket.destroy();
  }

  /** @internal an Upgrade took the socket. */
  detach(): Buffer | null {
    this.phase = 'upgraded';
    this.deadlineKind = 'none';
    this.ex = null;
    this.socket.off('data', this.onData);
    if (this.pipelinePaused || this.bodyPaused) this.socket.resume();
    const rest = this.moreBytes > 0 ? Buffer.concat([this.buf!, ...this.more]) : this.buf;
    this.buf = null;
    this.more = [];
    this.moreBytes = 0;
    this.onGone(this);
    return rest;
  }

  private peerEnded(): void {
    // The client finished sending. A request still being answered is abandoned (the client is
    // gone or half-closed), as an abort of the upstream request.
    if (this.phase === 'upgraded') return;
    if (this.ex && !this.ex.finished) this.ex.body?.destroy(new Error('client closed the connection'));
    this.end();
  }

  private gone(): void {
    if (this.phase !== 'upgraded') this.phase = 'closed';
    this.deadlineKind = 'none';
    if (this.ex) {
      this.ex.body?.destroy(new Error('client connection closed'));
      this.ex.close();
      this.ex = null;
    }
    this.onGone(this);
  }
}
