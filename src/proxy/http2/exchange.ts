// One HTTP/2 stream as a ProxyExchange: the request pseudo-header fields mapped onto the same
// RequestHead the HTTP/1.1 parser produces (so routing and header policy are the same code), the
// request body as a Readable with backpressure into the stream's flow-control window, and the
// response written as HEADERS, DATA and trailers (RFC 9113 §8.1).
import http2, { type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { Readable } from 'node:stream';
import { replyText, type ProxyExchange, type Trailers } from '../exchange.js';
import { HttpParseError, type RequestHead } from '../http1/parse.js';
import type { TlsSocketLike } from '../listener.js';

const { NGHTTP2_INTERNAL_ERROR, HTTP2_HEADER_METHOD, HTTP2_HEADER_PATH, HTTP2_HEADER_AUTHORITY } = http2.constants;

// RFC 9113 §8.2.2: fields that are specific to one HTTP/1.1 connection never travel in HTTP/2
// (node:http2 refuses to send them). The forwarder drops them from responses already; trailers
// are filtered here, with the pseudo-header fields an upstream cannot dictate.
const TRAILER_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'content-length', 'host']);

/**
 * The RequestHead of an HTTP/2 request. nghttp2 has already checked the pseudo-header fields
 * (present, once, before regular fields) and refused connection-specific fields (§8.2.2);
 * what is left is the Host/:authority rule of §8.3.1.
 */
export function requestHead(headers: http2.IncomingHttpHeaders, endStream: boolean): RequestHead {
  const method = String(headers[HTTP2_HEADER_METHOD] ?? '');
  const target = String(headers[HTTP2_HEADER_PATH] ?? '');
  const authority = headers[HTTP2_HEADER_AUTHORITY];
  const host = headers.host;
  // §8.3.1: a Host that names another entity than :authority makes the request malformed.
  if (authority !== undefined && host !== undefined && String(host).toLowerCase() !== String(authority).toLowerCase()) {
    throw new HttpParseError(400, 'Host and :authority disagree');
  }
  const list: Array<[string, string]> = [];
  const hostValue = authority ?? host;
  if (hostValue !== undefined) list.push(['host', String(hostValue)]);
  let size = method.length + target.length;
  let length: number | undefined;
  for (const name in headers) {
    if (name.charCodeAt(0) === 0x3a || name === 'host') continue; // pseudo-header fields, Host (above)
    const v = headers[name];
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) {
      list.push([name, one]);
      size += name.length + one.length;
    }
    if (name === 'content-length') length = Number(v);
  }
  // nghttp2 checks that the DATA frames add up to a Content-Length (§8.1.1), so it frames the body.
  const body: RequestHead['body'] = endStream ? { kind: 'none' }
    : length !== undefined && Number.isSafeInteger(length) ? { kind: 'length', length } : { kind: 'chunked' };
  return { method, target, minor: 1, headers: list, body, size };
}

/** One request on an HTTP/2 stream and its response. */
export class H2Exchange implements ProxyExchange {
  readonly protocol = 'h2';
  body: Readable | null = null;
  readonly start = performance.now();
  bytes = 0;
  status = 0;
  complete = false;
  /** We reset the stream (upstream failure), so its close is not the client's reset. */
  resetSent = false;
  private headSent = false;
  private noBody = false;
  private closed = false;
  private trailers: Trailers | undefined;
  /** Response fields held for one turn of the loop (see respond). */
  private pendingHead: OutgoingHttpHeaders | undefined;
  private readonly closeListeners: Array<() => void> = [];

  /**
   * `bodyIdleMs`: the longest silence inside the request body while we are reading it (0: none);
   * past it the client gets 408 (or, once the response has started, a reset stream).
   */
  constructor(
    readonly stream: ServerHttp2Stream, readonly head: RequestHead, readonly socket: TlsSocketLike, bodyIdleMs = 0,
  ) {
    if (head.body.kind !== 'none') this.body = requestBody(stream, bodyIdleMs, () => this.bodyStalled());
    stream.once('close', () => this.close());
    // Trailers are known only once the upstream's body has ended (waitForTrailers).
    stream.on('wantTrailers', () => {
      try {
        stream.sendTrailers(this.trailers ? trailerFields(this.trailers) : {});
      } catch {
        this.resetSent = true;
        stream.close(NGHTTP2_INTERNAL_ERROR);
      }
    });
  }

  get headersSent(): boolean { return this.headSent; }
  get finished(): boolean { return this.closed; }

  onClose(cb: () => void): void {
    if (this.closed) cb();
    else this.closeListeners.push(cb);
  }

