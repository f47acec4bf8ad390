// pki/: CSRs, self-signed and CA-issued certificates and chains, built with @peculiar/x509 and
// signed through the engine's WebCrypto provider, so private keys never leave the HSM.
// May import engine/ (and node built-ins, @peculiar/x509); nothing above it.
export * from './ca.js';
export * from './cert.js';
export * from './csr.js';
export * from './errors.js';
export * from './names.js';
export * from './signing-key.js';
