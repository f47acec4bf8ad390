// TlsSocket: a stream.Duplex over a TCP socket and a sans-IO ServerConnection, shaped like
// node's tls.TLSSocket so proxy/'s HTTP layer (and node's http.Server) run over it unchanged. It drives the
// asynchronous signature (AbortController + deadline), the handshake timeout, backpressure
// in both directions, and publishes one handshake observation.
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { HandshakeShedError, type AdmittedConnection } from './admit.js';
import { TlsAlertError, TlsError, alertName } from './alert.js';
import type { PeerIdentity } from './client-auth.js';
import type { ConnectionEvent, ServerConnection } from './connection.js';
import type { SignRequest } from './handshake13.js';
import type { SignContext } from './signer.js';
import { publishHandshake, type HandshakeObservation } from './observe.js';
import type { RemotePeer } from './server.js';
import { groupName } from './suites.js';

const LINGER_MS = 2000;
// Application data held for the end of the turn before it is sealed and written at once.
const FLUSH_AT = 64 * 1024;
// Up to this size a batch of records is copied into one buffer; above, it goes out as a writev.
const COALESCE_COPY = 32 * 1024;
// How long TLS 1.3 tickets wait for application data to travel with.
const TICKET_HOLD_MS = 50;
// The reason a connection ends when its socket is destroyed; shared: an Error's stack costs per connection.
const SOCKET_DESTROYED = new TlsError('socket destroyed', 'TLS_ERR_CLOSED');

function flushSoon(socket: TlsSocket): void {
  socket.flush();
}

/** Per-socket timing policy. */
export interface TlsSocketOptions {
  signTimeoutMs: number;
  handshakeTimeoutMs: number;
  listener?: string;
  /** Keep the writable side open after the peer ends (default false, as node:tls). */
  allowHalfOpen?: boolean;
  /** Observer called once per handshake, in addition to the diagnostics channel. */
  onHandshake?: (o: HandshakeObservation) => void;
  /**
   * When the server flight leaves around the asynchronous signature: 'whole' (default) after
   * CertificateVerify, in one write; 'split' ServerHello..Certificate first, the rest after it.
   */
  serverFlight?: 'whole' | 'split';
  /** TLS 1.3 tickets wait up to this long to leave with the first application data (default 50; 0 = at once). */
  ticketHoldMs?: number;
  /**
   * The client's address when the TCP peer is a balancer that said who the client is (PROXY
   * protocol): remoteAddress/remotePort/remoteFamily report it; transportRemoteAddress the balancer.
   */
  client?: RemotePeer;
  /** Admission's handle on this connection: it may shed a full handshake; signatures name its client. */
  admitted?: AdmittedConnection;
}

/** A TLS 1.3 / 1.2 server-side socket (encrypted = true), usable wherever a net.Socket is. */
export class TlsSocket extends Duplex {
  readonly encrypted = true;
  private readonly started = performance.now();
  private signWaitMs = 0;
  private signAbort: AbortController | null = null;
  private signTimer: NodeJS.Timeout | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private observed = false;
  private signFailed = false;
  /** We sent a fatal alert: the close reads the peer's remaining input first (see closeTransport). */
  private alertSent = false;
  private readPaused = false;
  private eof = false;
  /** Ciphertext not yet given to TCP, in sealing order; it leaves in one write per flush. */
  private outq: Buffer[] = [];
  private outqBytes = 0;
  /** Application data accepted but not yet sealed: a turn's writes share records. */
  private plain: Buffer[] = [];
  private plainBytes = 0;
  private flushQueued = false;
  private flightTimer: NodeJS.Immediate | null = null;
  /** TLS 1.3 NewSessionTickets held back to leave with the first application data. */
  private ticketTimer: NodeJS.Timeout | null = null;

  private readonly ticketHoldMs: number;
  private readonly signContext: SignContext;