  respond(status: number, headers: ReadonlyArray<[string, string]>, length: number | undefined): void {
    if (this.headSent || this.closed || this.stream.destroyed) return;
    this.headSent = true;
    this.status = status;
    this.noBody = this.head.method === 'HEAD' || status === 204 || status === 304;
    const out: OutgoingHttpHeaders = { ':status': status };
    for (const [n, v] of headers) {
      const cur = out[n];
      if (cur === undefined) out[n] = v;
      else if (Array.isArray(cur)) cur.push(v);
      else out[n] = [String(cur), v];
    }
    if (length !== undefined && !this.noBody) out['content-length'] = String(length);
    if (this.noBody) {
      this.send(out, true);
      this.done();
      return;
    }
    // An upstream answer that ends right after its head (gRPC's Trailers-Only form, where
    // grpc-status is in the head) must reach the client as one HEADERS frame with END_STREAM:
    // hold the head for one turn of the loop to see whether the end follows at once.
    this.pendingHead = out;
    setImmediate(() => this.flushHead());
  }

  private flushHead(): void {
    const out = this.pendingHead;
    if (!out || this.closed) return;
    this.pendingHead = undefined;
    this.send(out, false);
  }

  private send(out: OutgoingHttpHeaders, endStream: boolean): void {
    if (this.stream.destroyed) return;
    try {
      this.stream.respond(out, { endStream, waitForTrailers: !endStream });
    } catch {
      // A field value node:http2 will not send (it checks what nghttp2 would refuse).
      this.abort();
    }
  }

  write(chunk: Buffer): boolean {
    if (!this.headSent || this.closed || this.noBody || chunk.length === 0) return true;
    this.flushHead();
    this.bytes += chunk.length;
    return this.stream.write(chunk);
  }

  onDrain(cb: () => void): void {
    if (this.closed) return;
    this.stream.once('drain', cb);
  }

  end(trailers?: Trailers): void {
    if (!this.headSent || this.closed) return;
    if (this.noBody) return;
    if (this.pendingHead && (!trailers || Object.keys(trailers).length === 0)) {
      const out = this.pendingHead;
      this.pendingHead = undefined;
      this.send(out, true);
      this.done();
      return;
    }
    this.flushHead();
    this.trailers = trailers;
    if (!this.stream.destroyed) this.stream.end();
    this.done();
  }

  reply(status: number, text: string, extra: ReadonlyArray<[string, string]> = []): void {
    replyText(this, status, text, extra);
  }

  /** HTTP/2 refuses a request on its own stream; the connection and its other streams carry on. */
  refuse(status: number, text: string): void {
    this.reply(status, text);
  }

  abort(): void {
    if (this.closed) return;
    this.close();
    this.resetSent = true;
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_INTERNAL_ERROR);
  }

  /** HTTP/2 has no Upgrade (§8.6): never called, as the forwarder sees no Upgrade field. */
  takeOver(): Buffer | null {
    this.abort();
    return null;
  }

  private bodyStalled(): void {
    if (this.closed) return;
    this.body?.destroy(new Error('request body not received in time'));
    if (this.headSent) this.abort();
    else this.reply(408, '408 Request Timeout: request body not received in time\n');
  }

  private done(): void {
    this.complete = true;
    this.close();
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.body && !this.body.readableEnded) this.body.destroy(new Error('client stream closed'));
    for (const cb of this.closeListeners.splice(0)) cb();
  }
}

/**
 * The stream's DATA as a Readable of its own: undici may destroy a body it gave up on, and that
 * must not reset the client's stream before the error answer is sent.
 */
function requestBody(stream: ServerHttp2Stream, idleMs: number, stalled: () => void): Readable {
  // The silence timer runs only while we read: under backpressure the client is right to wait.
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    if (idleMs <= 0) return;
    if (timer) timer.refresh();
    else (timer = setTimeout(stalled, idleMs)).unref();
  };
  const disarm = () => { clearTimeout(timer); timer = undefined; };
  arm();
  const body = new Readable({
    read: () => { arm(); stream.resume(); },
    destroy: (err, cb) => { disarm(); cb(err); },
  });
  body.on('error', () => undefined); // undici reports the failure; an unheard 'error' would throw
  stream.on('data', (c: Buffer) => {
    if (body.push(c)) arm();
    else { disarm(); stream.pause(); }
  });
  stream.once('end', () => { disarm(); body.push(null); });
  stream.once('aborted', () => body.destroy(new Error('client reset the stream')));
  return body;
}

/** The upstream's trailers minus connection-specific and pseudo-header fields. */
function trailerFields(t: Trailers): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const n in t) {
    const v = t[n];
    if (v === undefined || n.charCodeAt(0) === 0x3a || TRAILER_DROP.has(n)) continue;
    out[n] = v;
  }
  return out;
}
