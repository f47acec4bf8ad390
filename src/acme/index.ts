// acme/: certificates from an ACME CA (RFC 8555) whose keys are generated in, and never leave, the
// HSM. acme-client speaks the protocol; keys come from engine/, CSRs from pki/. It hands the
// listeners files and a challenge lookup; app/ wires it to the proxy.
// May import config/, engine/, pki/, hsm/client/ (and node built-ins, acme-client).
export * from './account.js';
export * from './challenges.js';
export * from './errors.js';
export * from './http-challenge.js';
export * from './manager.js';
export * from './order.js';
export * from './store.js';
export * from './ari.js';
export * from './retire.js';
export * from './reuse-key.js';
export * from './account-keeper.js';
export * from './account-rotation.js';
export * from './certificate-store.js';
export * from './cluster-store.js';