  constructor(
    private readonly raw: Socket,
    private readonly conn: ServerConnection,
    private readonly opts: TlsSocketOptions,
  ) {
    super({ allowHalfOpen: opts.allowHalfOpen ?? false, emitClose: true });
    this.ticketHoldMs = opts.ticketHoldMs ?? TICKET_HOLD_MS;
    const admitted = opts.admitted;
    // deadlineMs: this socket aborts the signature at its own deadline, so the signer needs no timer of its own.
    if (admitted) {
      conn.admitFull = () => admitted.fullHandshake();
      this.signContext = { client: admitted.client, deadlineMs: opts.signTimeoutMs };
    } else {
      this.signContext = { deadlineMs: opts.signTimeoutMs };
    }
    raw.on('data', (chunk: Buffer) => this.receive(chunk));
    raw.on('end', () => this.onTransportEnd());
    raw.on('error', (err) => this.onTransportEnd(err));
    raw.on('close', () => this.onTransportEnd());
    raw.on('timeout', () => this.emit('timeout'));
    if (opts.handshakeTimeoutMs > 0) {
      this.handshakeTimer = setTimeout(() => this.onHandshakeTimeout(), opts.handshakeTimeoutMs);
      this.handshakeTimer.unref?.();
    }
  }

  /** SNI host name the client sent (lower case), if any. */
  get servername(): string | false { return this.conn.negotiated.servername ?? false; }
  /** Negotiated ALPN protocol, or false. */
  get alpnProtocol(): string | false { return this.conn.negotiated.alpn ?? false; }
  /** The client's address: the TCP peer's, or the one a balancer told (TlsSocketOptions.client). */
  get remoteAddress(): string | undefined {
    return this.opts.client ? this.opts.client.address : this.raw.remoteAddress;
  }
  get remotePort(): number | undefined { return this.opts.client ? this.opts.client.port : this.raw.remotePort; }
  get remoteFamily(): string | undefined { return this.opts.client ? this.opts.client.family : this.raw.remoteFamily; }
  /** The TCP peer's address (the balancer's, when TlsSocketOptions.client is set). */
  get transportRemoteAddress(): string | undefined { return this.raw.remoteAddress; }
  get localAddress(): string | undefined { return this.raw.localAddress; }
  get localPort(): number | undefined { return this.raw.localPort; }
  get bytesRead(): number { return this.raw.bytesRead; }
  get bytesWritten(): number { return this.raw.bytesWritten; }
  /** The connection core (for diagnostics and tests). */
  get connection(): ServerConnection { return this.conn; }

  /** 'TLSv1.3' or 'TLSv1.2' once negotiated, else null. */
  getProtocol(): string | null { return this.conn.negotiated.suite?.version ?? null; }
  /** The cipher suite, named as node:tls names it (OpenSSL's name for TLS 1.2 suites). */
  getCipher(): { name: string; standardName: string; version: string } | undefined {
    const s = this.conn.negotiated.suite;
    if (!s) return undefined;
    return { name: 'opensslName' in s ? String(s.opensslName) : s.name, standardName: s.name, version: s.version };
  }
  isSessionReused(): boolean { return this.conn.negotiated.resumed; }
  /** The client's verified certificate identity (mTLS), or undefined without one. */
  get peerIdentity(): PeerIdentity | undefined { return this.conn.established ? this.conn.negotiated.peer : undefined; }
  /** True when the client's certificate verified (as node:tls; false under optional mode without one). */
  get authorized(): boolean { return this.peerIdentity !== undefined; }
  /** Why `authorized` is false, in node:tls terms (a bad certificate never gets this far: its handshake fails). */
  get authorizationError(): string | undefined { return this.authorized ? undefined : 'NO_PEER_CERTIFICATE'; }
  /** The client certificate in a reduced node:tls shape ({} without one, as node:tls). */
  getPeerCertificate(): {
    subject: string; issuer: string; subjectaltname: string; fingerprint256: string; serialNumber: string; raw: Buffer;
  } | Record<string, never> {
    const p = this.peerIdentity;
    if (!p) return {};
    return { subject: p.subject, issuer: p.issuer, subjectaltname: p.sans.join(', '), fingerprint256: p.fingerprint256, serialNumber: p.serialNumber, raw: p.chain[0]! };
  }

