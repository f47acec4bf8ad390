// Client connections of one proxy: which are open, which have a request in flight, which were
// upgraded to WebSocket; what graceful shutdown waits for and, at the deadline, destroys.
import type { TlsSocketLike } from './listener.js';

interface ConnState { active: number; upgraded: boolean }

/** Told the open-connection and in-flight-request counts whenever they change (for gauges). */
export type ConnectionObserver = (connections: number, requestsInFlight: number) => void;

/** Tracks every client connection handed to the proxy. */
export class ConnectionTracker {
  private readonly conns = new Map<TlsSocketLike, ConnState>();
  private inFlight = 0;

  constructor(private readonly observer: ConnectionObserver = () => undefined) {}

  /** Starts tracking a socket until it closes. */
  add(socket: TlsSocketLike): void {
    this.conns.set(socket, { active: 0, upgraded: false });
    socket.once('close', () => this.remove(socket));
    this.observer(this.conns.size, this.inFlight);
  }

  /** A request started on `socket`. */
  requestStarted(socket: TlsSocketLike): void {
    const s = this.conns.get(socket);
    if (!s) return;
    s.active++;
    this.inFlight++;
    this.observer(this.conns.size, this.inFlight);
  }

  /** A request ended on `socket`. */
  requestEnded(socket: TlsSocketLike): void {
    const s = this.conns.get(socket);
    if (!s || s.active === 0) return;
    s.active--;
    this.inFlight--;
    this.observer(this.conns.size, this.inFlight);
  }

  private remove(socket: TlsSocketLike): void {
    const s = this.conns.get(socket);
    if (!s) return;
    this.inFlight -= s.active;
    this.conns.delete(socket);
    this.observer(this.conns.size, this.inFlight);
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
    return this.inFlight;
  }

  /** Destroys every connection still open; returns how many there were. */
  destroyAll(): number {
    const n = this.conns.size;
    for (const socket of [...this.conns.keys()]) {
      socket.destroy();
      this.remove(socket);
    }
    return n;
  }
}
