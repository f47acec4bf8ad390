// Admission hooks of TlsServer: who may open a connection, and which handshakes may cost a
// private-key signature. tls/ only calls them at the right moments; the policy (per-client
// counts and rates, the signing queue's pressure) belongs to whoever owns it (proxy/).
import diagnosticsChannel from 'node:diagnostics_channel';
import { AlertDescription, TlsAlertError } from './alert.js';

/** Decides on each new connection; called before a byte of it is read. */
export interface ClientAdmission {
  /**
   * A TCP connection arrived from `address` (the peer's address as the transport reports it).
   * Returns the admitted connection's handle, or a refusal reason: the connection is then
   * closed at once, before any TLS work.
   */
  open(address: string): AdmittedConnection | string;
  /**
   * A connection from `address` was just refused at accept for `reason`: how long to hold it,
   * unread, before closing it (0: close now). Holding a client that reconnects as fast as it is
   * refused paces its loop: a reconnect flood then costs an accept per hold, not per turn.
   */
  holdRefused?(address: string, reason: string): number;
}

/** One admitted connection, as admission follows it. */
export interface AdmittedConnection {
  /** The client key the signing queue is fair by (an IPv4 address, an IPv6 /64). */
  readonly client: string;
  /**
   * The handshake needs the certificate key's signature (a full handshake, neither a resumption nor
   * one over a delegated credential). A reason sheds it: the handshake ends with internal_error
   * before its key exchange and before a signature is asked for.
   */
  fullHandshake(): string | undefined;
  /** The handshake ended, completed or failed (called once). */
  handshakeEnded(): void;
  /** The connection closed (called once, after handshakeEnded). */
  closed(): void;
}

/** A handshake shed by admission: internal_error goes to the peer, `reason` to the observers. */
export class HandshakeShedError extends TlsAlertError {
  constructor(readonly reason: string) {
    super(AlertDescription.internal_error, `handshake shed (${reason})`);
    this.name = 'HandshakeShedError';
  }
}

/** Channel name: one message per connection refused before its handshake. */
export const REFUSED_CHANNEL = 'hsmproxy:tls:refused';

/** A connection closed at accept, before any TLS work. */
export interface RefusedConnection {
  listener?: string;
  reason: string;
  address: string;
}

const refused = diagnosticsChannel.channel(REFUSED_CHANNEL);

/** Publishes a refused connection if anyone listens. */
export function publishRefused(r: RefusedConnection): void {
  if (refused.hasSubscribers) refused.publish(r);
}
