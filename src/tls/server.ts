// TlsServer: a net.Server whose connections become TlsSockets, shaped like node's tls.Server
// (listen/close/address, 'secureConnection', 'tlsClientError').
import { EventEmitter } from 'node:events';
import { createServer as createNetServer, type AddressInfo, type ListenOptions, type Server, type Socket } from 'node:net';
import { publishRefused, type AdmittedConnection, type ClientAdmission } from './admit.js';
import type { TlsError } from './alert.js';
import { prepareCertEntry, type CertEntry } from './certselect.js';
import { prepareClientAuth, type ClientAuthOptions } from './client-auth.js';
import { ServerConnection } from './connection.js';
import type { HandshakeObservation } from './observe.js';
import type { ServerHandshakeConfig, TlsVersionName } from './hello12.js';
import type { CertifiedKey } from './signer.js';
import { parseGroups } from './kex.js';
import { MAX_TICKET_LIFETIME_S } from './session.js';
import { TlsSocket } from './socket.js';
import { TicketKeys } from './tickets.js';

/**
 * What a connection's first bytes said before TLS began (the PROXY protocol): the client's address,
 * and the bytes read past that preface, which are the start of the TLS stream.
 */
export interface ConnectionPreface { client?: RemotePeer; head?: Buffer }

/** An IP endpoint; see ConnectionPreface. */
export interface RemotePeer { address: string; port: number; family: string }

/**
 * Decides, before any TLS byte is read, whether a TCP connection gets a handshake: it calls `start`
 * (at once or later) or destroys the socket. It owns `raw` until then.
 */
export type ConnectionGate = (raw: Socket, start: (preface?: ConnectionPreface) => void) => void;

/** Refused connections held at once at most (see ClientAdmission.holdRefused); beyond, closed at once. */
const MAX_HELD_REFUSALS = 8192;

/** A certificate chain with its signer, optionally restricted to explicit server names. */
export type ServerCertificate = CertifiedKey & { servername?: readonly string[] };

/** Options of createServer. */
export interface TlsServerOptions {
  certificates: readonly ServerCertificate[];
  /** ALPN protocols in server preference order. */
  alpnProtocols?: readonly string[];
  /** Ticket keys (shared between servers/workers to resume across them); false disables tickets. */
  ticketKeys?: TicketKeys | false;
  /** NewSessionTickets sent per handshake (default 2). */
  tickets?: number;
  /**
   * Ticket lifetime in seconds (default and maximum 7 days). The lifetime sent to clients is also
   * capped at what the ticket keys still accept (default keys: 1 to 2 hours), so a ticket is never
   * advertised for longer than it resumes.
   */
  ticketLifetimeS?: number;
  /** Deadline for one signature (default 10 s); exceeded → internal_error for that handshake. */
  signTimeoutMs?: number;
  /** Deadline for the whole handshake (default 10 s). */
  handshakeTimeoutMs?: number;
  /**
   * Check each signature against the certificate before sending it: 'rsa' (default:
   * an RSA-CRT fault in the key-holder leaks the private key through one faulty signature, and an
   * RSA verify is cheap), true (ECDSA too: a faulty ECDSA signature leaks nothing and the client
   * rejects it anyway, while the verify cost ~10% of full P-256 handshakes/s in bench:tls) or false.
   */
  verifyAfterSign?: boolean | 'rsa';
  /** Listener name reported in handshake observations. */
  name?: string;
  /**
   * TCP_NODELAY on accepted sockets (default true): writes are already batched per turn, and Nagle
   * + delayed ACK would hold a second write (a response after the tickets) for ~40 ms.
   */
  noDelay?: boolean;
  /** See TlsSocketOptions.serverFlight (default 'whole'). */
  serverFlight?: 'whole' | 'split';
  /** See TlsSocketOptions.ticketHoldMs (default 50). */
  ticketHoldMs?: number;
  /** Called once per handshake with its timings and outcome (also published on HANDSHAKE_CHANNEL). */
  onHandshake?: (o: HandshakeObservation) => void;
  /** Keep a socket writable after the peer's close_notify/FIN (default false, as node:tls). */
  allowHalfOpen?: boolean;
  /** Handshakes in progress beyond which new connections are refused (default unlimited). */
  maxConcurrentHandshakes?: number;
  /** Open connections beyond which new ones are refused (default unlimited). */
  maxConnections?: number;
  /** Largest ClientHello accepted, bytes (default: the grammar's maximum, 131,396, as OpenSSL). */
  maxClientHelloBytes?: number;
  /**
   * Per-connection admission (per-client counts and rates, load shedding): asked at accept and
   * before each full handshake's key exchange. Refusals are published on REFUSED_CHANNEL.
   */
  admission?: ClientAdmission;
  /**
   * Key exchange groups in preference order, by IANA name (default: X25519MLKEM768, SecP256r1MLKEM768,
   * x25519, secp256r1, x448, secp384r1, secp521r1, ffdhe2048, ffdhe3072, ffdhe4096). Hybrid groups
   * and ffdhe* apply to TLS 1.3 only.
   */
  groups?: readonly string[];
  /** 'strict': a server name no certificate serves gets unrecognized_name (default: the first certificate). */
  sni?: 'default' | 'strict';
  /** Lowest protocol version accepted (default '1.2'). */
  minVersion?: TlsVersionName;
  /** Highest protocol version accepted (default '1.3'). */
  maxVersion?: TlsVersionName;
  /**
   * TLS 1.2: refuse clients without RFC 7627 extended_master_secret (default true). false admits
   * them with the RFC 5246 master secret (open to the triple handshake attack); their tickets
   * never resume a session of the other kind (RFC 7627 §5.3).
   */
  requireExtendedMasterSecret?: boolean;
  /**
   * Client certificates (mTLS). With mode optional or require, no session tickets are issued or
   * accepted: a resumed handshake carries no client certificate to verify.
   */
  clientAuth?: ClientAuthOptions;
  /**
   * Runs on every accepted TCP connection within the listener's caps, before admission (PROXY
   * protocol: the client's address it reads is the one admission counts); see ConnectionGate.
   */
  gate?: ConnectionGate;
  /**
   * ACME tls-alpn-01 (RFC 8737): the validation certificate of a server name with a pending
   * challenge, or undefined. Consulted only for hellos offering acme-tls/1; with it, a server may
   * start with no certificate of its own (it is waiting for its first ACME one).
   */
  acmeChallenge?: (servername: string) => CertifiedKey | undefined;
}

