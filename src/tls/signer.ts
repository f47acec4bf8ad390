// The signer contract between tls/ and whoever holds the private key (engine/, tests).
// tls/ never sees key material: it hands the content to be signed and a TLS SignatureScheme
// to `sign`, and awaits the signature. engine/ defines a structurally identical type.

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

/** A certificate chain (leaf first, DER) with the signer for the leaf's key. */
export interface CertifiedKey {
  readonly chain: readonly Buffer[];
  readonly signer: Signer;
}
