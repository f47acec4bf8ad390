// What the appliance lets a peer hold before and after it proves who it is: the caps on
// unauthenticated (still handshaking) connections per source address and in total, the
// per-connection flow-control limits, the caps on logins in progress (each costs a password
// hash) per connection and per client certificate, their defaults, and a log that cannot be
// flooded.
// Part of hsm/node; imports nothing but its log type.
import type { ApplianceLog } from './node.js';

/** Limits on what peers may hold on one appliance; every field optional in `HsmApplianceOptions`. */
export interface ApplianceLimits {
  /** Time a peer has from TCP accept to a finished mTLS handshake before it is closed. */
  handshakeTimeoutMs: number;
  /** Unauthenticated connections one source address may hold at once; more are closed at accept. */
  maxPendingPerSource: number;
  /** Unauthenticated connections the node holds at once, all sources together. */
  maxPending: number;
  /** Requests one connection may have in flight; at the cap the node stops reading it. */
  maxInFlightPerConnection: number;
  /** Request bytes (frame bodies) one connection may have in flight; above it the node stops reading it. */
  maxInFlightBytesPerConnection: number;
  /** Answer bytes queued for a connection (unsent, or in its socket's buffer) above which the node stops reading it. */
  replyHighWaterBytes: number;
  /** Logins one connection may have in progress; more are answered HSM_ERR_BUSY without hashing the password. */
  maxLoginsPerConnection: number;
  /** Logins in progress with one client certificate, over all its connections; more are answered HSM_ERR_BUSY. */
  maxLoginsPerCertificate: number;
}

// Sized for a node serving a few dozen proxies. Each proxy process (each worker) keeps one
// connection per HSM, plus short-lived ones from CLI runs and health checks; after a node
// restart they all reconnect at once. 64 per source covers a host running dozens of workers,
// or a few proxies behind one NAT address, in such a storm; 1024 in total covers a few dozen
// such hosts, while a flood costs the node at most 1024 descriptors and TLS states.
// 10 s is what node:tls used before: a handshake takes milliseconds on loopback and a few
// round trips elsewhere, so only a stalled peer meets it.
// 1024 in flight is four times what one proxy sends (hsm.signing.maxInFlight, default 256);
// 16 MiB of request bytes is thousands of sign requests but only 16 frames of the 1 MiB maximum;
// 1 MiB of queued answers is a few thousand signatures waiting for a slow reader.
// A connection logs in once, so a second login in progress on it can only be a guess: 1.
// A certificate is one proxy's (`cluster client-cert`) or shared by the CLI and older proxies
// (pki/client.crt), so its cap bounds what one holder of it costs (password hashes queue on
// libuv's 4 threads, which crypto and file I/O share): 16 is four rounds of hashing, a few
// hundred ms at the production cost, and a reconnect storm beyond it is answered busy and
// retried with backoff by the client.
export const DEFAULT_APPLIANCE_LIMITS: Readonly<ApplianceLimits> = {
  handshakeTimeoutMs: 10_000,
  maxPendingPerSource: 64,
  maxPending: 1024,
  maxInFlightPerConnection: 1024,
  maxInFlightBytesPerConnection: 16 * 1024 * 1024,
  replyHighWaterBytes: 1024 * 1024,
  maxLoginsPerConnection: 1,
  maxLoginsPerCertificate: 16,
};

/** The limits with defaults filled in; a value that is not a positive integer is a RangeError naming it. */
export function resolveLimits(given: Partial<ApplianceLimits>): ApplianceLimits {
  const out = { ...DEFAULT_APPLIANCE_LIMITS };
  for (const k of Object.keys(out) as Array<keyof ApplianceLimits>) {
    const v = given[k];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`HSM appliance option ${k} must be a positive integer, got ${String(v)}`);
    out[k] = v;
  }
  return out;
}

/** Counts unauthenticated connections per source and in total; `admit` says whether one more fits. */
export class PendingHandshakes {
  private total = 0;
  private readonly bySource = new Map<string, number>();

  constructor(private readonly perSource: number, private readonly max: number) {}

  /** Connections still handshaking. */
  get size(): number {
    return this.total;
  }

  /** Counts a new connection from `source`, or returns why it does not fit (nothing counted). */
  admit(source: string): 'ok' | 'source' | 'total' {
    const n = this.bySource.get(source) ?? 0;
    if (n >= this.perSource) return 'source';
    if (this.total >= this.max) return 'total';
    this.bySource.set(source, n + 1);
    this.total++;
    return 'ok';
  }

  /** Uncounts a connection admitted from `source` (once: secure, or closed). */
  release(source: string): void {
    const n = this.bySource.get(source) ?? 0;
    if (n <= 1) this.bySource.delete(source);
    else this.bySource.set(source, n - 1);
    this.total--;
  }
}

/** Counts logins in progress per client certificate (its fingerprint); `enter` says whether one more fits. */
export class LoginsInProgress {
  private readonly byCertificate = new Map<string, number>();

  constructor(private readonly perCertificate: number) {}

  /** Counts a login for `certificate`, or returns false (nothing counted) at the cap. */
  enter(certificate: string): boolean {
    const n = this.byCertificate.get(certificate) ?? 0;
    if (n >= this.perCertificate) return false;
    this.byCertificate.set(certificate, n + 1);
    return true;
  }

  /** Uncounts a login that `enter` counted. */
  leave(certificate: string): void {
    const n = this.byCertificate.get(certificate) ?? 0;
    if (n <= 1) this.byCertificate.delete(certificate);
    else this.byCertificate.set(certificate, n - 1);
  }
}

/**
 * A log for events a peer can cause at will (refusals): up to `burst` lines per window, then
 * one line at the window's end saying how many were left out, so a flood costs a few lines.
 */
export class LogBudget {
  private windowStart = 0;
  private used = 0;
  private suppressed = 0;
  private about = '';
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly log: ApplianceLog, private readonly burst = 10, private readonly windowMs = 10_000) {}

  /** Logs the line if the window has room, else counts it for the summary. */
  warn(msg: string, fields: Record<string, unknown>): void {
    const now = Date.now();
    if (now - this.windowStart >= this.windowMs) {
      this.windowStart = now;
      this.used = 0;
    }
    if (this.used < this.burst) {
      this.used++;
      this.log('warn', msg, fields);
      return;
    }
    this.suppressed++;
    this.about = msg;
    if (!this.timer) {
      this.timer = setTimeout(() => this.summarise(), this.windowStart + this.windowMs - now);
      this.timer.unref();
    }
  }

  /** Stops the summary timer (the appliance is closing); a pending summary is logged now. */
  stop(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.summarise();
    }
  }

  private summarise(): void {
    this.timer = undefined;
    if (this.suppressed === 0) return;
    this.log('warn', 'log lines left out during a burst', { about: this.about, count: this.suppressed, windowMs: this.windowMs });
    this.suppressed = 0;
  }
}