/** A TLS 1.3 / 1.2 server with asynchronous signatures. */
export class TlsServer extends EventEmitter {
  readonly netServer: Server;
  private config: ServerHandshakeConfig;
  private handshaking = 0;
  /** The server's ticket keys, kept while mTLS turns tickets off so a reload can turn them back on. */
  private readonly ticketKeys: TicketKeys | undefined;
  private open = 0;
  private readonly held = new Set<Socket>();
  /** Connections refused at accept (maxConcurrentHandshakes, maxConnections or admission). */
  shedConnections = 0;

  private readonly options: TlsServerOptions;

  constructor(options: TlsServerOptions) {
    super();
    this.options = { ...options }; // setLimits changes the copy, never the caller's object
    if (options.certificates.length === 0 && !options.acmeChallenge) throw new TypeError('createServer needs at least one certificate');
    const entries: CertEntry[] = options.certificates.map((c) => prepareCertEntry(c, c.servername));
    const verify = options.verifyAfterSign ?? 'rsa';
    const clientAuth = prepareClientAuth(options.clientAuth);
    const minVersion = options.minVersion ?? '1.2';
    const maxVersion = options.maxVersion ?? '1.3';
    for (const v of [minVersion, maxVersion]) if (v !== '1.2' && v !== '1.3') throw new TypeError(`TLS version must be '1.2' or '1.3', got '${String(v)}'`);
    if (minVersion > maxVersion) throw new TypeError(`minVersion ${minVersion} is above maxVersion ${maxVersion}`);
    const groups = options.groups ? parseGroups(options.groups) : undefined;
    if (options.sni !== undefined && options.sni !== 'default' && options.sni !== 'strict') {
      throw new TypeError(`sni must be 'default' or 'strict', got '${String(options.sni)}'`);
    }
    this.ticketKeys = options.ticketKeys === false ? undefined : options.ticketKeys ?? new TicketKeys();
    this.config = {
      certificates: entries,
      alpnProtocols: options.alpnProtocols,
      ticketKeys: this.ticketKeys,
      ticketCount: options.tickets ?? 2,
      ticketLifetimeS: Math.min(options.ticketLifetimeS ?? MAX_TICKET_LIFETIME_S, MAX_TICKET_LIFETIME_S),
      verifyAfterSign: (keyType) => verify === true || (verify === 'rsa' && keyType === 'rsa'),
      now: Date.now,
      minVersion,
      maxVersion,
      requireExtendedMasterSecret: options.requireExtendedMasterSecret ?? true,
      ...(options.maxClientHelloBytes !== undefined ? { maxClientHelloBytes: options.maxClientHelloBytes } : {}),
      ...(groups ? { groups } : {}),
      ...(options.sni === 'strict' ? { sniStrict: true } : {}),
      ...(clientAuth ? { clientAuth, ticketKeys: undefined } : {}),
      ...(options.acmeChallenge ? { acmeChallenge: challengeEntries(options.acmeChallenge) } : {}),
    };
    this.netServer = createNetServer({ allowHalfOpen: true }, (raw) => this.onConnection(raw));
    this.netServer.on('error', (err) => this.emit('error', err));
    this.netServer.on('listening', () => this.emit('listening'));
    this.netServer.on('close', () => this.emit('close'));
  }

