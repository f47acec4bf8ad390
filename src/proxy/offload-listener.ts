// The production TLS listener: tls/ TlsServer with every certificate's key behind an engine
// Signer, so each handshake signature is offloaded (HSM, PKCS#11) without blocking the loop.
// Certificates and references are loaded and resolved before the listener opens, so a missing
// key or an unreachable HSM fails the start (or a reload) with a message naming the file.
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { DEFAULTS, type ListenerConfig } from '../config/index.js';
import type { Admission, Engine } from '../engine/index.js';
import {
  ACME_TLS_ALPN, canDelegate, createServer, pemCertificates, TicketKeys, type CertifiedKey,
  type ClientAuthOptions, type ServerCertificate, type TlsServer, type TlsServerOptions,
} from '../tls/index.js';
import { ClientLimiter } from './client-limits.js';
import { CertificateFileError, checkKeyMatchesCertificate, readCertificateChain } from './certificate-files.js';
import { clientGate } from './client-gate.js';
import { CredentialKeeper } from './delegated-credentials.js';
import { ListenerError } from './errors.js';
import type { TlsListener, TlsListenerFactory } from './listener.js';

/** The listen backlog asked of the kernel (Linux caps it at net.core.somaxconn, 4096 by default). */
const LISTEN_BACKLOG = 4096;

/** Options shared by every listener the factory opens. */
export interface OffloadListenerOptions {
  engine: Engine;
  /** Deadline for one signature (the HSM round trip), ms. */
  signTimeoutMs?: number;
  /** Ticket keys shared by all listeners (and workers), so resumption works across them. */
  ticketKeys?: TicketKeys;
  /** A per-listener cap on signatures in flight, in front of the engine's global one. */
  listenerAdmission?: (listener: ListenerConfig) => Admission | undefined;
  /** Where refused connections (PROXY protocol) are logged, at debug level; they are counted in metrics too. */
  logger?: Logger;
  /** ACME tls-alpn-01: the validation certificate of a name with a pending challenge (see TlsServerOptions). */
  acmeChallenge?: (servername: string) => CertifiedKey | undefined;
  /**
   * Signatures waiting in the engine's queue from which new full handshakes are shed (resumptions,
   * which need none, still pass). Default: a quarter of the engine queue's length.
   */
  shedFullHandshakesAt?: number;
}

/** Loads every certificate of a listener and resolves its key on the engine. */
export async function loadCertifiedKeys(engine: Engine, listener: ListenerConfig, opts: Pick<OffloadListenerOptions, 'listenerAdmission'> = {}): Promise<ServerCertificate[]> {
  const admission = opts.listenerAdmission?.(listener);
  return Promise.all(listener.certificates.map(async (c, i) => {
    const where = `listeners[${listener.name}].certificates[${i}]`;
    const { chain, leaf } = await readCertificateChain(c).catch((err: unknown) => {
      throw listenerError(listener, where, err);
    });
    // Engine errors name the reference file; the field path says which line of the config it is.
    // The TLS server checks every signature against the certificate before sending it
    // (verify-after-sign): checking it in the engine as well would verify each RSA one twice.
    const signer = await engine.signer(c.key, { verify: 'none', ...(admission ? { admission } : {}) }).catch((err: unknown) => {
      throw new ListenerError(listener.name, `${where}.key: ${(err as Error).message}`, { cause: err });
    });
    // The certificate/key match, with the public key the HSM holds.
    try {
      checkKeyMatchesCertificate(c, leaf, signer.key.publicKey);
    } catch (err) {
      throw listenerError(listener, where, err);
    }
    return { chain, signer };
  }));
}

/** A certificate file's fault as the listener's error, with the config field's path. */
function listenerError(listener: ListenerConfig, where: string, err: unknown): unknown {
  if (!(err instanceof CertificateFileError)) return err;
  return new ListenerError(listener.name, `${err.pathUnder(where)}: ${err.message}`, err.cause === undefined ? undefined : { cause: err.cause });
}

