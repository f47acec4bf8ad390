// TlsSocket: a stream.Duplex over a TCP socket and a sans-IO ServerConnection, shaped like
// node's tls.TLSSocket so proxy/'s HTTP layer (and node's http.Server) run over it unchanged. It drives the
// asynchronous signature (AbortController + deadline), the handshake timeout, backpressure
// in both directions, and publishes one handshake observation.
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { TlsAlertError, TlsError, alertName } from './alert.js';
import type { PeerIdentity } from './client-auth.js';
import type { ConnectionEvent, ServerConnection } from './connection.js';
import type { SignRequest } from './handshake13.js';
import { publishHandshake, type HandshakeObservation } from './observe.js';
import { groupName } from './suites.js';

const LINGER_MS = 2000;
// The plaintext of one full record (RFC 8446 §5.1).
const MAX_COALESCE = 16_384;

/** Per-socket timing policy. */
export interface TlsSocketOptions {
  signTimeoutMs: number;
  handshakeTimeoutMs: number;
  listener?: string;
  /** Keep the writable side open after the peer ends (default false, as node:tls). */
  allowHalfOpen?: boolean;
  /** Observer called once per handshake, in addition to the diagnostics channel. */
  onHandshake?: (o: HandshakeObservation) => void;
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
  private readPaused = false;
  private eof = false;
  private corked = false;

  constructor(private readonly raw: Socket, private readonly conn: ServerConnection, private readonly opts: TlsSocketOptions) {
    super({ allowHalfOpen: opts.allowHalfOpen ?? false, emitClose: true });
    raw.on('data', (chunk: Buffer) => { this.conn.feed(chunk); this.drive(); });
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
  get remoteAddress(): string | undefined { return this.raw.remoteAddress; }
  get remotePort(): number | undefined { return this.raw.remotePort; }
  get remoteFamily(): string | undefined { return this.raw.remoteFamily; }
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
  /** True when the client presented a certificate that verified (as node:tls; false under optional mode without one). */
  get authorized(): boolean { return this.peerIdentity !== undefined; }
  /** Why `authorized` is false, in node:tls terms (a bad certificate never gets this far: its handshake fails). */
  get authorizationError(): string | undefined { return this.authorized ? undefined : 'NO_PEER_CERTIFICATE'; }
  /** The client certificate in a reduced node:tls shape ({} without one, as node:tls). */
  getPeerCertificate(): { subject: string; issuer: string; subjectaltname: string; fingerprint256: string; serialNumber: string; raw: Buffer } | Record<string, never> {
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

  private drive(): void {
    const out = this.conn.takeOutput();
    if (out && !this.raw.destroyed) {
      // During the handshake, hold writes until the end of this event-loop turn: a signer that
      // answers at once (in-process, cached) then shares one writev with SH..Certificate, while a
      // slow HSM still sees the first half of the flight leave before it answers.
      if (!this.conn.established && !this.corked) {
        this.corked = true;
        this.raw.cork();
        setImmediate(() => { this.corked = false; this.raw.uncork(); });
      }
      this.raw.write(out);
    }
    for (const ev of this.conn.takeEvents()) this.onEvent(ev);
  }

  private onEvent(ev: ConnectionEvent): void {
    switch (ev.type) {
      case 'sign': return this.startSign(ev.request);
      case 'handshake':
        this.clearHandshakeTimer();
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
        const result = this.signFailed ? 'sign_error' : err instanceof TlsAlertError ? (received ? 'alert_received' : 'alert_sent') : 'closed';
        if (!this.conn.established) return this.failHandshake(err, result);
        this.raw.end(); // the alert (already written) then FIN
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
    req.signer.sign(req.scheme, req.content, ac.signal).then((sig) => {
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
    this.observe(result, err instanceof TlsAlertError ? alertName(err.alert) : undefined);
    this.emit('handshakeError', err);
    if (!this.raw.destroyed) this.raw.end();
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

  private observe(result: HandshakeObservation['result'], alert?: string): void {
    if (this.observed) return;
    this.observed = true;
    const n = this.conn.negotiated;
    const o: HandshakeObservation = {
      version: n.suite?.version ?? 'TLSv1.3', suite: n.suite?.name ?? '', group: n.group ? groupName(n.group) : '', keyType: n.keyType ?? '',
      resumed: n.resumed, result, durationMs: performance.now() - this.started, signWaitMs: this.signWaitMs,
    };
    if (alert) o.alert = alert;
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
    try {
      // Small writes of one batch (an HTTP head and its body, a chunk and its framing) share one
      // record: fewer AEAD seals and fewer bytes than a record per write.
      let batch: Buffer[] = [];
      let size = 0;
      for (const { chunk } of chunks) {
        if (size + chunk.length > MAX_COALESCE && batch.length > 0) {
          this.conn.writeApplicationData(batch.length === 1 ? batch[0]! : Buffer.concat(batch, size));
          batch = [];
          size = 0;
        }
        batch.push(chunk);
        size += chunk.length;
      }
      if (batch.length > 0) this.conn.writeApplicationData(batch.length === 1 ? batch[0]! : Buffer.concat(batch, size));
    } catch (e) {
      cb(e as Error);
      return;
    }
    const out = this.conn.takeOutput();
    if (!out || this.raw.write(out)) cb();
    else this.raw.once('drain', () => cb()); // backpressure: the next write waits for TCP
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.conn.close();
    const out = this.conn.takeOutput();
    if (out) this.raw.write(out);
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
    if (this.signTimer) clearTimeout(this.signTimer);
    this.signTimer = null;
    this.signAbort?.abort(new TlsError('connection closed', 'TLS_ERR_CLOSED'));
    this.signAbort = null;
    if (!this.conn.error) this.conn.abort(new TlsError('socket destroyed', 'TLS_ERR_CLOSED'));
    this.closeTransport();
    cb(err);
  }

  // Lets queued bytes (a fatal alert, the tail of a response) reach the peer, but never waits
  // longer than LINGER_MS on a peer that does not read.
  private closeTransport(): void {
    const raw = this.raw;
    if (raw.destroyed) return;
    if (raw.writableLength === 0) { raw.destroy(); return; }
    if (!raw.writableEnded) raw.end();
    const timer = setTimeout(() => raw.destroy(), LINGER_MS);
    timer.unref?.();
    raw.once('finish', () => { clearTimeout(timer); raw.destroy(); });
  }
}