  setTimeout(ms: number, cb?: () => void): this {
    if (cb) this.once('timeout', cb);
    this.raw.setTimeout(ms);
    return this;
  }
  setNoDelay(noDelay?: boolean): this { this.raw.setNoDelay(noDelay); return this; }
  setKeepAlive(enable?: boolean, delay?: number): this { this.raw.setKeepAlive(enable, delay); return this; }
  ref(): this { this.raw.ref(); return this; }
  unref(): this { this.raw.unref(); return this; }
  address(): ReturnType<Socket['address']> { return this.raw.address(); }

  // ---- driving the connection ----

  /** @internal Bytes from the transport (or read ahead of TLS by the server's gate). */
  receive(chunk: Buffer): void {
    this.conn.feed(chunk);
    this.drive();
  }

  private drive(): void {
    // 'whole': while the signature is pending, EncryptedExtensions..Certificate stay unsealed in the
    // connection, to share one record with CertificateVerify and Finished.
    if (this.opts.serverFlight === 'split' || !this.conn.awaitingSignature) this.collect();
    this.drainEvents();
    if (this.outqBytes === 0 || this.raw.destroyed) return;
    if (!this.conn.established) {
      if (!this.conn.awaitingSignature) this.scheduleFlush();
      // 'split': ServerHello..Certificate leave at the end of this loop turn (an answer that came at
      // once shares their write); 'whole': they wait for CertificateVerify, one write per flight.
      else if (this.opts.serverFlight === 'split' && !this.flightTimer) this.flightTimer = setImmediate(flushSoon, this);
      return;
    }
    // TLS 1.3 tickets wait for the first application data (or the ticket timer): one write for both.
    if (!this.ticketTimer) this.scheduleFlush();
  }

  private drainEvents(): void {
    for (const ev of this.conn.takeEvents()) this.onEvent(ev);
  }

  /** Moves what the connection sealed into the output queue (sealing order = wire order). */
  private collect(): void {
    const out = this.conn.takeOutput();
    if (out) {
      this.outq.push(out);
      this.outqBytes += out.length;
    }
  }