/**
 * With delegatedCredentials enabled, a CredentialKeeper for each certificate that may delegate
 * (the others are served with HSM signatures), each with its first credential made (or its
 * failure published: HSM signatures serve until a renewal succeeds). None may delegate → refused.
 */
export async function withDelegatedCredentials(
  listener: ListenerConfig, certificates: ServerCertificate[],
): Promise<{ certificates: ServerCertificate[]; keepers: CredentialKeeper[] }> {
  const dc = listener.delegatedCredentials;
  if (!dc?.enabled) return { certificates, keepers: [] };
  if (!certificates.some((c) => canDelegate(c.chain[0]!))) {
    throw new ListenerError(listener.name, `listeners[${listener.name}].delegatedCredentials.enabled: none of the certificates `
      + `(${listener.certificates.map((c) => c.cert).join(', ')}) carries the DelegationUsage extension; `
      + 'issue them with --delegation-usage or set enabled: false');
  }
  const keepers: CredentialKeeper[] = [];
  const out = certificates.map((c) => {
    if (!canDelegate(c.chain[0]!)) return c;
    const keeper = new CredentialKeeper({
      listener: listener.name, chain: c.chain, signer: c.signer, keyType: dc.keyType, validityMs: dc.validityMs,
    });
    keepers.push(keeper);
    return { ...c, delegated: keeper };
  });
  await Promise.all(keepers.map((k) => k.start()));
  return { certificates: out, keepers };
}

/** Reads the listener's client CA bundle into tls/ ClientAuthOptions (undefined for mode none). */
export async function loadClientAuth(listener: ListenerConfig): Promise<ClientAuthOptions | undefined> {
  const c = listener.clientAuth;
  if (c.mode === 'none' || !c.caFile) return undefined;
  const where = `listeners[${listener.name}].clientAuth.caFile`;
  let ca: string;
  try {
    ca = await readFile(c.caFile, 'utf8');
  } catch (err) {
    throw new ListenerError(listener.name, `${where}: cannot read ${c.caFile}: ${(err as Error).message}`, { cause: err });
  }
  if (pemCertificates(ca).length === 0) throw new ListenerError(listener.name, `${where}: ${c.caFile} holds no PEM certificate`);
  return {
    mode: c.mode, ca, ...(c.allowedSubjects ? { allowedSubjects: c.allowedSubjects } : {}),
    ...(c.allowedSans ? { allowedSans: c.allowedSans } : {}),
    ...(c.maxDepth !== undefined ? { maxDepth: c.maxDepth } : {}),
  };
}

/** The TlsServer caps of a listener's config: connections, handshakes, the ClientHello's size. */
function serverLimits(listener: ListenerConfig): Pick<TlsServerOptions, 'maxConnections' | 'maxConcurrentHandshakes' | 'maxClientHelloBytes'> {
  const l = listener.limits ?? DEFAULTS.listenerLimits;
  return {
    maxConnections: l.maxConnections, maxConcurrentHandshakes: l.maxHandshakes,
    maxClientHelloBytes: l.maxClientHelloBytes,
  };
}

