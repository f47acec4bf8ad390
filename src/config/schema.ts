// The shape of a validated configuration and its defaults. Paths to files are absolute here
// (resolved against the base directory at load), so consumers never guess what they are relative to.
import type { AcmeCertificateConfig, AcmeConfig } from './acme.js';
import type { AutoscaleConfig } from './autoscale.js';
import type { HedgeConfig } from './hedge.js';
import type { DelegatedCredentialsConfig } from './delegated-credentials.js';
import type { Http2Config } from './http2.js';

export type TlsVersion = '1.2' | '1.3';
export type ClientAuthMode = 'none' | 'optional' | 'require';
export type BalanceStrategy = 'round-robin' | 'least-connections';
export type HsmMode = 'embedded' | 'cluster' | 'pkcs11';
export type CapacityProfileName = 'unlimited' | 'hsm1.medium' | 'hsm2m.medium';
export type TicketKeySource = 'local' | 'hsm' | 'file';
/** How the proxy speaks to an upstream: HTTP/1.1, HTTP/2 over TLS (ALPN), or HTTP/2 over cleartext (h2c). */
export type UpstreamProtocol = 'http1' | 'h2' | 'h2c';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export const TLS_VERSIONS: readonly TlsVersion[] = ['1.2', '1.3'];
/**
 * Key exchange groups a listener may name, in the default preference order (config/ imports nothing:
 * the list restates tls/kex.ts GROUP_NAMES, and test/config-groups.test.ts keeps the two equal).
 */
export const TLS_GROUPS: readonly string[] = [
  'X25519MLKEM768', 'SecP256r1MLKEM768', 'x25519', 'secp256r1', 'x448', 'secp384r1', 'secp521r1',
  'ffdhe2048', 'ffdhe3072', 'ffdhe4096',
];
export type SniPolicy = 'default' | 'strict';
export const SNI_POLICIES: readonly SniPolicy[] = ['default', 'strict'];
export const CLIENT_AUTH_MODES: readonly ClientAuthMode[] = ['none', 'optional', 'require'];
export const BALANCE_STRATEGIES: readonly BalanceStrategy[] = ['round-robin', 'least-connections'];
export const HSM_MODES: readonly HsmMode[] = ['embedded', 'cluster', 'pkcs11'];
export const CAPACITY_PROFILES: readonly CapacityProfileName[] = ['unlimited', 'hsm1.medium', 'hsm2m.medium'];
export const TICKET_KEY_SOURCES: readonly TicketKeySource[] = ['local', 'hsm', 'file'];
export const UPSTREAM_PROTOCOLS: readonly UpstreamProtocol[] = ['http1', 'h2', 'h2c'];
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** A certificate chain and the key reference (or key) that signs for it. */
export interface CertificateConfig { cert: string; key: string }

/** Request headers that carry the verified client certificate to the upstream (lower case). */
export interface ClientCertHeaders { subject: string; san: string; fingerprint: string; verify: string }

/** Client-certificate checking (mTLS) on a listener. */
export interface ClientAuthConfig {
  mode: ClientAuthMode;
  /** PEM bundle of trusted client CAs (required unless mode is none). */
  caFile?: string;
  allowedSubjects?: string[];
  allowedSans?: string[];
  /** Most intermediate CAs between a client certificate and a trusted CA (default 4). */
  maxDepth?: number;
  /** Filled in by validation; optional so hand-built configs may omit it (the defaults apply). */
  headers?: ClientCertHeaders;
}

/** One TLS listening socket and the certificates it can present. */
export interface ListenerConfig {
  name: string;
  address: string;
  port: number;
  /** Certificates from files. */
  certificates: CertificateConfig[];
  /**
   * Certificates ordered through ACME (the `{ acme: ... }` items of `certificates`); optional so
   * hand-built configs may omit it.
   */
  acme?: AcmeCertificateConfig[];
  alpn: string[];
  minVersion: TlsVersion;
  maxVersion: TlsVersion;
  /**
   * TLS 1.2 clients must offer RFC 7627 extended_master_secret (default true). Filled in by
   * validation; optional so hand-built configs may omit it.
   */
  requireExtendedMasterSecret?: boolean;
  /** Key exchange groups in preference order (IANA names); absent = every group, default order. */
  groups?: string[];
  /**
   * 'default': a server name no certificate serves gets the first certificate (nginx's default
   * server); 'strict': it gets the unrecognized_name alert. Absent = 'default'.
   */
  sni?: SniPolicy;
  clientAuth: ClientAuthConfig;
  /**
   * PROXY protocol (v1 or v2) from the layer-4 balancers at these addresses (CIDRs): every
   * connection must come from one of them and start with a PROXY header, whose source address is
   * the client's. Absent: connections are direct and their TCP peer is the client.
   */
  proxyProtocol?: { from: string[] };
  /** RFC 9345 delegated credentials; filled in by validation, optional so hand-built configs may omit it (off). */
  delegatedCredentials?: DelegatedCredentialsConfig;
  /** Resource limits; filled in by validation (optional so hand-built configs may omit it: defaults apply). */
  limits?: ListenerLimits;
}

