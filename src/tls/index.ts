// tls/: the TLS 1.3 and TLS 1.2 server with asynchronous, offloaded handshake
// signatures. Layers: codec → messages/extensions → record (TLS-crypto) → handshake states →
// sans-IO ServerConnection → TlsSocket/TlsServer. Knows nothing of HSMs: it is given
// CertifiedKey { chain, signer }. May import node built-ins only; emits observations on
// node:diagnostics_channel ('hsmproxy:tls:handshake'), never imports metrics/ or a logger.
export { createServer, TlsServer, type TlsServerOptions, type ServerCertificate, type ConnectionGate, type ConnectionPreface, type RemotePeer } from './server.js';
export { TlsSocket } from './socket.js';
export { ServerConnection, Limits, type ConnectionEvent, type Counters } from './connection.js';
export type { HandshakeConfig, Negotiated, SignRequest } from './handshake13.js';
export { ACME_TLS_ALPN, prepareCertEntry, selectCertificate, type CertEntry } from './certselect.js';
export { type ClientAuthMode, type ClientAuthOptions, type PeerIdentity } from './client-auth.js';
export { HANDSHAKE_CHANNEL, type HandshakeObservation } from './observe.js';
export {
  HandshakeShedError, REFUSED_CHANNEL, type AdmittedConnection, type ClientAdmission, type RefusedConnection,
} from './admit.js';
export { NoCompatibleKeyCode, NoCompatibleKeyError, type Signer, type SignContext, type CertifiedKey } from './signer.js';
export { pemCertificates } from './pem.js';
export { SignatureScheme, schemeSpec, verifyScheme, type SchemeSpec, type SignAlgorithm } from './schemes.js';
export { AlertDescription, TlsError, TlsAlertError, alertName } from './alert.js';
export { TicketKeys, ticketKeyFromEpochSecret } from './tickets.js';
export type { SharedTicketKey, TicketKeysOptions } from './tickets.js';
export { TLS13_SUITES, NamedGroup, type CipherSuite } from './suites.js';
export { TLS12_SUITES, type CipherSuite12 } from './suites12.js';
export type { ServerHandshakeConfig, TlsVersionName, VersionRange } from './hello12.js';
export {
  DELEGATED_CREDENTIAL_EXT, DELEGATION_USAGE_OID, MAX_DC_VALIDITY_MS, canDelegate, credentialFrom,
  credentialSigningScheme,
  decodeDelegatedCredential, delegatedCredentialSignedContent, encodeCredential, makeDelegatedCredential,
  type CredentialKeyType, type DelegatedCredential, type DelegatedCredentialSource,
} from './delegated.js';
