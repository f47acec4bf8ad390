// A TlsListenerFactory on node:tls, for certificates whose keys are ordinary key files. It is the
// baseline and the test front end; HSM-held keys go through tls/ TlsServer, which has the async
// signing node:tls lacks. Several certificates per listener: SNI picks the names, and within a
// name OpenSSL picks RSA or ECDSA by what the client offers (fully so only for the first site;
// see ContextSet.pick).
import { X509Certificate } from 'node:crypto';
import { channel } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { DEFAULTS, type ListenerConfig } from '../config/index.js';
import { CHANNELS, type TlsHandshakeEvent, type TlsRefusedEvent } from '../metrics/index.js';
import { ClientLimiter } from './client-limits.js';
import { ListenerError } from './errors.js';
import type { TlsListener, TlsListenerFactory } from './listener.js';

interface LoadedCert { names: string[]; cert: Buffer; key: Buffer; keyType: string | undefined }

function load(l: ListenerConfig): LoadedCert[] {
  return l.certificates.map(({ cert, key }) => {
    let certPem: Buffer;
    let keyPem: Buffer;
    try { certPem = readFileSync(cert); } catch (err) { throw new ListenerError(l.name, `cannot read certificate ${cert}: ${(err as Error).message}`); }
    try { keyPem = readFileSync(key); } catch (err) { throw new ListenerError(l.name, `cannot read key ${key}: ${(err as Error).message}`); }
    let leaf: X509Certificate;
    try { leaf = new X509Certificate(certPem); } catch { throw new ListenerError(l.name, `${cert} is not a PEM certificate`); }
    const names = (leaf.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('DNS:')).map((n) => n.slice(4).toLowerCase());
    if (names.length === 0) names.push(/CN=([^\n,]+)/.exec(leaf.subject)?.[1]?.toLowerCase() ?? '');
    return { names, cert: certPem, key: keyPem, keyType: leaf.publicKey.asymmetricKeyType };
  });
}

function matches(pattern: string, name: string): boolean {
  if (pattern === name) return true;
  // TLS wildcards cover exactly one label.
  return pattern.startsWith('*.') && name.endsWith(pattern.slice(1)) && !name.slice(0, -pattern.length + 1).includes('.');
}

/** Secure contexts for one listener: one per set of certificates sharing a name. */
class ContextSet {
  private readonly byName = new Map<string, tls.SecureContext>();
  readonly defaultOptions: tls.SecureContextOptions;

  constructor(private readonly listener: ListenerConfig, private readonly certs: LoadedCert[]) {
    this.defaultOptions = this.optionsFor(certs.filter((c) => c.names.some((n) => certs[0]!.names.includes(n))));
    tls.createSecureContext(this.defaultOptions); // fail now (key mismatch...) rather than at the first client
  }

  pick(servername: string): tls.SecureContext | undefined {
    const name = servername.toLowerCase();
    const cached = this.byName.get(name);
    if (cached) return cached;
    const chosen = this.certs.filter((c) => c.names.some((p) => matches(p, name)));
    if (chosen.length === 0) return undefined;
    // OpenSSL (as node drives it) carries over only the last-loaded key type when SNI switches
    // context; the others keep the default context's certificates. Loading ECDSA last gives
    // modern clients the right site. RSA-only clients of a non-default site may get the default
    // site's RSA certificate: a limitation of this node:tls front, not of tls/ TlsServer.
    chosen.sort((a, b) => Number(a.keyType === 'ec') - Number(b.keyType === 'ec'));
    const ctx = tls.createSecureContext(this.optionsFor(chosen));
    if (this.byName.size < 1000) this.byName.set(name, ctx);
    return ctx;
  }

  private optionsFor(certs: LoadedCert[]): tls.SecureContextOptions {
    const l = this.listener;
    const version = (v: string) => (v === '1.2' ? 'TLSv1.2' : 'TLSv1.3') as tls.SecureVersion;
    return {
      cert: certs.map((c) => c.cert), key: certs.map((c) => c.key),
      minVersion: version(l.minVersion), maxVersion: version(l.maxVersion),
      ...(l.clientAuth.caFile ? { ca: readFileSync(l.clientAuth.caFile) } : {}),
    };
  }
}

function buildContexts(l: ListenerConfig): ContextSet {
  try {
    return new ContextSet(l, load(l));
  } catch (err) {
    if (err instanceof ListenerError) throw err;
    throw new ListenerError(l.name, `certificates do not load: ${(err as Error).message}`, { cause: err });
  }
}

const handshakeChannel = channel(CHANNELS.tlsHandshake);
const refusedChannel = channel(CHANNELS.tlsRefused);

/**
 * Publishes the handshake events tls/ TlsServer publishes, so the node:tls front shows up in the
 * same metrics. OpenSSL signs inside the handshake, so the signature wait is not measurable (0).
 */
