// Which TLS signature schemes the engine's keys produce, the HSM mechanism behind each, and
// node:crypto signing and verification by mechanism. The scheme table itself is tls/schemes.ts.
import { sign as nodeSign, type KeyObject } from 'node:crypto';
import {
  SignatureScheme, nodeKeyOptions as algorithmKeyOptions, schemeSpec, verifyAlgorithmAsync,
  type NodeKeyOptions, type SignAlgorithm,
} from '../tls/schemes.js';
import { mechanismAlgorithm, mechanismHash, type KeyAlgorithm, type Mechanism } from './algorithm.js';
import { UnsupportedError } from './errors.js';

export { SignatureScheme, type NodeKeyOptions, type SignAlgorithm };

const RSA_SCHEMES = [
  SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512,
  SignatureScheme.rsa_pkcs1_sha256, SignatureScheme.rsa_pkcs1_sha384, SignatureScheme.rsa_pkcs1_sha512,
];
const ECDSA_SCHEMES = [
  SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ecdsa_secp384r1_sha384,
  SignatureScheme.ecdsa_secp521r1_sha512,
];
const ENGINE_SCHEMES: ReadonlySet<number> = new Set([...RSA_SCHEMES, ...ECDSA_SCHEMES]);

/**
 * The schemes a key can produce, in preference order (PSS before PKCS#1 v1.5: TLS 1.3 needs PSS).
 * An EC key lists its curve's own scheme first (the only one TLS 1.3 allows it), then the other
 * ECDSA hashes, which TLS 1.2 allows with any curve (RFC 8422 §5.1.1; OpenSSL accepts them too).
 */
export function schemesFor(alg: KeyAlgorithm): number[] {
  if (alg.type === 'rsa') return [...RSA_SCHEMES];
  const own = alg.curve === 'P-256' ? SignatureScheme.ecdsa_secp256r1_sha256 : SignatureScheme.ecdsa_secp384r1_sha384;
  return [own, ...ECDSA_SCHEMES.filter((s) => s !== own)];
}

/** The signing algorithm behind a scheme the engine can produce, or undefined. */
export function schemeAlgorithm(scheme: number): SignAlgorithm | undefined {
  const spec = ENGINE_SCHEMES.has(scheme) ? schemeSpec(scheme) : undefined;
  return spec && spec.kind !== 'eddsa' ? { kind: spec.kind, hash: spec.hash } : undefined;
}

/** The HSM mechanism for a TLS scheme, or undefined if the engine does not do that scheme. */
export function mechanismForScheme(scheme: number): Mechanism | undefined {
  const alg = schemeAlgorithm(scheme);
  return alg && `${alg.kind}-${alg.hash}`;
}

/** Whether a key of this algorithm can use the mechanism. */
export function mechanismFits(alg: KeyAlgorithm, m: Mechanism): boolean {
  return alg.type === 'rsa' ? m.startsWith('rsa-') : m.startsWith('ecdsa-');
}

/** node:crypto options that make `crypto.sign`/`verify` use a mechanism (ECDSA in DER unless told). */
export function nodeKeyOptions(key: KeyObject, m: Mechanism, dsaEncoding: 'der' | 'ieee-p1363' = 'der'): NodeKeyOptions {
  const alg = mechanismAlgorithm(m);
  if (!alg) throw new UnsupportedError(`unknown signing mechanism ${m}`);
  return algorithmKeyOptions(key, alg, dsaEncoding);
}

/** Signs with node:crypto off the event loop (libuv thread pool). */
export function nodeSignAsync(privateKey: KeyObject, m: Mechanism, data: Buffer, dsaEncoding: 'der' | 'ieee-p1363' = 'der'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    nodeSign(
      mechanismHash(m), data, nodeKeyOptions(privateKey, m, dsaEncoding),
      (err, sig) => (err ? reject(err) : resolve(sig)),
    );
  });
}

/** Verifies off the event loop (libuv thread pool): verify-after-sign must not stall handshakes. */
export function verifySignatureAsync(
  publicKey: KeyObject, m: Mechanism, data: Buffer, signature: Buffer,
): Promise<boolean> {
  const alg = mechanismAlgorithm(m);
  return alg ? verifyAlgorithmAsync(publicKey, alg, data, signature) : Promise.resolve(false);
}
