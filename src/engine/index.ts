// engine/: the OpenSSL-engine-style bridge between key references and the places keys live.
// Parses key references ("fake PEM"), resolves them on a backend (sim, pkcs11, soft), hands out
// Signers for tls/ and a WebCrypto provider for pki/, and applies admission control.
// May import src/hsm/client, node built-ins, and from tls/ the Signer contract it implements
// (signer.ts, schemes.ts) and the DER and PEM codecs; tls/ never imports engine/.
export * from './algorithm.js';
export * from './admission.js';
export type { Backend, BackendKind, GenerateSpec, KeyHandle, KeyInfo, SignOptions } from './backend.js';
export * from './certified-key.js';
export * from './credentials.js';
export * from './ecdsa.js';
export * from './engine.js';
export * from './errors.js';
export * from './keyref.js';
export * from './schemes.js';
export * from './signer.js';
export * from './sim.js';
export * from './sim-connection.js';
export * from './soft.js';
export * from './webcrypto.js';