function observeHandshakes(server: tls.Server, listener: string): void {
  const started = new WeakMap<Socket, number>();
  // node:tls wraps the accepted socket; `_parent` is the raw one (undocumented but stable since v0.x).
  const since = (s: tls.TLSSocket) => {
    const now = performance.now();
    return now - (started.get((s as unknown as { _parent: Socket })._parent) ?? now);
  };
  server.on('connection', (raw: Socket) => { if (handshakeChannel.hasSubscribers) started.set(raw, performance.now()); });
  server.on('secureConnection', (s: tls.TLSSocket) => {
    if (!handshakeChannel.hasSubscribers) return;
    const keyType = s.getX509Certificate()?.publicKey.asymmetricKeyType;
    const event: TlsHandshakeEvent = {
      version: s.getProtocol() === 'TLSv1.2' ? 'TLSv1.2' : 'TLSv1.3', suite: s.getCipher()?.standardName ?? '', group: '',
      keyType: keyType === 'ec' ? 'ec' : keyType?.startsWith('rsa') ? 'rsa' : '', resumed: s.isSessionReused(),
      result: 'ok', durationMs: since(s), signWaitMs: 0, listener, ...(s.servername ? { servername: s.servername } : {}),
    };
    handshakeChannel.publish(event);
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException, s: tls.TLSSocket) => {
    if (!handshakeChannel.hasSubscribers) return;
    const result = err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? 'timeout' : err.code === 'ECONNRESET' ? 'closed' : 'alert_sent';
    handshakeChannel.publish({ version: 'TLSv1.3', suite: '', group: '', keyType: '', resumed: false, result, durationMs: since(s), signWaitMs: 0, listener } satisfies TlsHandshakeEvent);
  });
}

/**
 * The listener's connection limits on a node:tls server: open connections and handshakes in
 * progress, in all and per client, refused at accept as the offload listener does. (Keys here are
 * local: no signature to shed, so the full-handshake rate does not apply.)
 */
function applyConnectionLimits(server: tls.Server, listener: ListenerConfig): { update(next: ListenerConfig): void } {
  let l = listener.limits ?? DEFAULTS.listenerLimits;
  const gate = new ClientLimiter(l.perClient);
  let open = 0;
  let handshaking = 0;
  const refuse = (raw: Socket, reason: string): void => {
    raw.destroy();
    if (refusedChannel.hasSubscribers) {
      refusedChannel.publish({ listener: listener.name, reason, address: raw.remoteAddress ?? '' } satisfies TlsRefusedEvent);
    }
  };
  server.on('connection', (raw: Socket) => {
    if (open >= l.maxConnections) return refuse(raw, 'listener_connections');
    if (handshaking >= l.maxHandshakes) return refuse(raw, 'listener_handshakes');
    const admitted = gate.open(raw.remoteAddress ?? '');
    if (typeof admitted === 'string') return refuse(raw, admitted);
    open++;
    handshaking++;
    let ended = false;
    const handshakeEnded = (): void => {
      if (ended) return;
      ended = true;
      handshaking--;
      admitted.handshakeEnded();
    };
    handshakesOf.set(raw, handshakeEnded);
    raw.once('close', () => {
      handshakeEnded();
      open--;
      admitted.closed();
    });
  });
  const parentOf = (s: tls.TLSSocket): Socket | undefined => (s as unknown as { _parent?: Socket })._parent;
  const handshakesOf = new WeakMap<Socket, () => void>();
  const settle = (s: tls.TLSSocket): void => {
    const raw = parentOf(s);
    if (raw) handshakesOf.get(raw)?.();
  };
  server.on('secureConnection', settle);
  server.on('tlsClientError', (_err: Error, s: tls.TLSSocket) => settle(s));
  return {
    update(next) {
      l = next.limits ?? DEFAULTS.listenerLimits;
      gate.setOptions(l.perClient);
    },
  };
}

/** Listens with node:tls on the listener's address and port. */
export const nodeTlsListenerFactory: TlsListenerFactory = async (listener, onSecureConnection, settings) => {
  // node:tls reads the socket itself; the PROXY header is read by the offloading listener's gate.
  if (listener.proxyProtocol) throw new ListenerError(listener.name, 'proxyProtocol needs the offloading listener (tls/ TlsServer)');
  let contexts = buildContexts(listener);
  const server = tls.createServer({
    ...contexts.defaultOptions,
    ALPNProtocols: listener.alpn,
    requestCert: listener.clientAuth.mode !== 'none',
    rejectUnauthorized: listener.clientAuth.mode === 'require',
    handshakeTimeout: settings.handshakeTimeoutMs,
    // Responses go out as several TLS records; with Nagle on, delayed ACKs add ~40 ms to each.
    noDelay: true,
    SNICallback: (name, cb) => cb(null, contexts.pick(name)),
  });
  observeHandshakes(server, listener.name);
  const limits = applyConnectionLimits(server, listener);
  server.on('secureConnection', onSecureConnection);
  server.on('tlsClientError', () => { /* the peer's failed handshake; it gets its alert, we carry on */ });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new ListenerError(listener.name, `cannot listen on ${listener.address}:${listener.port}: ${err.message}`, { cause: err })));
    server.listen(listener.port, listener.address, () => resolve());
  });
  const handle: TlsListener = {
    address: () => server.address(),
    async update(next) {
      if (next.proxyProtocol) throw new ListenerError(next.name, 'proxyProtocol needs the offloading listener (tls/ TlsServer)');
      const fresh = buildContexts(next); // throws before anything changes
      server.setSecureContext(fresh.defaultOptions);
      contexts = fresh;
      limits.update(next);
    },
    async close() {
      // Not waiting for the callback: it fires only once every open connection has ended.
      if (server.listening) server.close();
    },
  };
  return handle;
};
