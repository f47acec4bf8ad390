// hsm/node.ts: "the appliance". Serves one device on an mTLS port (node:tls, TLS 1.3 only):
// presents a node certificate chaining to the cluster's customer CA and requires a client
// certificate from the same CA, so a peer without one is refused before a byte of the protocol
// is read. Each connection logs in once; requests run concurrently and are answered as they
// finish (any order), with answers batched into one socket write per event-loop turn.
// A peer holds only what node-admission.ts's limits allow: unauthenticated connections are
// capped per source and in total and closed at the handshake timeout; an authenticated one
// (node-connection.ts) at its in-flight caps, or with answers piling up unread, is not read
// until it drains; logins in progress (password hashes) are capped per connection and per
// client certificate. A client certificate the cluster revoked (node-revocation.ts) is refused
// as soon as its handshake completes, before any of its bytes is read, and connections already
// open with it are closed within `revocationCheckMs`.
// May import hsm/device, hsm/protocol and node built-ins; logs through the `log` callback.
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { Hsm } from './device/index.js';
import { DEFAULT_MAX_FRAME } from './protocol/index.js';
import { ApplianceConnection } from './node-connection.js';
import { LogBudget, LoginsInProgress, PendingHandshakes, resolveLimits, type ApplianceLimits } from './node-admission.js';
import { RevokedClients, type ClientRecord } from './node-revocation.js';

export { DEFAULT_APPLIANCE_LIMITS, type ApplianceLimits } from './node-admission.js';

/** A log line from the appliance: an event name and fields (the entry point decides the format). */
export type ApplianceLog = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/** Options of `HsmAppliance.listen`; the limits default to DEFAULT_APPLIANCE_LIMITS. */
export interface HsmApplianceOptions extends Partial<ApplianceLimits> {
  device: Hsm;
  hsmId: string;
  host?: string;
  /** 0 picks an ephemeral port. */
  port: number;
  /** The node's private key and its certificate chain (node cert, then the cluster cert), PEM. */
  key: string | Buffer;
  cert: string | Buffer;
  /** The customer CA: client certificates must be issued by it. */
  ca: string | Buffer;
  /** Largest request body accepted (default 1 MiB); a larger one closes the connection. */
  maxFrame?: number;
  log?: ApplianceLog;
  /** The cluster's client register (DIR/pki/clients.json): its revoked certificates are refused. */
  revokedClients?: string;
  /** How often open connections are checked against a changed register (default 1,000 ms). */
  revocationCheckMs?: number;
}

/** Counters a test or operator can read. */
export interface ApplianceStats {
  /** Connections that completed mTLS. */
  connections: number;
  /** Handshakes refused (no client certificate, wrong CA, not TLS 1.3, garbage, timed out). */
  refused: number;
  /** Request frames decoded. */
  frames: number;
  /** Chunks read from client sockets (TLS records decrypted): pipelined requests sent in one write arrive in few. */
  reads: number;
  /** Socket writes of answers: the answers finished in one turn of the event loop leave in one. */
  writes: number;
  /** Connections closed for a malformed or oversized frame. */
  protocolErrors: number;
  /** TCP connections closed at accept, before TLS: their address, or the node, held too many unauthenticated ones. */
  overPendingCap: number;
  /** Connections closed for not finishing mTLS within handshakeTimeoutMs (also counted in `refused`). */
  handshakeTimeouts: number;
  /** Times the node stopped reading a connection: at an in-flight cap, or answers queued above the high-water mark. */
  readPauses: number;
  /** The most requests one connection had in flight at once. */
  peakInFlight: number;
  /** The most answer bytes one connection had queued at once (not yet written, or in its socket's buffer). */
  peakQueuedReplyBytes: number;
  /** Logins answered HSM_ERR_BUSY, unhashed: over the cap of logins in progress per connection or per certificate. */
  loginsOverCap: number;
  /**
   * Connections with a revoked client certificate: refused after the handshake (also counted in
   * `refused`), or closed when it was revoked.
   */
  revoked: number;
}

