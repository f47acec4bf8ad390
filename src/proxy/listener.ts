// The seam between proxy/ and whatever terminates TLS: node:tls today, our tls/ TlsServer later.
// proxy/ only needs a Duplex that looks like node's TLSSocket and a server it can update and close.
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ListenerConfig } from '../config/index.js';

/** A decrypted client connection: node's TLSSocket or our TlsSocket. */
export interface TlsSocketLike extends Duplex {
  readonly encrypted?: boolean;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  servername?: string | false | null;
  alpnProtocol?: string | false | null;
  getProtocol?(): string | null;
  isSessionReused?(): boolean;
  /** tls/ TlsSocket: the verified client certificate (mTLS). */
  readonly peerIdentity?: { subject: string; sans: string[]; fingerprint256: string };
  /** node:tls and tls/: whether the client certificate verified. */
  readonly authorized?: boolean;
}

/** A listening TLS server as the proxy drives it. */
export interface TlsListener {
  /** The bound address (useful with port 0). */
  address(): AddressInfo | string | null;
  /**
   * Applies new certificates and settings to new connections; established connections keep
   * theirs. Throws (and keeps the old settings) when the new ones cannot be loaded.
   */
  update?(listener: ListenerConfig): Promise<void>;
  /** Stops accepting new connections; resolves without waiting for open ones. */
  close(): Promise<void>;
}

/** Settings the proxy passes to every listener it creates. */
export interface TlsListenerSettings { handshakeTimeoutMs: number }

/** Creates and starts a TLS listener that hands each established connection to `onSecureConnection`. */
export type TlsListenerFactory = (
  listener: ListenerConfig,
  onSecureConnection: (socket: TlsSocketLike) => void,
  settings: TlsListenerSettings,
) => Promise<TlsListener>;
