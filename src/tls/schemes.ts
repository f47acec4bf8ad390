// TLS SignatureScheme code points and what each one means (key type, padding, hash, curve), and
// how to verify a signature made with one. The single table for tls/ and engine/.
import { constants, verify, type KeyObject } from 'node:crypto';

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

export type HashName = 'sha256' | 'sha384' | 'sha512';

/** A signature algorithm apart from TLS: padding family and hash. */
export interface SignAlgorithm { readonly kind: 'rsa-pkcs1' | 'rsa-pss' | 'ecdsa'; readonly hash: HashName }

/** What a scheme needs and does. Ed25519 has no separate hash. */
export type SchemeSpec =
  | (SignAlgorithm & {
    /** node's asymmetricKeyType of a key that can make it. */
    readonly keyType: 'rsa' | 'rsa-pss' | 'ec';
    /** TLS 1.3 binds ECDSA schemes to a curve (node's curve name). */
    readonly namedCurve?: 'prime256v1' | 'secp384r1' | 'secp521r1';
  })
  | { readonly kind: 'eddsa'; readonly hash: null; readonly keyType: 'ed25519' };

const S = SignatureScheme;
const SPECS = new Map<number, SchemeSpec>([
  [S.rsa_pkcs1_sha256, { kind: 'rsa-pkcs1', hash: 'sha256', keyType: 'rsa' }],
  [S.rsa_pkcs1_sha384, { kind: 'rsa-pkcs1', hash: 'sha384', keyType: 'rsa' }],
  [S.rsa_pkcs1_sha512, { kind: 'rsa-pkcs1', hash: 'sha512', keyType: 'rsa' }],
  [S.ecdsa_secp256r1_sha256, { kind: 'ecdsa', hash: 'sha256', keyType: 'ec', namedCurve: 'prime256v1' }],
  [S.ecdsa_secp384r1_sha384, { kind: 'ecdsa', hash: 'sha384', keyType: 'ec', namedCurve: 'secp384r1' }],
  [S.ecdsa_secp521r1_sha512, { kind: 'ecdsa', hash: 'sha512', keyType: 'ec', namedCurve: 'secp521r1' }],
  [S.rsa_pss_rsae_sha256, { kind: 'rsa-pss', hash: 'sha256', keyType: 'rsa' }],
  [S.rsa_pss_rsae_sha384, { kind: 'rsa-pss', hash: 'sha384', keyType: 'rsa' }],
  [S.rsa_pss_rsae_sha512, { kind: 'rsa-pss', hash: 'sha512', keyType: 'rsa' }],
  [S.ed25519, { kind: 'eddsa', hash: null, keyType: 'ed25519' }],
  [S.rsa_pss_pss_sha256, { kind: 'rsa-pss', hash: 'sha256', keyType: 'rsa-pss' }],
  [S.rsa_pss_pss_sha384, { kind: 'rsa-pss', hash: 'sha384', keyType: 'rsa-pss' }],
  [S.rsa_pss_pss_sha512, { kind: 'rsa-pss', hash: 'sha512', keyType: 'rsa-pss' }],
]);

/** The meaning of a scheme, or undefined for one hsmproxy does not know. */
export function schemeSpec(scheme: number): SchemeSpec | undefined {
  return SPECS.get(scheme);
}

/** Key plus padding options, accepted by both crypto.sign and crypto.verify. */
export interface NodeKeyOptions { key: KeyObject; padding?: number; saltLength?: number; dsaEncoding?: 'der' | 'ieee-p1363' }

/** node:crypto options for an algorithm: PSS with salt = hash length (TLS, HSMs); ECDSA in DER unless told. */
export function nodeKeyOptions(key: KeyObject, alg: SignAlgorithm, dsaEncoding: 'der' | 'ieee-p1363' = 'der'): NodeKeyOptions {
  if (alg.kind === 'rsa-pss') return { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST };
  if (alg.kind === 'rsa-pkcs1') return { key, padding: constants.RSA_PKCS1_PADDING };
  return { key, dsaEncoding };
}

/** Verifies a signature (ECDSA in DER) over `data`; false on any mismatch or malformed input. */
export function verifyAlgorithm(key: KeyObject, alg: SignAlgorithm, data: Buffer, signature: Buffer): boolean {
  try {
    return verify(alg.hash, data, nodeKeyOptions(key, alg), signature);
  } catch {
    return false;
  }
}

/** verifyAlgorithm off the event loop (libuv thread pool): verify-after-sign must not stall handshakes. */
export function verifyAlgorithmAsync(
  key: KeyObject, alg: SignAlgorithm, data: Buffer, signature: Buffer,
): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      verify(alg.hash, data, nodeKeyOptions(key, alg), signature, (err, ok) => resolve(!err && ok));
    } catch {
      resolve(false);
    }
  });
}

/**
 * Verifies a TLS signature made with `scheme` (ECDSA in DER); false on any mismatch, malformed
 * input or unknown scheme. Does not check that the key fits the scheme: callers that must, do.
 */
export function verifyScheme(key: KeyObject, scheme: number, data: Buffer, signature: Buffer): boolean {
  const spec = SPECS.get(scheme);
  if (!spec) return false;
  if (spec.kind !== 'eddsa') return verifyAlgorithm(key, spec, data, signature);
  try {
    return verify(null, data, key, signature);
  } catch {
    return false;
  }
}
