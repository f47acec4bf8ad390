// The signer contract between tls/ and whoever holds the private key (engine/, tests).
// tls/ never sees key material: it hands the content to be signed and a TLS SignatureScheme
// to `sign`, and awaits the signature. A rejection may carry a `code`: the no-compatible-key
// codes below become handshake_failure, others internal_error. engine/ imports this contract.
export { SignatureScheme, type SignatureSchemeName } from './schemes.js';
import type { DelegatedCredentialSource } from './delegated.js';

/**
 * Holds a private key somewhere else (an HSM, a PKCS#11 token, memory) and signs on request.
 * `sign` receives the full content to be signed (not a digest) and returns the signature in
 * TLS wire form: DER ECDSA-Sig-Value for ECDSA, the raw signature block for RSA.
 * Implementations must honour `signal` (abort → reject promptly, release resources).
 */
export interface Signer {
  /** Key algorithm: decides which certificates and schemes apply. */
  readonly keyType: 'rsa' | 'ec';
  /** For EC keys, the named curve ('P-256' | 'P-384'); for RSA, the modulus size in bits. */
  readonly curve?: 'P-256' | 'P-384';
  readonly bits?: number;
  /** Schemes this key can produce, in the key-holder's preference order. */
  readonly schemes: readonly number[];
  sign(scheme: number, data: Buffer, signal?: AbortSignal, context?: SignContext): Promise<Buffer>;
}

/** Who a handshake signature is for: lets the key-holder queue requests fairly between clients. */
export interface SignContext {
  /** The client key (an IPv4 address, an IPv6 /64): waiting requests are served round-robin by it. */
  client?: string;
  /**
   * The caller aborts `signal` itself within this many ms (its own deadline): a key-holder whose
   * deadline is not earlier may rely on that signal instead of arming a timer and a signal of its own.
   */
  deadlineMs?: number;
}

/**
 * Rejection codes meaning "no compatible key or mechanism": the client asked for something this
 * key-holder cannot do. engine/'s UnsupportedError and KeyNotFoundError carry the last two.
 */
export const NoCompatibleKeyCode = {
  /** Any key-holder: no key or mechanism for the request. */
  noCompatibleKey: 'SIGNER_ERR_NO_COMPATIBLE_KEY',
  /** The key cannot make the scheme or mechanism (the engine's historic code name). */
  unsupported: 'ENGINE_ERR_UNSUPPORTED',
  /** The key is gone from the HSM (the engine's historic code name). */
  keyNotFound: 'ENGINE_ERR_KEY_NOT_FOUND',
} as const;

const NO_COMPATIBLE_KEY_CODES: ReadonlySet<string> = new Set(Object.values(NoCompatibleKeyCode));

/** A Signer rejection for a request its key or HSM cannot serve (a scheme, mechanism or key it lacks). */
export class NoCompatibleKeyError extends Error {
  readonly code = NoCompatibleKeyCode.noCompatibleKey;
  constructor(message: string) {
    super(message);
    this.name = 'NoCompatibleKeyError';
  }
}

/**
 * The alert for a failed signature: handshake_failure when the key-holder says it has
 * no compatible key or mechanism (the client asked for something we cannot do), else internal_error.
 */
export function signFailureAlert(err: unknown): 'handshake_failure' | 'internal_error' {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && NO_COMPATIBLE_KEY_CODES.has(code) ? 'handshake_failure' : 'internal_error';
}

/** A certificate chain (leaf first, DER) with the signer for the leaf's key. */
export interface CertifiedKey {
  readonly chain: readonly Buffer[];
  readonly signer: Signer;
  /** The leaf's current delegated credential (RFC 9345), when the listener delegates. */
  readonly delegated?: DelegatedCredentialSource;
}
