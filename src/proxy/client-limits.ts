// Per-client limits of one listener: connections open and handshakes in progress per client,
// and a token bucket of full handshakes per second (the ones that cost an HSM signature).
// A client is an IPv4 address or an IPv6 /64 (one subscriber's prefix). Under pressure (the
// signing queue past its threshold) full handshakes are shed and resumptions still admitted.
import { isIPv4, isIPv6 } from 'node:net';
import type { AdmittedConnection, ClientAdmission } from '../tls/index.js';

/** Limits per client; see ListenerLimits in config/. */
export interface ClientLimitOptions {
  /** Connections one client may hold open (0 = no limit). */
  maxConnections: number;
  /** Handshakes one client may have in progress (0 = no limit). */
  maxHandshakes: number;
  /** Full handshakes per second one client may start, sustained (0 = no limit). */
  handshakesPerSecond: number;
  /** Full handshakes one client may start at once after a quiet spell (the bucket's size). */
  handshakeBurst: number;
}

/** What the limiter asks the signing side. */
export interface SigningPressure {
  /** Signatures waiting for a slot now. */
  queued(): number;
  /** From this many waiting, full handshakes are shed (resumptions need no signature and pass). */
  readonly shedFullAt: number;
}

/** Refusal and shedding reasons (metric label values). */
export const LimitReason = {
  clientConnections: 'client_connections',
  clientHandshakes: 'client_handshakes',
  clientRate: 'client_rate',
  signingQueue: 'signing_queue',
} as const;

interface ClientState {
  connections: number;
  handshakes: number;
  tokens: number;
  /** performance.now() of the last refill. */
  refilled: number;
  /** After a full handshake shed for the rate: new connections are refused at accept until then. */
  refuseUntil: number;
  /** Refusals at accept in the current second, and which second (performance.now() / 1000, floored). */
  refusals: number;
  refusalSecond: number;
}

/** Refusals in one second past which a client's refused connections are held before the close. */
const HOLD_AFTER_REFUSALS = 16;
/** How long such a connection is held, unread, on average (jittered by ±50%). */
const HOLD_MS = 2000;

/** The longest a client over its rate has its connections refused at accept (then it is asked again). */
const RATE_REFUSAL_MAX_MS = 1000;

/** Forgotten clients are swept this often (a client is kept while it has connections or a spent bucket). */
const SWEEP_MS = 10_000;

/**
 * The client key of an address: IPv4 as is (also when IPv4-mapped), IPv6 as its /64 written
 * `2001:db8:1:2::/64`; anything else (a Unix socket, an empty address) is its own key.
 */