/**
 * What one listener lets its clients hold. A client is a source IPv4 address or IPv6 /64, as
 * the TCP connection (or the PROXY protocol header, where one is read) gives it; limits count per
 * serving process. Every full handshake costs an HSM signature: these keep one client from
 * spending the cluster's signatures or this process's memory.
 */
export interface ListenerLimits {
  /** Open connections on the listener; beyond, new ones are closed at accept. */
  maxConnections: number;
  /** Handshakes in progress on the listener; beyond, new connections are closed at accept. */
  maxHandshakes: number;
  /** Largest ClientHello buffered, bytes (illegal_parameter beyond). */
  maxClientHelloBytes: number;
  perClient: {
    /** Connections one client may hold open (0 = no limit). */
    maxConnections: number;
    /** Handshakes one client may have in progress (0 = no limit). */
    maxHandshakes: number;
    /** Full handshakes per second, sustained (0 = no limit); over it, shed before any HSM work. */
    handshakesPerSecond: number;
    /** Full handshakes at once after a quiet spell (the token bucket's size). */
    handshakeBurst: number;
  };
}

/** Timeouts towards upstream servers, in milliseconds. */
export interface UpstreamTimeouts { connectMs: number; responseMs: number; idleMs: number }

/** Active health checking of every target of a pool. */
export interface HealthCheckConfig {
  path: string; intervalMs: number; timeoutMs: number; unhealthyAfter: number; healthyAfter: number;
}

/** A named pool of upstream servers. */
export interface UpstreamConfig {
  name: string;
  targets: string[];
  balance: BalanceStrategy;
  healthCheck?: HealthCheckConfig;
  timeouts: UpstreamTimeouts;
  /** Connections to each target at most (requests beyond wait in the queue). */
  maxConnections: number;
  /** Requests waiting for a connection to a target at most; beyond it the client gets 503. */
  maxQueue: number;
  /** Filled in by validation (default http1); optional so hand-built configs may omit it. */
  protocol?: UpstreamProtocol;
}

/** Host + path prefix → upstream pool. An inline URL list becomes a pool named after the route's path (`routes[2]`). */
export interface RouteConfig {
  name: string;
  host?: string;
  pathPrefix: string;
  upstream: string;
  timeouts: Partial<UpstreamTimeouts>;
}

/** Where the crypto-user PIN comes from: an environment variable or a 0600 file. */
export interface CredentialsConfig { env?: string; file?: string }

/** The HSM backend: an embedded simulated cluster, a cluster of separate HSM processes, or PKCS#11. */
export interface HsmConfig {
  mode: HsmMode;
  dir: string;
  hsms: number;
  profile: CapacityProfileName;
  manifest?: string;
  /** pkcs11: overrides the module path every key reference records. */
  module?: string;
  /** pkcs11, without `module`: the modules (absolute paths) key references may name; others are never loaded. */
  allowedModules?: string[];
  /** pkcs11: looks every key up on the token with this label instead of the one its reference records. */
  token?: string;
  /** pkcs11: sessions per token, i.e. signatures in flight on it at once. */
  sessions: number;
  credentials: CredentialsConfig;
  /**
   * Signatures in flight, the queue's deadline (timeoutMs) and length (maxQueue), and the queue
   * length from which full handshakes are shed while resumptions (no signature) still pass.
   * The last two are filled in by validation (optional so hand-built configs may omit them), as
   * is `hedge` (hedged signs on the simulated cluster; ignored for PKCS#11).
   */
  signing: {
    maxInFlight: number; timeoutMs: number; maxQueue?: number; shedFullHandshakesAt?: number; hedge?: HedgeConfig;
  };
  /** Scaling advisor knobs, and whether the simulated cluster follows them (embedded/cluster modes). */
  autoscale?: AutoscaleConfig;
}

/** Session-ticket keys: made per proxy, or derived per epoch from a secret all proxies reach (config/tickets.ts). */
export interface TicketsConfig {
  keys: TicketKeySource;
  /** keys: file — a 0600 file of at least 32 random bytes (nginx's 48- and 80-byte key files qualify). */
  file?: string;
  /** One epoch: a key seals tickets for this long and opens them for twice as long. */
  rotateEveryMs: number;
  /** keys: hsm — the label of the cluster's secret key (found, or made on first start). */
  hsmKeyLabel: string;
}

