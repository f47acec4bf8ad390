// The signer contract between tls/ and whoever holds the private key (engine/, tests).
// tls/ never sees key material: it hands the content to be signed and a TLS SignatureScheme
// to `sign`, and awaits the signature. engine/ defines a structurally identical type. A rejection
// may carry a `code`; the no-compatible-key codes below become handshake_failure, others internal_error.

/** TLS SignatureScheme code points (RFC 8446 §4.2.3) that hsmproxy can use. */
export const SignatureScheme = {
  rsa_pkcs1_sha256: 0x0401,
  rsa_pkcs1_sha384: 0x0501,
  rsa_pkcs1_sha512: 0x0601,
  ecdsa_secp256r1_sha256: 0x0403,
  ecdsa_secp384r1_sha384: 0x0503,
  ecdsa_secp521r1_sha512: 0x0603,
  rsa_pss_rsae_sha256: 0x0804,
  rsa_pss_rsae_sha384: 0x0805,
  rsa_pss_rsae_sha512: 0x0806,
  ed25519: 0x0807,
  rsa_pss_pss_sha256: 0x0809,
  rsa_pss_pss_sha384: 0x080a,
  rsa_pss_pss_sha512: 0x080b,
} as const;
export type SignatureSchemeName = keyof typeof SignatureScheme;

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
  sign(scheme: number, data: Buffer, signal?: AbortSignal): Promise<Buffer>;
}

/** The `code` a Signer rejects with when it holds no key or mechanism that can serve the request. */
export const SIGNER_ERR_NO_COMPATIBLE_KEY = 'SIGNER_ERR_NO_COMPATIBLE_KEY';

/**
 * Rejection codes meaning "no compatible key or mechanism": ours and engine/'s equivalents
 * (ENGINE_ERR_UNSUPPORTED, ENGINE_ERR_KEY_NOT_FOUND), matched by string so tls/ imports nothing.
 */
const NO_COMPATIBLE_KEY_CODES: ReadonlySet<string> = new Set([SIGNER_ERR_NO_COMPATIBLE_KEY, 'ENGINE_ERR_UNSUPPORTED', 'ENGINE_ERR_KEY_NOT_FOUND']);

/** A Signer rejection for a request its key or HSM cannot serve (a scheme, mechanism or key it lacks). */
export class NoCompatibleKeyError extends Error {
  readonly code = SIGNER_ERR_NO_COMPATIBLE_KEY;
  constructor(message: string) {
    super(message);
    this.name = 'NoCompatibleKeyError';
  }
}

/**
 * The alert for a failed signature (TLS.md 41): handshake_failure when the key-holder says it has
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
}