  /**
   * Replaces the certificates for new connections (a reload); connections already accepted keep
   * the set they started with.
   */
  setCertificates(certificates: readonly ServerCertificate[]): void {
    if (certificates.length === 0 && !this.options.acmeChallenge) throw new TypeError('setCertificates needs at least one certificate');
    this.config = { ...this.config, certificates: certificates.map((c) => prepareCertEntry(c, c.servername)) };
  }

  /**
   * Replaces the client-certificate policy for new connections (a reload: new CA bundle or
   * allowed names). Throws, changing nothing, when the new options are invalid.
   */
  setClientAuth(clientAuth: ClientAuthOptions | undefined): void {
    const policy = prepareClientAuth(clientAuth);
    const ticketKeys = policy ? undefined : this.ticketKeys;
    const { clientAuth: _old, ...rest } = this.config;
    this.config = { ...rest, ticketKeys, ...(policy ? { clientAuth: policy } : {}) };
  }

  /**
   * Replaces the connection limits for new connections (a reload); open connections keep theirs.
   * Fields left out keep their values.
   */
  setLimits(limits: Pick<TlsServerOptions, 'maxConnections' | 'maxConcurrentHandshakes' | 'maxClientHelloBytes' | 'admission'>): void {
    const { maxClientHelloBytes, ...rest } = limits;
    Object.assign(this.options, rest);
    if (maxClientHelloBytes !== undefined) this.config = { ...this.config, maxClientHelloBytes };
  }

  /** Handshakes currently in progress. */
  get handshakesInProgress(): number { return this.handshaking; }

  private refuse(raw: Socket, reason: string, address = raw.remoteAddress ?? ''): void {
    this.shedConnections++;
    publishRefused({ reason, address, ...(this.options.name ? { listener: this.options.name } : {}) });
    // Nothing is read from it: it can cost neither TLS work nor an HSM signature. Closed now, or,
    // for a client admission says keeps coming back, held a while first (a bounded number at once).
    const holdMs = this.held.size < MAX_HELD_REFUSALS ? this.options.admission?.holdRefused?.(address, reason) ?? 0 : 0;
    if (holdMs <= 0) {
      raw.destroy();
      return;
    }
    raw.pause();
    raw.on('error', () => undefined);
    this.held.add(raw);
    const timer = setTimeout(() => raw.destroy(), holdMs);
    timer.unref();
    raw.once('close', () => {
      clearTimeout(timer);
      this.held.delete(raw);
    });
  }

  /** Refused connections being held before their close. */
  get heldRefusals(): number { return this.held.size; }

