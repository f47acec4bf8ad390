// Key algorithms the engine supports, derived from a public key, and the TLS signature schemes
// and HSM mechanisms each one can produce.
import type { KeyObject } from 'node:crypto';
import type { HashName, SignAlgorithm } from '../tls/schemes.js';
import { UnsupportedError } from './errors.js';

export type Curve = 'P-256' | 'P-384';

/** What a key is: RSA with a modulus size, or EC on a named curve. */
export type KeyAlgorithm = { readonly type: 'rsa'; readonly bits: number } | { readonly type: 'ec'; readonly curve: Curve };

/** Curve facts the engine needs: DER OID of the named curve, scalar/coordinate size, default hash. */
export const CURVES: Record<Curve, { oid: Buffer; size: number; nodeName: string; hash: 'sha256' | 'sha384' }> = {
  'P-256': { oid: Buffer.from('06082a8648ce3d030107', 'hex'), size: 32, nodeName: 'prime256v1', hash: 'sha256' },
  'P-384': { oid: Buffer.from('06052b81040022', 'hex'), size: 48, nodeName: 'secp384r1', hash: 'sha384' },
};

/** Reads the algorithm of a public (or private) key; only RSA and EC P-256/P-384 are supported. */
export function keyAlgorithmOf(key: KeyObject): KeyAlgorithm {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details.modulusLength ?? 0;
    if (bits < 2048) throw new UnsupportedError(`RSA keys must have at least 2048 bits (this one has ${bits})`);
    return { type: 'rsa', bits };
  }
  if (key.asymmetricKeyType === 'ec') {
    for (const [curve, facts] of Object.entries(CURVES) as Array<[Curve, (typeof CURVES)[Curve]]>) {
      if (details.namedCurve === facts.nodeName) return { type: 'ec', curve };
    }
    throw new UnsupportedError(`EC curve ${details.namedCurve ?? '?'} is not supported (use P-256 or P-384)`);
  }
  throw new UnsupportedError(`key type ${key.asymmetricKeyType ?? '?'} is not supported (use RSA or EC P-256/P-384)`);
}

/** Describes a key algorithm for people and for `--json`: "rsa:2048", "ec:p256". */
export function describeAlgorithm(alg: KeyAlgorithm): string {
  return alg.type === 'rsa' ? `rsa:${alg.bits}` : `ec:${alg.curve.replace('-', '').toLowerCase()}`;
}

/**
 * HSM signing mechanisms, named as the HSM protocol and CLI name them. Each signs the *data*
 * (the backend hashes); ECDSA mechanisms may return DER or raw r||s, see Backend.ecdsaEncoding.
 */
export type Mechanism =
  | 'rsa-pkcs1-sha256' | 'rsa-pkcs1-sha384' | 'rsa-pkcs1-sha512'
  | 'rsa-pss-sha256' | 'rsa-pss-sha384' | 'rsa-pss-sha512'
  | 'ecdsa-sha256' | 'ecdsa-sha384' | 'ecdsa-sha512';

export type { HashName } from '../tls/schemes.js';

/** The hash a mechanism uses. */
export function mechanismHash(m: Mechanism): HashName {
  return m.slice(m.lastIndexOf('-') + 1) as HashName;
}

/** The padding family and hash of a mechanism; undefined for a string that names none. */
export function mechanismAlgorithm(m: Mechanism): SignAlgorithm | undefined {
  const parts = /^(rsa-pkcs1|rsa-pss|ecdsa)-(sha256|sha384|sha512)$/.exec(m);
  return parts ? { kind: parts[1] as SignAlgorithm['kind'], hash: parts[2] as HashName } : undefined;
}

/** Parses "rsa:2048", "ec:p256" (as the CLI spells key types) into a KeyAlgorithm. */
export function parseKeyType(text: string): KeyAlgorithm {
  const m = /^(rsa):(2048|3072|4096)$|^ec:(p256|p384)$/i.exec(text.trim());
  if (!m) throw new UnsupportedError(`unknown key type "${text}" (use rsa:2048, rsa:3072, rsa:4096, ec:p256 or ec:p384)`);
  if (m[1]) return { type: 'rsa', bits: Number(m[2]) };
  return { type: 'ec', curve: m[3]!.toLowerCase() === 'p256' ? 'P-256' : 'P-384' };
}
