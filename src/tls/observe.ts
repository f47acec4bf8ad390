// The handshake observation published on node:diagnostics_channel (contract in DESIGN and
// metrics/): tls/ emits plain objects and never imports metrics/ or a logger.
import diagnosticsChannel from 'node:diagnostics_channel';

/** Channel name: one message per handshake, success or failure. */
export const HANDSHAKE_CHANNEL = 'hsmproxy:tls:handshake';

/** What one handshake cost and how it ended. */
export interface HandshakeObservation {
  version: 'TLSv1.3' | 'TLSv1.2';
  suite: string;
  group: string;
  keyType: 'rsa' | 'ec' | '';
  resumed: boolean;
  /** Who signed CertificateVerify; absent when no certificate was sent (resumption, early failure). */
  credential?: 'delegated' | 'certificate';
  /** shed: admission refused the full handshake before its key exchange (internal_error sent). */
  result: 'ok' | 'alert_sent' | 'alert_received' | 'closed' | 'timeout' | 'sign_error' | 'shed';
  alert?: string;
  /** result shed: why (a client over its rate, the signing queue over its threshold...). */
  reason?: string;
  durationMs: number;
  signWaitMs: number;
  servername?: string;
  listener?: string;
  /** mTLS listeners only: the verified client certificate, or null when none was accepted. */
  clientCert?: { subject: string; fingerprint256: string } | null;
}

const channel = diagnosticsChannel.channel(HANDSHAKE_CHANNEL);

/** Publishes a handshake observation if anyone listens. */
export function publishHandshake(o: HandshakeObservation): void {
  if (channel.hasSubscribers) channel.publish(o);
}
