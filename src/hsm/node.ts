// hsm/node.ts: "the appliance". Serves one device on an mTLS port (node:tls, TLS 1.3 only):
// presents a node certificate chaining to the cluster's customer CA and requires a client
// certificate from the same CA, so a peer without one is refused before a byte of the protocol
// is read. Each connection logs in once; requests run concurrently and are answered as they
// finish (any order), with answers batched into one socket write per event-loop turn.
// May import hsm/device, hsm/protocol and node built-ins; logs through the `log` callback.
import type { AddressInfo, Socket } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { Hsm } from './device/index.js';
import {
  DEFAULT_MAX_FRAME, FLAG_JSON, FLAG_RESPONSE, FrameDecoder, HEADER_BYTES, STATUS_ERROR, STATUS_OK,
  encodeFrame, writeHeader, writeJson, type Frame, type WireError,
} from './protocol/index.js';
import { handleOp, type ConnectionState } from './node-ops.js';

/** A log line from the appliance: an event name and fields (the entry point decides the format). */
export type ApplianceLog = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/** Options of `HsmAppliance.listen`. */
export interface HsmApplianceOptions {
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
}

/** Counters a test or operator can read. */
export interface ApplianceStats {
  /** Connections that completed mTLS. */
  connections: number;
  /** Handshakes refused (no client certificate, wrong CA, not TLS 1.3, garbage). */
  refused: number;
  /** Request frames decoded. */
  frames: number;
  /** Connections closed for a malformed or oversized frame. */
  protocolErrors: number;
}

/** One HSM on the network. */
export class HsmAppliance {
  readonly stats: ApplianceStats = { connections: 0, refused: 0, frames: 0, protocolErrors: 0 };
  private readonly sockets = new Set<TLSSocket>();

  private constructor(private readonly server: Server, private readonly opts: HsmApplianceOptions) {}