/** The admin HTTP server (/metrics, /healthz, /readyz). */
export interface AdminConfig { address: string; port: number }

/** Client-side timeouts, in milliseconds. */
export interface ServerTimeouts {
  handshakeMs: number; headersMs: number; requestMs: number; idleMs: number; shutdownMs: number;
  /**
   * Longest silence inside a request body (nginx's client_body_timeout); filled in by validation,
   * optional so hand-built configs may omit it (the default applies).
   */
  bodyIdleMs?: number;
}

/** A complete, validated hsmproxy configuration. */
export interface Config {
  listeners: ListenerConfig[];
  routes: RouteConfig[];
  upstreams: Record<string, UpstreamConfig>;
  hsm: HsmConfig;
  admin: AdminConfig;
  workers: number | 'auto';
  log: { level: LogLevel };
  timeouts: ServerTimeouts;
  /**
   * Peers (CIDRs) whose X-Forwarded-For/-Proto/-Host, Forwarded and X-Real-IP are believed:
   * from anyone else those headers are replaced, never appended to. Default: none.
   */
  trustedProxies: string[];
  /** Where session-ticket keys come from. */
  tickets: TicketsConfig;
  /** Request head limits: bytes of request line + headers (431 past it) and header lines. */
  http: { maxHeaderBytes: number; maxHeaders: number };
  /** HTTP/2 client connection limits; filled in by validation, optional for hand-built configs. */
  http2?: Http2Config;
  /**
   * The demo: on start, make the dev CA and localhost certificates (keys in the HSM) in the
   * directory of the first listener's first certificate if they are not there, and run the demo
   * upstream at `upstreams.demo`'s first target. config/hsmproxy.yaml (the default) sets it.
   */
  demo: boolean;
  /** The ACME CA and account, when some listener has an acme certificate. */
  acme?: AcmeConfig;
}

/** Defaults for every optional field; documented in the example configs. */
export const DEFAULTS = {
  listener: { address: '0.0.0.0', alpn: ['h2', 'http/1.1'], minVersion: '1.2' as TlsVersion, maxVersion: '1.3' as TlsVersion, requireExtendedMasterSecret: true, sni: 'default' as SniPolicy },
  // Sized for a 2-core proxy (~600 full handshakes/s, docs/operations.md "Limits"): one client may
  // take a sixth of that, a browser behind a NAT never meets them, and the handshakes in progress
  // times the ClientHello cap bound the memory a flood can pin (512 x 128 KiB = 64 MiB).
  listenerLimits: {
    maxConnections: 8192, maxHandshakes: 512, maxClientHelloBytes: 131_396,
    perClient: { maxConnections: 256, maxHandshakes: 32, handshakesPerSecond: 100, handshakeBurst: 200 },
  } satisfies ListenerLimits,
  route: { pathPrefix: '/' },
  upstream: {
    balance: 'round-robin' as BalanceStrategy,
    timeouts: { connectMs: 5_000, responseMs: 60_000, idleMs: 60_000 } satisfies UpstreamTimeouts,
    // nginx keeps no cap by default; 128 connections per target is more than one 2-core proxy
    // can feed, and the queue absorbs bursts without unbounded memory.
    maxConnections: 128,
    maxQueue: 1024,
    healthCheck: { path: '/', intervalMs: 5_000, timeoutMs: 2_000, unhealthyAfter: 2, healthyAfter: 2 } satisfies HealthCheckConfig,
  },
  hsm: {
    mode: 'embedded' as HsmMode, dir: './data', hsms: 2, profile: 'unlimited' as CapacityProfileName, sessions: 8,
    credentials: { env: 'HSMPROXY_PIN' }, signing: { maxInFlight: 256, timeoutMs: 2_000, maxQueue: 1024, shedFullHandshakesAt: 256 },
  },
  admin: { address: '127.0.0.1', port: 9464 },
  clientCertHeaders: {
    subject: 'x-client-cert-subject', san: 'x-client-cert-san', fingerprint: 'x-client-cert-fingerprint-sha256', verify: 'x-client-cert-verify',
  } satisfies ClientCertHeaders,
  workers: 1,
  tickets: { keys: 'local' as TicketKeySource, rotateEveryMs: 3_600_000, hsmKeyLabel: 'hsmproxy-session-tickets' },
  trustedProxies: [] as string[],
  // node:http's and nginx's order of magnitude (16 KiB; nginx 4 x 8 KiB buffers).
  http: { maxHeaderBytes: 16 * 1024, maxHeaders: 100 },
  log: { level: 'info' as LogLevel },
  timeouts: {
    handshakeMs: 10_000, headersMs: 15_000, requestMs: 300_000, idleMs: 60_000, shutdownMs: 10_000, bodyIdleMs: 60_000,
  } satisfies ServerTimeouts,
} as const;