  private scheduleFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    process.nextTick(flushSoon, this);
  }

  /** @internal Seals the application data of this turn and gives everything queued to TCP in one write. */
  flush(): void {
    this.flushQueued = false;
    if (this.ticketTimer) { clearTimeout(this.ticketTimer); this.ticketTimer = null; }
    if (this.flightTimer) { clearImmediate(this.flightTimer); this.flightTimer = null; }
    if (this.plainBytes > 0) this.sealPlain();
    this.collect();
    const q = this.outq;
    const bytes = this.outqBytes;
    this.outq = [];
    this.outqBytes = 0;
    if (bytes > 0 && !this.raw.destroyed) {
      if (q.length === 1 || bytes <= COALESCE_COPY) this.raw.write(q.length === 1 ? q[0]! : Buffer.concat(q, bytes));
      else {
        // Large batches: one writev instead of a copy.
        this.raw.cork();
        for (const b of q) this.raw.write(b);
        this.raw.uncork();
      }
    }
    if (this.conn.error && !this.destroyed) this.drainEvents(); // sealing failed: the 'fatal' event
  }

  private sealPlain(): void {
    const data = this.plain.length === 1 ? this.plain[0]! : Buffer.concat(this.plain, this.plainBytes);
    this.plain = [];
    this.plainBytes = 0;
    if (this.conn.error) return; // dead: nothing more goes out (its alert already went)
    try {
      this.conn.writeApplicationData(data);
    } catch {
      // The connection failed (an exhausted key): its alert is queued and its 'fatal' event follows.
    }
  }

  private onEvent(ev: ConnectionEvent): void {
    switch (ev.type) {
      case 'sign': return this.startSign(ev.request);
      case 'handshake':
        this.clearHandshakeTimer();
        if (this.outqBytes > 0 && this.conn.negotiated.suite?.version === 'TLSv1.3' && this.ticketHoldMs > 0) {
          this.ticketTimer = setTimeout(flushSoon, this.ticketHoldMs, this);
          this.ticketTimer.unref?.();
        }
        this.observe('ok');
        this.emit('secure');
        return;
      case 'data':
        if (!this.push(ev.data) && !this.readPaused) {
          this.readPaused = true; // backpressure: stop reading TCP until _read asks again
          this.raw.pause();
        }
        return;
      case 'close_notify':
        if (!this.conn.established) { this.failHandshake(new TlsError('peer closed during the handshake', 'TLS_ERR_CLOSED'), 'closed'); return; }
        this.pushEof();
        return;
      case 'fatal': {
        const err = ev.error;
        const received = err instanceof TlsAlertError && err.received;
        const result = this.signFailed ? 'sign_error' : err instanceof HandshakeShedError ? 'shed'
          : err instanceof TlsAlertError ? (received ? 'alert_received' : 'alert_sent') : 'closed';
        if (!this.conn.established) return this.failHandshake(err, result);
        this.alertSent = err instanceof TlsAlertError && !received;
        this.flush();
        this.raw.end(); // the alert, then FIN
        this.destroy(err);
      }
    }
  }

  private startSign(req: SignRequest): void {
    const ac = new AbortController();
    this.signAbort = ac;
    const t0 = performance.now();
    const settle = (): boolean => {
      if (this.signTimer) clearTimeout(this.signTimer);
      this.signTimer = null;
      this.signAbort = null;
      this.signWaitMs += performance.now() - t0;
      return !this.destroyed;
    };
    this.signTimer = setTimeout(() => {
      ac.abort(new TlsError('signature deadline exceeded', 'TLS_ERR_SIGN_TIMEOUT'));
      if (!settle()) return;
      this.signFailed = true;
      this.conn.failSignature(req.epoch, `no signature within ${this.opts.signTimeoutMs} ms`);
      this.drive();
    }, this.opts.signTimeoutMs);
    req.signer.sign(req.scheme, req.content, ac.signal, this.signContext).then((sig) => {
      if (ac.signal.aborted || !settle()) return; // late result for a dead handshake: dropped
      this.conn.resumeWithSignature(req.epoch, sig);
      this.drive();
    }, (err: unknown) => {
      if (ac.signal.aborted || !settle()) return;
      this.signFailed = true;
      this.conn.failSignature(req.epoch, err);
      this.drive();
    });
  }

  private onHandshakeTimeout(): void {
    this.handshakeTimer = null;
    if (this.conn.established || this.destroyed) return;
    const err = new TlsError(`handshake not completed within ${this.opts.handshakeTimeoutMs} ms`, 'TLS_ERR_HANDSHAKE_TIMEOUT');
    this.conn.abort(err);
    this.failHandshake(err, 'timeout');
  }

  private failHandshake(err: TlsError, result: HandshakeObservation['result']): void {
    const alert = err instanceof TlsAlertError ? alertName(err.alert) : undefined;
    this.alertSent = err instanceof TlsAlertError && !err.received;
    this.observe(result, alert, err instanceof HandshakeShedError ? err.reason : undefined);
    this.emit('handshakeError', err);
    if (!this.raw.destroyed) {
      this.flush(); // what was queued, the alert last
      this.raw.end();
    }
    // No 'error' event before the handshake: the socket is not the user's yet (tlsClientError instead).
    this.destroy();
  }

  private onTransportEnd(err?: Error): void {
    if (!this.conn.established) {
      if (!this.observed && !this.destroyed) this.failHandshake(new TlsError(err ? `transport error: ${err.message}` : 'peer closed during the handshake', 'TLS_ERR_CLOSED'), 'closed');
      return;
    }
    if (err) { this.destroy(err); return; }
    // FIN without close_notify: end of stream, as node:tls treats it.
    this.pushEof();
    if (this.raw.destroyed && !this.destroyed) this.destroy();
  }

  private pushEof(): void {
    if (this.eof) return;
    this.eof = true;
    this.push(null);
  }

  private observe(result: HandshakeObservation['result'], alert?: string, reason?: string): void {
    if (this.observed) return;
    this.observed = true;
    const n = this.conn.negotiated;
    const o: HandshakeObservation = {
      version: n.suite?.version ?? 'TLSv1.3', suite: n.suite?.name ?? '', group: n.group ? groupName(n.group) : '', keyType: n.keyType ?? '',
      resumed: n.resumed, result, durationMs: performance.now() - this.started, signWaitMs: this.signWaitMs,
    };
    if (alert) o.alert = alert;
    if (n.credential) o.credential = n.credential;
    if (reason) o.reason = reason;
    if (n.servername) o.servername = n.servername;
    if (this.conn.config.clientAuth) o.clientCert = n.peer && result === 'ok' ? { subject: n.peer.subject, fingerprint256: n.peer.fingerprint256 } : null;
    if (this.opts.listener) o.listener = this.opts.listener;
    publishHandshake(o);
    this.opts.onHandshake?.(o);
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  // ---- stream.Duplex ----

  override _read(): void {
    if (this.readPaused) {
      this.readPaused = false;
      this.raw.resume();
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this._writev([{ chunk }], cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    if (!this.conn.established) {
      cb(this.conn.error ?? new TlsError('handshake not complete', 'TLS_ERR_NOT_ESTABLISHED'));
      return;
    }
    // Sealed at the end of the turn: writes of one turn (an HTTP head and its body, a chunk and
    // its framing) share records and one socket write.
    for (const { chunk } of chunks) {
      if (chunk.length === 0) continue;
      this.plain.push(chunk);
      this.plainBytes += chunk.length;
    }
    if (this.plainBytes >= FLUSH_AT) this.flush();
    else this.scheduleFlush();
    if (this.conn.error) cb(this.conn.error);
    else if (this.raw.writableNeedDrain) this.raw.once('drain', () => cb()); // backpressure: wait for TCP
    else cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    // close_notify after the last data, in the same write.
    if (this.plainBytes > 0) this.sealPlain();
    this.conn.close();
    this.flush();
    // 'finish' (and so destroySoon) must wait until TCP took everything, close_notify included.
    this.raw.end(() => cb());
  }

  /** Ends, then destroys once everything is written (as net.Socket.destroySoon). */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.clearHandshakeTimer();
    // What was accepted before destroy() still leaves, as with net.Socket (already in the kernel there).
    if (this.outqBytes > 0 || this.plainBytes > 0) this.flush();
    if (this.ticketTimer) { clearTimeout(this.ticketTimer); this.ticketTimer = null; }
    if (this.flightTimer) { clearImmediate(this.flightTimer); this.flightTimer = null; }
    if (this.signTimer) clearTimeout(this.signTimer);
    this.signTimer = null;
    this.signAbort?.abort(new TlsError('connection closed', 'TLS_ERR_CLOSED'));
    this.signAbort = null;
    if (!this.conn.error) this.conn.abort(SOCKET_DESTROYED);
    this.closeTransport();
    cb(err);
  }

  // Lets queued bytes (a fatal alert, the tail of a response) reach the peer, but never waits
  // longer than LINGER_MS on a peer that does not read.
  private closeTransport(): void {
    const raw = this.raw;
    if (raw.destroyed) return;
    if (this.alertSent) return lingerAfterAlert(raw);
    if (raw.writableLength === 0) { raw.destroy(); return; }
    if (!raw.writableEnded) raw.end();
    const timer = setTimeout(() => raw.destroy(), LINGER_MS);
    timer.unref?.();
    raw.once('finish', () => { clearTimeout(timer); raw.destroy(); });
  }
}

function discard(): void { /* input after our fatal alert is read and dropped */ }

// After a fatal alert the peer may still be sending (a TLS 1.3 client sends its request right after
// its Finished, before it can see a certificate_required alert). Closing with that input unread makes
// the kernel answer with RST, and a client that meets the RST first reports a reset (or curl's
// "getpeername() failed") instead of the alert. So: the alert and FIN, then read and drop until the
// peer closes too, for at most LINGER_MS.
function lingerAfterAlert(raw: Socket): void {
  if (!raw.writableEnded) raw.end();
  const timer = setTimeout(() => raw.destroy(), LINGER_MS);
  timer.unref?.();
  raw.removeAllListeners('data');
  raw.on('data', discard);
  raw.once('end', () => raw.destroy());
  raw.once('close', () => clearTimeout(timer));
  raw.resume();
}
