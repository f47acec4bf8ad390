// The observability contract, duplicated on purpose: emitters (tls/, hsm/client, engine/) publish
// these plain objects on node:diagnostics_channel; metrics/ must not import them, so the channel
// names and payload shapes are restated here. Keep in sync with the contract, not with the code.

/** Channel names (fixed by the contract). */
export const CHANNELS = {
  tlsHandshake: 'hsmproxy:tls:handshake',
  hsmRequest: 'hsmproxy:hsm:request',
  hsmState: 'hsmproxy:hsm:state',
  hsmHedge: 'hsmproxy:hsm:hedge',
  engineSign: 'hsmproxy:engine:sign',
  hsmScaling: 'hsmproxy:hsm:scaling',
  acmeOrder: 'hsmproxy:acme:order',
  acmeCertificate: 'hsmproxy:acme:certificate',
  delegatedCredential: 'hsmproxy:tls:delegated-credential',
  tlsRefused: 'hsmproxy:tls:refused',
  clientGate: 'hsmproxy:proxy:client-gate',
} as const;

/** A connection closed at accept by a listener's limits, before any TLS work (from tls/). */
export interface TlsRefusedEvent {
  listener?: string;
  /** listener_connections, listener_handshakes, client_connections, client_handshakes. */
  reason: string;
  address: string;
}

/** One ACME order's end (from acme/). */
export interface AcmeOrderEvent { name: string; challenge: string; result: 'issued' | 'failed' }

/** An ACME certificate's state (from acme/): at start and after each order. */
export interface AcmeCertificateEvent {
  name: string;
  /** notAfter (ms since the epoch) of the certificate served under `name`; absent before the first issue. */
  notAfterMs?: number;
  /** Orders that failed in a row (0 after a success). */
  consecutiveFailures: number;
  /** The certificate left the config (SIGHUP): its series are dropped. */
  removed?: true;
}

/** One TLS handshake, success or failure (from tls/). */
export interface TlsHandshakeEvent {
  version: 'TLSv1.3' | 'TLSv1.2';
  suite: string;
  group: string;
  keyType: 'rsa' | 'ec' | '';
  resumed: boolean;
  credential?: 'delegated' | 'certificate';
  result: 'ok' | 'alert_sent' | 'alert_received' | 'closed' | 'timeout' | 'sign_error' | 'shed';
  alert?: string;
  /** result shed: why. */
  reason?: string;
  durationMs: number;
  signWaitMs: number;
  servername?: string;
  listener?: string;
}

/** One request to one HSM (from hsm/client). */
export interface HsmRequestEvent {
  op: string;
  mechanism: string;
  hsm: string;
  rttMs: number;
  queueWaitMs: number;
  serviceMs: number;
  outcome: string;
}

/** A hedged sign (from hsm/client): sent to `to` because `hsm` was late, won by `to`, or refused by the budget. */
export interface HsmHedgeEvent {
  hsm: string;
  to?: string;
  outcome: 'sent' | 'won' | 'refused';
}

/** An HSM's state, on change and on each health check (from hsm/client). */
export interface HsmStateEvent {
  hsm: string;
  address: string;
  up: boolean;
  inFlight: number;
  keysToken?: number;
  keysSession?: number;
  keysMax?: number;
  utilisation?: number;
}

/** One signature made through the engine. */
export interface EngineSignEvent {
  backend: 'sim' | 'pkcs11' | 'soft';
  keyType: 'rsa' | 'ec';
  scheme: number;
  durationMs: number;
  outcome: string;
}

/** One autoscale action on the simulated cluster (from hsm/cluster). */
export interface HsmScalingEvent {
  action: 'add' | 'remove';
  hsm: string;
  result: 'ok' | 'failed';
  reason: string;
  durationMs: number;
  /** HSMs in the cluster after the action. */
  hsms: number;
  error?: string;
}

/** One TCP connection at a listener's client gate (from proxy/): how its client was told, or why it was refused. */
export interface ClientGateEvent {
  listener: string;
  result: 'direct' | 'proxy-v1' | 'proxy-v2' | 'local' | 'source_not_allowed' | 'malformed' | 'timeout' | 'closed';
}

/** A delegated credential's lifecycle (from proxy/'s credential keeper). */
export interface DelegatedCredentialEvent {
  listener: string;
  certificate: string;
  event: 'issued' | 'renewal_failed' | 'expired' | 'stopped';
  expiresAtMs?: number;
  error?: string;
}
