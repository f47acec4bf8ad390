// One request and its response as the Forwarder sees it, whatever the client protocol: an
// HTTP/1.1 Exchange (http1/) or an HTTP/2 stream (http2/). Routing, header policy and the undici
// forwarder are written once against this.
import type { Readable } from 'node:stream';
import type { RequestHead } from './http1/parse.js';
import type { TlsSocketLike } from './listener.js';

/** The client side of the request: `http1` (HTTP/1.x) or `h2`; also the metrics label. */
export type ClientProtocol = 'http1' | 'h2';

/** Response trailers (HTTP/2 only: gRPC's grpc-status travels in them). */
export type Trailers = Record<string, string | string[] | undefined>;

/** What the Forwarder needs of one request and its response. */
export interface ProxyExchange {
  readonly protocol: ClientProtocol;
  readonly head: RequestHead;
  /** The request body as payload bytes, or null when the request has none. */
  body: Readable | null;
  /** performance.now() when the head was complete. */
  readonly start: number;
  /** Response body bytes written. */
  readonly bytes: number;
  /** Status sent, once the head is written. */
  readonly status: number;
  /** The response was written completely. */
  readonly complete: boolean;
  /** The TLS connection the request came on (trust, client certificate, connection tracking). */
  readonly socket: TlsSocketLike;
  readonly headersSent: boolean;
  /** The connection is gone or the exchange is over. */
  readonly finished: boolean;
  /** Called once when the exchange ends, completed or not. */
  onClose(cb: () => void): void;
  /** Writes the response head; `length` is the body length when known. */
  respond(status: number, headers: ReadonlyArray<[string, string]>, length: number | undefined): void;
  /** Writes body bytes; false means the client is slow: wait for `onDrain`. */
  write(chunk: Buffer): boolean;
  onDrain(cb: () => void): void;
  /** Ends the response, with trailers where the protocol carries them. */
  end(trailers?: Trailers): void;
  /** A short plain-text answer (errors, 404…). */
  reply(status: number, text: string, extra?: ReadonlyArray<[string, string]>): void;
  /** Refuses the request; HTTP/1.1 also closes the connection after the answer. */
  refuse(status: number, text: string): void;
  /** The response cannot be completed (upstream failed mid-body): reset the stream or drop the connection. */
  abort(): void;
  /** Hands the raw socket over (HTTP/1.1 Upgrade only); returns bytes the client sent after the head. */
  takeOver(): Buffer | null;
}

/**
 * A short plain-text answer written through `ex` (an error, a 404…), unless its head already left:
 * both protocols' `reply`.
 */
export function replyText(
  ex: Pick<ProxyExchange, 'headersSent' | 'finished' | 'respond' | 'write' | 'end'>,
  status: number, text: string, extra: ReadonlyArray<[string, string]> = [],
): void {
  if (ex.headersSent || ex.finished) return;
  const body = Buffer.from(text, 'utf8');
  ex.respond(status, [['content-type', 'text/plain; charset=utf-8'], ['cache-control', 'no-store'], ...extra], body.length);
  ex.write(body);
  ex.end();
}