  /** Starts listening; resolves once the port is bound. */
  static async listen(opts: HsmApplianceOptions): Promise<HsmAppliance> {
    const server = createServer({
      key: opts.key, cert: opts.cert, ca: opts.ca,
      requestCert: true, rejectUnauthorized: true,
      minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
      handshakeTimeout: 10_000,
    });
    const appliance = new HsmAppliance(server, opts);
    server.on('secureConnection', (socket) => appliance.accept(socket));
    // A refused client certificate destroys the TLS socket before 'tlsClientError' (whose error is
    // then only ECONNRESET "socket hang up", the verdict being in socket.authorizationError) and
    // its address with it: the peer is noted when the TCP connection arrives.
    const peers = new WeakMap<object, { address?: string; port?: number }>();
    server.on('connection', (raw: Socket) => peers.set(raw, { address: raw.remoteAddress, port: raw.remotePort }));
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket) => {
      appliance.stats.refused++;
      appliance.log('warn', 'refused a connection', { ...peerOf(socket, peers), ...refusal(err, socket) });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, opts.host ?? '127.0.0.1', () => { server.off('error', reject); resolve(); });
    });
    return appliance;
  }

  /** The bound port. */
  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Connections currently open. */
  get openConnections(): number {
    return this.sockets.size;
  }

  /** Stops accepting, closes every connection (their sessions end). Does not close the device. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void {
    this.opts.log?.(level, msg, fields);
  }

  private accept(socket: TLSSocket): void {
    this.stats.connections++;
    this.sockets.add(socket);
    socket.setNoDelay(true);
    const conn = new ApplianceConnection(socket, this.opts.device, this.opts.maxFrame ?? DEFAULT_MAX_FRAME, this.stats, (l, m, f) => this.log(l, m, f));
    socket.on('close', () => {
      this.sockets.delete(socket);
      conn.closed();
    });
  }
}

// The peer of a TLS socket, also once it is destroyed: TLSSocket keeps the TCP socket it wraps as
// `_parent` (not public API; without it only an address read before the destroy is known).
function peerOf(socket: TLSSocket, peers: WeakMap<object, { address?: string; port?: number }>): { peer?: string; peerPort?: number } {
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

// One client connection: its login session, its decoder, its batched outbox.
class ApplianceConnection {
  private readonly state: ConnectionState = { session: undefined };
  private readonly decoder: FrameDecoder;
  private outbox: Buffer[] = [];
  private flushScheduled = false;
  private dead = false;

  constructor(
    private readonly socket: TLSSocket,
    private readonly device: Hsm,
    maxFrame: number,
    private readonly stats: ApplianceStats,
    private readonly log: ApplianceLog,
  ) {
    this.decoder = new FrameDecoder(maxFrame);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => socket.destroy());
  }

  closed(): void {
    this.dead = true;
    this.outbox = [];
    // Session keys belong to the login session, which ends with the connection.
    if (this.state.session) {
      const s = this.state.session;
      this.state.session = undefined;
      this.device.logout(s).catch(() => undefined);
    }
  }

  private onData(chunk: Buffer): void {
    for (const f of this.decoder.push(chunk)) {
      this.stats.frames++;
      this.serve(f);
    }
    const pe = this.decoder.error;
    if (pe) {
      // The stream cannot be resynchronised: answer the oversized request by its id, then close.
      // (Answers to the frames before it still in flight are dropped with the connection.)
      this.stats.protocolErrors++;
      this.log('warn', 'closing a connection after an oversized frame', { peer: this.socket.remoteAddress, code: pe.code, reason: pe.message });
      this.socket.removeAllListeners('data');
      const answer = encodeFrame(pe.requestId ?? 0, STATUS_ERROR, FLAG_RESPONSE | FLAG_JSON, Buffer.from(JSON.stringify({ code: pe.code, message: pe.message })));
      this.flush();
      this.dead = true;
      this.socket.end(answer);
    }
  }

  private serve(f: Frame): void {
    if ((f.flags & FLAG_RESPONSE) !== 0) {
      this.queueError(f.requestId, { code: 'HSM_ERR_PROTOCOL', message: 'a client sent a response frame' });
      return;
    }
    handleOp(this.device, this.state, f.code, f.body).then(
      (a) => {
        writeHeader(a.frame, 0, a.frame.length - HEADER_BYTES, f.requestId, STATUS_OK, FLAG_RESPONSE | (a.json ? FLAG_JSON : 0), a.queueWaitUs, a.serviceUs);
        this.queue(a.frame);
      },
      (err: unknown) => this.queueError(f.requestId, this.wireError(err), err as { queueWaitUs?: number; serviceUs?: number }),
    );
  }

  private wireError(err: unknown): WireError {
    const e = err as { code?: unknown; message?: unknown };
    if (typeof e?.code === 'string' && e.code.startsWith('HSM_ERR_') && typeof e.message === 'string') return { code: e.code, message: e.message };
    this.log('error', 'internal error serving a request', { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    return { code: 'HSM_ERR_INTERNAL', message: 'internal error in the HSM; see its log' };
  }

  private queueError(requestId: number, e: WireError, timing?: { queueWaitUs?: number; serviceUs?: number }): void {
    const frame = writeJson(e);
    writeHeader(frame, 0, frame.length - HEADER_BYTES, requestId, STATUS_ERROR, FLAG_RESPONSE | FLAG_JSON, timing?.queueWaitUs ?? 0, timing?.serviceUs ?? 0);
    this.queue(frame);
  }

  private queue(frame: Buffer): void {
    if (this.dead) return;
    this.outbox.push(frame);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Answers finishing in the same turn of the event loop leave in one socket write.
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.outbox.length === 0 || this.dead) return;
    const out = this.outbox.length === 1 ? (this.outbox[0] as Buffer) : Buffer.concat(this.outbox);
    this.outbox = [];
    this.socket.write(out);
  }
}