export function clientKey(address: string): string {
  if (address.startsWith('::ffff:') && isIPv4(address.slice(7))) return address.slice(7);
  if (isIPv4(address)) return address;
  const bare = address.split('%')[0]!;
  if (!isIPv6(bare)) return address;
  const groups = expandIPv6(bare);
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (with `::` and a dotted IPv4 tail). */
function expandIPv6(addr: string): number[] {
  let text = addr;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const hex = (part: string | undefined): number[] => (part ? part.split(':').map((h) => parseInt(h, 16)) : []);
  const [head, rest] = text.split('::') as [string, string | undefined];
  const left = hex(head);
  const right = hex(rest);
  const zeros = rest === undefined ? 0 : 8 - left.length - right.length;
  return [...left, ...new Array<number>(zeros).fill(0), ...right];
}

/** A ClientAdmission with per-client limits and pressure shedding; one per listener. */
export class ClientLimiter implements ClientAdmission {
  private readonly clients = new Map<string, ClientState>();
  private lastSweep = performance.now();

  private opts: ClientLimitOptions;

  constructor(opts: ClientLimitOptions, private readonly pressure?: SigningPressure) {
    this.opts = { ...opts };
  }

  /** New limits (a reload): counts and buckets carry over; a smaller burst caps the buckets at once. */
  setOptions(opts: ClientLimitOptions): void {
    this.opts = { ...opts };
    for (const st of this.clients.values()) st.tokens = Math.min(st.tokens, opts.handshakeBurst);
  }

  /** Clients tracked now (with open connections or a bucket still refilling). */
  get trackedClients(): number { return this.clients.size; }

  open(address: string): AdmittedConnection | string {
    const now = performance.now();
    if (now - this.lastSweep > SWEEP_MS) this.sweep(now);
    const key = clientKey(address);
    let st = this.clients.get(key);
    const { maxConnections, maxHandshakes } = this.opts;
    if (st) {
      if (maxConnections > 0 && st.connections >= maxConnections) return LimitReason.clientConnections;
      if (maxHandshakes > 0 && st.handshakes >= maxHandshakes) return LimitReason.clientHandshakes;
      // Its last full handshake was shed and no token is due yet: this one would most likely be shed
      // too, after costing a ClientHello's parsing. Refused now, a flood costs an accept.
      if (now < st.refuseUntil) return LimitReason.clientRate;
    } else {
      st = {
        connections: 0, handshakes: 0, tokens: this.opts.handshakeBurst, refilled: now,
        refuseUntil: 0, refusals: 0, refusalSecond: 0,
      };
      this.clients.set(key, st);
    }
    st.connections++;
    st.handshakes++;
    return new Admitted(key, st, this);
  }

  /**
   * A client over its caps that keeps reconnecting (more than 16 refusals in a second) has its
   * refused connections held 1 to 3 s before the close: its reconnect loop slows to the pace of the
   * holds. A client refused now and then is closed at once, and learns at once.
   */
  holdRefused(address: string, reason: string): number {
    if (!reason.startsWith('client_')) return 0;
    const st = this.clients.get(clientKey(address));
    if (!st) return 0;
    const second = Math.floor(performance.now() / 1000);
    if (st.refusalSecond !== second) {
      st.refusalSecond = second;
      st.refusals = 0;
    }
    st.refusals++;
    // Jittered (1 to 3 s): holds released together would come back together, as a burst of SYNs.
    return st.refusals > HOLD_AFTER_REFUSALS ? HOLD_MS * (0.5 + Math.random()) : 0;
  }

  /** @internal a full handshake of `st` wants its signature. */
  admitFull(st: ClientState): string | undefined {
    const p = this.pressure;
    if (p && p.queued() >= p.shedFullAt) return LimitReason.signingQueue;
    const rate = this.opts.handshakesPerSecond;
    if (rate <= 0) return undefined;
    const now = performance.now();
    st.tokens = Math.min(this.opts.handshakeBurst, st.tokens + ((now - st.refilled) / 1000) * rate);
    st.refilled = now;
    if (st.tokens < 1) {
      st.refuseUntil = now + Math.min(RATE_REFUSAL_MAX_MS, ((1 - st.tokens) / rate) * 1000);
      return LimitReason.clientRate;
    }
    st.tokens -= 1;
    return undefined;
  }

  /** @internal */
  closed(key: string, st: ClientState): void {
    st.connections--;
    if (st.connections === 0 && this.full(st, performance.now())) this.clients.delete(key);
  }

  private full(st: ClientState, now: number): boolean {
    const rate = this.opts.handshakesPerSecond;
    return rate <= 0 || st.tokens + ((now - st.refilled) / 1000) * rate >= this.opts.handshakeBurst;
  }

  /** Forgets clients with nothing open whose bucket has refilled: memory follows live clients. */
  private sweep(now: number): void {
    this.lastSweep = now;
    for (const [key, st] of this.clients) if (st.connections === 0 && this.full(st, now)) this.clients.delete(key);
  }
}

class Admitted implements AdmittedConnection {
  private handshaking = true;
  private open = true;

  constructor(readonly client: string, private readonly st: ClientState, private readonly limiter: ClientLimiter) {}

  fullHandshake(): string | undefined {
    return this.limiter.admitFull(this.st);
  }

  handshakeEnded(): void {
    if (!this.handshaking) return;
    this.handshaking = false;
    this.st.handshakes--;
  }

  closed(): void {
    this.handshakeEnded();
    if (!this.open) return;
    this.open = false;
    this.limiter.closed(this.client, this.st);
  }
}
