// The HTTP/1.1 side of every TLS listener of one proxy: hands each decrypted connection to an
// Http1Connection and enforces the client timeouts with one sweep per interval (as node:http's
// connectionsCheckingInterval does) instead of a timer per request.
import type { TlsSocketLike } from '../listener.js';
import { Http1Connection, type Http1Handler, type Http1Policy } from './connection.js';

export { Exchange, type Http1Handler, type Http1Policy } from './connection.js';
export { HttpParseError, DEFAULT_HEAD_LIMITS, headerTokens, headerValues, type RequestHead } from './parse.js';

/** Serves HTTP/1.1 on sockets handed to it. */
export class Http1Server {
  private readonly conns = new Set<Http1Connection>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly handler: Http1Handler, readonly policy: Http1Policy, sweepMs = 250) {
    this.sweeper = setInterval(() => {
      const now = performance.now();
      for (const c of this.conns) c.checkDeadline(now);
    }, sweepMs);
    this.sweeper.unref();
  }

  /** Starts serving HTTP on a connection. */
  accept(socket: TlsSocketLike): void {
    const c = new Http1Connection(socket, this.policy, this.handler, (gone) => this.conns.delete(gone));
    this.conns.add(c);
  }

  /** Closes every connection waiting for its next request; busy ones close after their response. */
  closeIdleConnections(): void {
    for (const c of this.conns) c.closeIfIdle();
  }

  /** Input read ahead and not parsed yet, all connections (bounded per connection: pipelining). */
  get bufferedBytes(): number {
    let n = 0;
    for (const c of this.conns) n += c.buffered;
    return n;
  }

  /** Connections still speaking HTTP (not upgraded, not closed). */
  get size(): number {
    return this.conns.size;
  }

  /** Stops the sweeper (connections are closed by their owner). */
  close(): void {
    clearInterval(this.sweeper);
  }
}
