// TLS SignatureScheme code points ↔ HSM mechanisms, which schemes a key can do, and how to verify
// a signature with node:crypto (verify-after-sign, tests). Code points match src/tls/signer.ts.
import { constants, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto';
import type { KeyAlgorithm, Mechanism } from './algorithm.js';
import { mechanismHash } from './algorithm.js';

/** TLS SignatureScheme code points the engine can produce (RFC 8446 §4.2.3). */
export const SignatureScheme = {
  rsa_pkcs1_sha256: 0x0401,
  rsa_pkcs1_sha384: 0x0501,
  rsa_pkcs1_sha512: 0x0601,
  ecdsa_secp256r1_sha256: 0x0403,
  ecdsa_secp384r1_sha384: 0x0503,
  rsa_pss_rsae_sha256: 0x0804,
  rsa_pss_rsae_sha384: 0x0805,
  rsa_pss_rsae_sha512: 0x0806,
} as const;

const SCHEME_MECHANISM = new Map<number, Mechanism>([
  [SignatureScheme.rsa_pss_rsae_sha256, 'rsa-pss-sha256'],
  [SignatureScheme.rsa_pss_rsae_sha384, 'rsa-pss-sha384'],
  [SignatureScheme.rsa_pss_rsae_sha512, 'rsa-pss-sha512'],
  [SignatureScheme.rsa_pkcs1_sha256, 'rsa-pkcs1-sha256'],
  [SignatureScheme.rsa_pkcs1_sha384, 'rsa-pkcs1-sha384'],
  [SignatureScheme.rsa_pkcs1_sha512, 'rsa-pkcs1-sha512'],
  [SignatureScheme.ecdsa_secp256r1_sha256, 'ecdsa-sha256'],
  [SignatureScheme.ecdsa_secp384r1_sha384, 'ecdsa-sha384'],
]);

/** The schemes a key can produce, in preference order (PSS before PKCS#1 v1.5: TLS 1.3 needs PSS). */
export function schemesFor(alg: KeyAlgorithm): number[] {
  if (alg.type === 'rsa') {
    return [
      SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512,
      SignatureScheme.rsa_pkcs1_sha256, SignatureScheme.rsa_pkcs1_sha384, SignatureScheme.rsa_pkcs1_sha512,
    ];
  }
  return alg.curve === 'P-256' ? [SignatureScheme.ecdsa_secp256r1_sha256] : [SignatureScheme.ecdsa_secp384r1_sha384];
}

/** The HSM mechanism for a TLS scheme, or undefined if the engine does not do that scheme. */
export function mechanismForScheme(scheme: number): Mechanism | undefined {
  return SCHEME_MECHANISM.get(scheme);
}

/** Whether a key of this algorithm can use the mechanism. */
export function mechanismFits(alg: KeyAlgorithm, m: Mechanism): boolean {
  return alg.type === 'rsa' ? m.startsWith('rsa-') : m.startsWith('ecdsa-');
}

/** Key plus padding options, accepted by both crypto.sign and crypto.verify. */
export interface NodeKeyOptions { key: KeyObject; padding?: number; saltLength?: number; dsaEncoding?: 'der' | 'ieee-p1363' }

/** node:crypto options that make `crypto.sign`/`verify` use a mechanism (ECDSA in DER unless told). */
export function nodeKeyOptions(key: KeyObject, m: Mechanism, dsaEncoding: 'der' | 'ieee-p1363' = 'der'): NodeKeyOptions {
  if (m.startsWith('rsa-pss-')) return { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST };
  if (m.startsWith('rsa-pkcs1-')) return { key, padding: constants.RSA_PKCS1_PADDING };
  return { key, dsaEncoding };
}

/** Signs with node:crypto off the event loop (libuv thread pool). */
export function nodeSignAsync(privateKey: KeyObject, m: Mechanism, data: Buffer, dsaEncoding: 'der' | 'ieee-p1363' = 'der'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    nodeSign(mechanismHash(m), data, nodeKeyOptions(privateKey, m, dsaEncoding), (err, sig) => (err ? reject(err) : resolve(sig)));
  });
}

/** Verifies off the event loop (libuv thread pool): verify-after-sign must not stall handshakes. */
export function verifySignatureAsync(publicKey: KeyObject, m: Mechanism, data: Buffer, signature: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      nodeVerify(mechanismHash(m), data, nodeKeyOptions(publicKey, m), signature, (err, ok) => resolve(!err && ok));
    } catch {
      resolve(false);
    }
  });
}

/** Verifies a signature (ECDSA in DER) over `data` with the public key; false on any mismatch. */
export function verifySignature(publicKey: KeyObject, m: Mechanism, data: Buffer, signature: Buffer): boolean {
  try {
    return nodeVerify(mechanismHash(m), data, nodeKeyOptions(publicKey, m), signature);
  } catch {
    return false;
  }
}