// A connection accepted but not yet through mTLS: what releases its place under the caps.
interface Handshaking {
  raw: Socket;
  source: string;
}

/** One HSM on the network. */
export class HsmAppliance {
  readonly stats: ApplianceStats = {
    connections: 0, refused: 0, frames: 0, reads: 0, writes: 0, protocolErrors: 0, overPendingCap: 0,
    handshakeTimeouts: 0, readPauses: 0, peakInFlight: 0, peakQueuedReplyBytes: 0, loginsOverCap: 0, revoked: 0,
  };
  // Open connections and the serial of the client certificate each presented.
  private readonly sockets = new Map<TLSSocket, string>();
  private readonly pending: PendingHandshakes;
  private readonly logins: LoginsInProgress;
  // Keyed by the connection's address tuple, which the TLS socket reports too (until destroyed).
  private readonly handshaking = new Map<string, Handshaking>();
  // A refused client certificate destroys the TLS socket before 'tlsClientError' (whose error is
  // then only ECONNRESET "socket hang up", the verdict being in socket.authorizationError) and
  // its address with it: the peer is noted when the TCP connection arrives.
  private readonly peers = new WeakMap<object, { address?: string; port?: number }>();
  // Refusals are the peer's doing, so a flood of them must not flood the log.
  private readonly refusalLog: LogBudget;
  private readonly capLog: LogBudget;
  private readonly revokedClients: RevokedClients | undefined;
  private revocationTimer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly listener: NetServer,
    private readonly tls: Server,
    private readonly opts: HsmApplianceOptions,
    private readonly limits: ApplianceLimits,
  ) {
    this.pending = new PendingHandshakes(limits.maxPendingPerSource, limits.maxPending);
    this.logins = new LoginsInProgress(limits.maxLoginsPerCertificate);
    const log: ApplianceLog = (l, m, f) => this.log(l, m, f);
    this.refusalLog = new LogBudget(log);
    this.capLog = new LogBudget(log);
    this.revokedClients = opts.revokedClients !== undefined ? new RevokedClients(opts.revokedClients) : undefined;
  }

  /** Starts listening; resolves once the port is bound. */
  static async listen(opts: HsmApplianceOptions): Promise<HsmAppliance> {
    const limits = resolveLimits(opts);
    const tls = createServer({
      key: opts.key, cert: opts.cert, ca: opts.ca,
      requestCert: true, rejectUnauthorized: true,
      minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
      // Counted from the TLS socket's creation, i.e. from accept; fires 'tlsClientError' for a
      // peer that sends nothing, part of a handshake, or a byte now and then (Node 20).
      handshakeTimeout: limits.handshakeTimeoutMs,
    });
    // The TCP listener is our own, not node:tls's, so a connection over the pending caps is
    // closed before any TLS state exists for it; the others are handed to `tls`.
    const listener = createNetServer();
    const appliance = new HsmAppliance(listener, tls, opts, limits);
    // Read before listening: a node that cannot tell which certificates are revoked does not serve.
    try {
      appliance.revokedClients?.refresh();
    } catch (err) {
      throw Object.assign(new Error(`cannot read the revoked client certificates in ${opts.revokedClients}: ${(err as Error).message}; restore the file from a copy`), { code: 'HSM_ERR_REVOCATION_LIST' });
    }
    listener.on('connection', (raw: Socket) => appliance.admit(raw));
    tls.on('secureConnection', (socket: TLSSocket) => appliance.accept(socket));
    tls.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => appliance.refuse(err, socket));
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(opts.port, opts.host ?? '127.0.0.1', () => { listener.off('error', reject); resolve(); });
    });
    appliance.watchRevocations();
    // The signing workers boot now, in the background, not during the first burst of requests
    // (a worker's start costs CPU the first requests would wait behind).
    opts.device.warmSigningThreads().catch(() => undefined);
    return appliance;
  }

  /** The bound port. */
  get port(): number {
    return (this.listener.address() as AddressInfo).port;
  }

  /** Connections currently open. */
  get openConnections(): number {
    return this.sockets.size;
  }

  /** Connections accepted and not yet through mTLS. */
  get pendingHandshakes(): number {
    return this.pending.size;
  }

  /** Stops accepting, closes every connection (their sessions end). Does not close the device. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.listener.close(() => resolve()));
    clearTimeout(this.revocationTimer);
    this.revocationTimer = undefined;
    for (const h of this.handshaking.values()) h.raw.destroy();
    for (const s of this.sockets.keys()) s.destroy();
    this.refusalLog.stop();
    this.capLog.stop();
    await closed;
  }

  // A new TCP connection: refused at once over the caps, else counted until secure or closed.
  private admit(raw: Socket): void {
    const source = raw.remoteAddress;
    if (source === undefined) {
      // Already reset by the peer: nothing to serve, and no address to count it under.
      raw.destroy();
      return;
    }
    const verdict = this.pending.admit(source);
    if (verdict !== 'ok') {
      this.stats.overPendingCap++;
      this.capLog.warn('refused a connection over the cap on unauthenticated connections', {
        peer: source, peerPort: raw.remotePort,
        reason: verdict === 'source'
          ? `this address already has ${this.limits.maxPendingPerSource} connections that have not finished the handshake (maxPendingPerSource)`
          : `the node already has ${this.limits.maxPending} connections that have not finished the handshake (maxPending)`,
      });
      // A reset rather than a FIN: nothing to say, and no TIME_WAIT left on this side.
      raw.resetAndDestroy();
      return;
    }
    const key = tupleOf(raw);
    this.handshaking.set(key, { raw, source });
    this.peers.set(raw, { address: raw.remoteAddress, port: raw.remotePort });
    raw.once('close', () => this.settle(key));
    this.tls.emit('connection', raw);
  }

  // The connection is through mTLS or gone: it no longer counts against the caps.
  private settle(key: string): void {
    const h = this.handshaking.get(key);
    if (!h) return;
    this.handshaking.delete(key);
    this.pending.release(h.source);
  }

  // node:tls reports a failed or timed-out handshake but leaves the socket open: close it here.
  private refuse(err: NodeJS.ErrnoException, socket: TLSSocket): void {
    socket.destroy();
    this.stats.refused++;
    if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') this.stats.handshakeTimeouts++;
    this.refusalLog.warn('refused a connection', { ...peerOf(socket, this.peers), ...refusal(err, socket) });
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void {
    this.opts.log?.(level, msg, fields);
  }

  // The revoked entry for a peer's serial, after re-reading the register if it changed.
  private checkRevoked(serial: string | undefined): ClientRecord | undefined {
    if (!this.revokedClients) return undefined;
    this.refreshRevoked();
    return this.revokedClients.lookup(serial);
  }

  // Re-reads the register if it changed. Revoking a certificate also ends the connections already
  // made with it: they are checked here whenever the list changed, be it noticed by a new
  // connection (accept) or by the timer.
  private refreshRevoked(): void {
    let changed = false;
    try {
      changed = this.revokedClients?.refresh() ?? false;
    } catch (err) {
      this.refusalLog.warn('cannot re-read the revoked client certificates; the last list read stays in force', { file: this.revokedClients?.file, error: (err as Error).message });
    }
    if (!changed) return;
    for (const [socket, serial] of this.sockets) {
      const r = this.revokedClients?.lookup(serial);
      if (!r) continue;
      this.stats.revoked++;
      this.log('warn', 'closed a connection whose client certificate was revoked', {
        peer: socket.remoteAddress, peerPort: socket.remotePort, client: r.name, serial: r.serial,
        revokedAt: r.revokedAt,
      });
      socket.destroy();
    }
  }

  private watchRevocations(): void {
    if (!this.revokedClients) return;
    const every = this.opts.revocationCheckMs ?? 1000;
    const tick = (): void => {
      this.refreshRevoked();
      this.revocationTimer = setTimeout(tick, every).unref();
    };
    this.revocationTimer = setTimeout(tick, every).unref();
  }

  private accept(socket: TLSSocket): void {
    this.settle(tupleOf(socket));
    const peerCert = socket.getPeerCertificate();
    // Checked before anything reads the socket: a revoked peer's bytes (its login) are never decoded.
    const revoked = this.checkRevoked(peerCert.serialNumber);
    if (revoked) {
      const peer = peerOf(socket, this.peers);
      socket.destroy();
      this.stats.refused++;
      this.stats.revoked++;
      this.refusalLog.warn('refused a connection', {
        ...peer, code: 'CERT_REVOKED', client: revoked.name, serial: revoked.serial, revokedAt: revoked.revokedAt,
        reason: `client certificate refused: "${revoked.name}" (serial ${revoked.serial}) was revoked on ${revoked.revokedAt ?? '?'}`,
      });
      return;
    }
    this.stats.connections++;
    this.sockets.set(socket, peerCert.serialNumber ?? '');
    socket.setNoDelay(true);
    // mTLS made the certificate a verified identity: logins in progress are capped per certificate.
    const certificate = peerCert.fingerprint256 ?? '';
    const conn = new ApplianceConnection(
      socket, this.opts.device, this.opts.maxFrame ?? DEFAULT_MAX_FRAME, this.limits, this.stats,
      (l, m, f) => this.log(l, m, f), certificate, this.logins,
    );
    socket.on('close', () => {
      this.sockets.delete(socket);
      conn.closed();
    });
  }
}

// Names one live TCP connection (unique while it is open; the local address matters on a
// wildcard listener). The raw socket and the TLS socket over it report the same tuple.
function tupleOf(s: Socket): string {
  return `${s.remoteAddress}|${s.remotePort}|${s.localAddress}|${s.localPort}`;
}

// The peer of a TLS socket, also once it is destroyed: TLSSocket keeps the TCP socket it wraps as
// `_parent` (not public API; without it only an address read before the destroy is known).
function peerOf(
  socket: TLSSocket, peers: WeakMap<object, { address?: string; port?: number }>,
): { peer?: string; peerPort?: number } {
  const parent = (socket as unknown as { _parent?: object })._parent;
  const noted = parent ? peers.get(parent) : undefined;
  const address = socket.remoteAddress ?? noted?.address;
  const port = socket.remotePort ?? noted?.port;
  return { ...(address !== undefined ? { peer: address } : {}), ...(port !== undefined ? { peerPort: port } : {}) };
}

// Certificate verdicts (OpenSSL's X509_V_ERR names, as node:tls reports them) in words.
const CERT_REASONS: Record<string, string> = {
  INVALID_PURPOSE: 'its certificate is not a client certificate (e.g. a node or CA certificate)',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "its certificate was not issued by this cluster's customer CA",
  UNABLE_TO_GET_ISSUER_CERT: "its certificate was not issued by this cluster's customer CA",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "its certificate was not issued by this cluster's customer CA",
  DEPTH_ZERO_SELF_SIGNED_CERT: 'its certificate is self-signed',
  SELF_SIGNED_CERT_IN_CHAIN: "its certificate chains to a CA other than this cluster's",
  CERT_SIGNATURE_FAILURE: 'its certificate signature does not verify',
  CERT_HAS_EXPIRED: 'its certificate has expired',
  CERT_NOT_YET_VALID: 'its certificate is not valid yet',
};

// What to log about a refused handshake: the certificate verdict when there is one, else the TLS error.
function refusal(err: NodeJS.ErrnoException, socket: TLSSocket): { code: string; reason: string } {
  const verdict = socket.authorizationError as unknown as string | Error | null | undefined;
  const vcode = typeof verdict === 'string' ? verdict : (verdict as { code?: string } | null | undefined)?.code;
  if (vcode) return { code: vcode, reason: `client certificate refused: ${CERT_REASONS[vcode] ?? vcode}` };
  // OpenSSL errors carry a short `reason` ('peer did not return a certificate') besides the long message.
  const reason = (err as { reason?: unknown }).reason;
  return { code: err.code ?? 'ERR_TLS', reason: typeof reason === 'string' && reason ? reason : err.message.trim() };
}