/** A TlsListenerFactory over tls/ TlsServer with engine signers. */
export function offloadListenerFactory(opts: OffloadListenerOptions): TlsListenerFactory {
  const ticketKeys = opts.ticketKeys ?? new TicketKeys();
  return async (listener, onSecureConnection, settings) => {
    const loaded = await withDelegatedCredentials(listener, await loadCertifiedKeys(opts.engine, listener, opts));
    const { certificates } = loaded;
    let keepers = loaded.keepers;
    let clientAuth = await loadClientAuth(listener);
    const gateFor = (l: ListenerConfig) => clientGate(l, {
      headerTimeoutMs: settings.handshakeTimeoutMs,
      onRefused: (reason, transport, detail) => opts.logger?.debug({ listener: l.name, reason, peer: transport.address, detail }, 'connection refused at the client gate'),
    });
    // A reload swaps the gate for new connections (proxyProtocol.from may change).
    let gate = gateFor(listener);
    const queue = opts.engine.admission;
    const pressure = {
      queued: () => queue.queued, shedFullAt: opts.shedFullHandshakesAt ?? Math.max(1, Math.floor(queue.maxQueue / 4)),
    };
    const admission = new ClientLimiter((listener.limits ?? DEFAULTS.listenerLimits).perClient, pressure);
    let server: TlsServer;
    try {
      server = createServer({
        ...serverLimits(listener),
        admission,
        certificates,
        alpnProtocols: listener.alpn,
        minVersion: listener.minVersion,
        maxVersion: listener.maxVersion,
        ...(listener.requireExtendedMasterSecret === false ? { requireExtendedMasterSecret: false } : {}),
        ...(listener.groups ? { groups: listener.groups } : {}),
        ...(listener.sni ? { sni: listener.sni } : {}),
        ticketKeys,
        handshakeTimeoutMs: settings.handshakeTimeoutMs,
        ...(opts.signTimeoutMs ? { signTimeoutMs: opts.signTimeoutMs } : {}),
        name: listener.name,
        ...(clientAuth ? { clientAuth } : {}),
        gate: (raw, start) => gate(raw, start),
        ...(opts.acmeChallenge ? { acmeChallenge: opts.acmeChallenge } : {}),
      }, (socket) => {
        // RFC 8737 §3: a validation connection carries no data; the CA closes it after the handshake.
        // A validator gone before our close_notify makes the write fail with a reset: that is its
        // way of closing, and an unheard 'error' would take the process down.
        if (socket.alpnProtocol === ACME_TLS_ALPN) {
          socket.on('error', () => undefined);
          socket.end();
        } else {
          onSecureConnection(socket);
        }
      });
    } catch (err) {
      // A client CA bundle that does not parse: the listener does not open.
      for (const k of keepers) k.stop();
      throw new ListenerError(listener.name, (err as Error).message, { cause: err });
    }
    server.on('tlsClientError', () => { /* the peer got its alert; counted through the handshake channel */ });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: Error) => {
        for (const k of keepers) k.stop(); // the listener never serves: its credential keys go now
        reject(new ListenerError(listener.name, `cannot listen on ${listener.address}:${listener.port}: ${err.message}`, { cause: err }));
      });
      // A deeper accept queue than node's 511: under a connect flood the connections refused at
      // accept churn fast, and a SYN dropped from a full queue costs a client a 1 s retransmit.
      // The kernel caps it at net.core.somaxconn.
      const where = { port: listener.port, host: listener.address, backlog: LISTEN_BACKLOG };
      server.netServer.listen(where, () => resolve());
    });
    const handle: TlsListener = {
      address: () => server.address(),
      async update(next) {
        // Everything that can fail (files, keys, HSM) happens before the swap; ALPN changes
        // need a restart of the listener (the handshake config is fixed per server).
        const nextAuth = await loadClientAuth(next);
        // A fresh credential for every certificate, bound to the new DER, before the swap.
        const nextLoaded = await withDelegatedCredentials(next, await loadCertifiedKeys(opts.engine, next, opts));
        try {
          server.setClientAuth(nextAuth);
          server.setCertificates(nextLoaded.certificates);
          server.setLimits(serverLimits(next));
          admission.setOptions((next.limits ?? DEFAULTS.listenerLimits).perClient);
        } catch (err) {
          server.setClientAuth(clientAuth); // all or nothing
          for (const k of nextLoaded.keepers) k.stop();
          throw new ListenerError(next.name, (err as Error).message, { cause: err });
        }
        for (const k of keepers) k.stop();
        keepers = nextLoaded.keepers;
        clientAuth = nextAuth;
        gate = gateFor(next);
      },
      async close() {
        for (const k of keepers) k.stop();
        if (server.netServer.listening) server.close();
      },
    };
    return handle;
  };
}
