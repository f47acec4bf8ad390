// Client connections of one proxy: which are open, which have a request in flight, which were
// upgraded to WebSocket; what graceful shutdown waits for and, at the deadline, destroys.
import type { TlsSocketLike } from './listener.js';

interface ConnState { active: number; upgraded: boolean }

/** Tracks every client connection handed to the proxy. */
export class ConnectionTracker {
  private readonly conns = new Map<TlsSocketLike, ConnState>();

  /** Starts tracking a socket until it closes. */
  add(socket: TlsSocketLike): void {
    this.conns.set(socket, { active: 0, upgraded: false });
    socket.once('close', () => this.conns.delete(socket));
  }

  /** A request started on `socket`. */
  requestStarted(socket: TlsSocketLike): void {
    const s = this.conns.get(socket);
    if (s) s.active++;
  }

  /** A request ended on `socket`. */
  requestEnded(socket: TlsSocketLike): void {
    const s = this.conns.get(socket);
    if (s && s.active > 0) s.active--;
  }

  /** `socket` now carries a WebSocket (no HTTP request boundary to wait for). */
  upgraded(socket: TlsSocketLike): void {
    const s = this.conns.get(socket);
    if (s) s.upgraded = true;
  }

  /** Open connections. */
  get size(): number {
    return this.conns.size;
  }

  /** Requests in flight across all connections. */
  get activeRequests(): number {
    let n = 0;
    for (const s of this.conns.values()) n += s.active;
    return n;
  }

  /** Destroys every connection still open; returns how many there were. */
  destroyAll(): number {
    const n = this.conns.size;
    for (const socket of this.conns.keys()) socket.destroy();
    this.conns.clear();
    return n;
  }
}