  private onConnection(raw: Socket): void {
    const { maxConcurrentHandshakes, maxConnections, gate } = this.options;
    if (maxConnections !== undefined && this.open >= maxConnections) return this.refuse(raw, 'listener_connections');
    if (maxConcurrentHandshakes !== undefined && this.handshaking >= maxConcurrentHandshakes) {
      return this.refuse(raw, 'listener_handshakes');
    }
    if (this.options.noDelay ?? true) raw.setNoDelay(true);
    if (!gate) {
      this.admit(raw);
      return;
    }
    // The gate reads its preface within the listener's caps: the connection holds its slots meanwhile.
    this.handshaking++;
    this.open++;
    let held = true;
    const release = (): void => {
      if (!held) return;
      held = false;
      this.handshaking--;
      this.open--;
    };
    // A gate that refuses destroys the socket: the slots are freed with it.
    raw.once('close', release);
    gate(raw, (preface) => {
      if (!held || raw.destroyed) return;
      raw.off('close', release);
      release();
      this.admit(raw, preface);
    });
  }

  /** Per-client admission (by the client's address, the gate's if it told one), then the handshake. */
  private admit(raw: Socket, preface?: ConnectionPreface): void {
    let admitted: AdmittedConnection | undefined;
    const admission = this.options.admission;
    if (admission) {
      const address = preface?.client?.address ?? raw.remoteAddress ?? '';
      const answer = admission.open(address);
      if (typeof answer === 'string') return this.refuse(raw, answer, address);
      admitted = answer;
    }
    this.handshaking++;
    this.open++;
    const socket = new TlsSocket(raw, new ServerConnection(this.config), {
      signTimeoutMs: this.options.signTimeoutMs ?? 10_000,
      handshakeTimeoutMs: this.options.handshakeTimeoutMs ?? 10_000,
      listener: this.options.name,
      allowHalfOpen: this.options.allowHalfOpen,
      onHandshake: this.options.onHandshake,
      serverFlight: this.options.serverFlight,
      ticketHoldMs: this.options.ticketHoldMs,
      ...(admitted ? { admitted } : {}),
      ...(preface?.client ? { client: preface.client } : {}),
    });
    let settled = false;
    const settle = (): void => {
      if (settled) return;
      settled = true;
      this.handshaking--;
      admitted?.handshakeEnded();
    };
    socket.once('secure', () => { settle(); this.emit('secureConnection', socket); });
    socket.once('handshakeError', (err: TlsError) => { settle(); this.emit('tlsClientError', err, socket); });
    socket.once('close', () => {
      settle();
      const closed = (): void => { this.open--; admitted?.closed(); };
      // A transport still draining (output in flight, or the peer's input read after our alert) keeps
      // its descriptor, so it keeps its place under the connection caps until it closes.
      if (raw.closed) closed();
      else raw.once('close', closed);
    });
    if (preface?.head && preface.head.length > 0) socket.receive(preface.head);
    // A gate that read a preface paused the socket; TLS reads from here on.
    if (raw.isPaused()) raw.resume();
  }

  /** Same arguments as net.Server.listen. */
  listen(port?: number, host?: string, cb?: () => void): this;
  listen(port: number, cb?: () => void): this;
  listen(options: ListenOptions, cb?: () => void): this;
  listen(...args: unknown[]): this {
    // net.Server.listen's overloads cannot be forwarded by type; the arguments are passed unchanged.
    (this.netServer.listen as (...a: unknown[]) => unknown).apply(this.netServer, args);
    return this;
  }

  /** Stops accepting connections; existing ones carry on. */
  close(cb?: (err?: Error) => void): this {
    this.netServer.close(cb);
    return this;
  }

  address(): AddressInfo | string | null { return this.netServer.address(); }
}

/** Creates a TlsServer; `onSecureConnection` is added as a 'secureConnection' listener. */
export function createServer(options: TlsServerOptions, onSecureConnection?: (socket: TlsSocket) => void): TlsServer {
  const server = new TlsServer(options);
  if (onSecureConnection) server.on('secureConnection', onSecureConnection);
  return server;
}

/** Challenge lookups as selection entries, each certificate parsed once (not per validation hello). */
function challengeEntries(
  lookup: (servername: string) => CertifiedKey | undefined,
): (servername: string) => CertEntry | undefined {
  const prepared = new WeakMap<CertifiedKey, CertEntry>();
  return (servername) => {
    const certified = lookup(servername);
    if (!certified) return undefined;
    let entry = prepared.get(certified);
    if (!entry) {
      entry = prepareCertEntry(certified, [servername]);
      prepared.set(certified, entry);
    }
    return entry;
  };
}
