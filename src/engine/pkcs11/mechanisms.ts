// From "sign this with scheme S" to a PKCS#11 mechanism, its input, and the wire-form output.
// RSA: CKM_SHAx_RSA_PKCS(_PSS) over the data when the token offers it (the token hashes),
// else the raw mechanism over a digest we compute. ECDSA: CKM_ECDSA over our digest (SoftHSM
// and most HSMs lack CKM_ECDSA_SHAx), then the raw r||s the token returns becomes DER.
import { createHash } from 'node:crypto';
import type { Mechanism } from 'pkcs11js';
import { ck } from './module.js';
import { UnsupportedError } from './errors.js';

export type HashName = 'sha256' | 'sha384' | 'sha512';
/** A signature algorithm independent of TLS: the padding family and the hash. */
export interface SignAlgorithm { kind: 'rsa-pkcs1' | 'rsa-pss' | 'ecdsa'; hash: HashName }

/** TLS SignatureScheme code points this backend produces (RFC 8446 §4.2.3). */
export const Scheme = {
  rsa_pkcs1_sha256: 0x0401,
  rsa_pkcs1_sha384: 0x0501,
  rsa_pkcs1_sha512: 0x0601,
  ecdsa_secp256r1_sha256: 0x0403,
  ecdsa_secp384r1_sha384: 0x0503,
  rsa_pss_rsae_sha256: 0x0804,
  rsa_pss_rsae_sha384: 0x0805,
  rsa_pss_rsae_sha512: 0x0806,
} as const;

const SCHEME_ALGS = new Map<number, SignAlgorithm>([
  [Scheme.rsa_pkcs1_sha256, { kind: 'rsa-pkcs1', hash: 'sha256' }],
  [Scheme.rsa_pkcs1_sha384, { kind: 'rsa-pkcs1', hash: 'sha384' }],
  [Scheme.rsa_pkcs1_sha512, { kind: 'rsa-pkcs1', hash: 'sha512' }],
  [Scheme.ecdsa_secp256r1_sha256, { kind: 'ecdsa', hash: 'sha256' }],
  [Scheme.ecdsa_secp384r1_sha384, { kind: 'ecdsa', hash: 'sha384' }],
  [Scheme.rsa_pss_rsae_sha256, { kind: 'rsa-pss', hash: 'sha256' }],
  [Scheme.rsa_pss_rsae_sha384, { kind: 'rsa-pss', hash: 'sha384' }],
  [Scheme.rsa_pss_rsae_sha512, { kind: 'rsa-pss', hash: 'sha512' }],
]);

/** The algorithm behind a TLS scheme, or undefined if this backend cannot produce it. */
export function schemeAlgorithm(scheme: number): SignAlgorithm | undefined {
  return SCHEME_ALGS.get(scheme);
}

/** Schemes a key can produce, preferred first (PSS before PKCS#1 v1.5, as TLS 1.3 needs PSS). */
export function schemesFor(key: { keyType: 'rsa' | 'ec'; curve?: 'P-256' | 'P-384' }): number[] {
  if (key.keyType === 'rsa') {
    return [Scheme.rsa_pss_rsae_sha256, Scheme.rsa_pss_rsae_sha384, Scheme.rsa_pss_rsae_sha512,
      Scheme.rsa_pkcs1_sha256, Scheme.rsa_pkcs1_sha384, Scheme.rsa_pkcs1_sha512];
  }
  return key.curve === 'P-384' ? [Scheme.ecdsa_secp384r1_sha384] : [Scheme.ecdsa_secp256r1_sha256];
}

const HASH_LEN: Record<HashName, number> = { sha256: 32, sha384: 48, sha512: 64 };
const HASH_MECH: Record<HashName, number> = { sha256: ck.CKM_SHA256, sha384: ck.CKM_SHA384, sha512: ck.CKM_SHA512 };
const MGF: Record<HashName, number> = { sha256: ck.CKG_MGF1_SHA256, sha384: ck.CKG_MGF1_SHA384, sha512: ck.CKG_MGF1_SHA512 };
const RSA_PKCS_HASHED: Record<HashName, number> = { sha256: ck.CKM_SHA256_RSA_PKCS, sha384: ck.CKM_SHA384_RSA_PKCS, sha512: ck.CKM_SHA512_RSA_PKCS };
const RSA_PSS_HASHED: Record<HashName, number> = { sha256: ck.CKM_SHA256_RSA_PKCS_PSS, sha384: ck.CKM_SHA384_RSA_PKCS_PSS, sha512: ck.CKM_SHA512_RSA_PKCS_PSS };

// DER DigestInfo prefixes (RFC 8017 §9.2 note 1), for CKM_RSA_PKCS over a digest.
const DIGEST_INFO: Record<HashName, Buffer> = {
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
  sha512: Buffer.from('3051300d060960864801650304020305000440', 'hex'),
};

/** What to hand the token and how to turn its output into the wire-form signature. */
export interface SignPlan {
  mechanism: Mechanism;
  input: Buffer;
  /** Room for the token's output. */
  outLength: number;
  finish(raw: Buffer): Buffer;
}

/**
 * Plans one signature; `offered` is the token's mechanism list, `keyBytes` the modulus or field
 * size. With `prehashed`, `data` is already the digest and only digest-input mechanisms are used.
 */
export function planSignature(alg: SignAlgorithm, keyType: 'rsa' | 'ec', keyBytes: number, data: Buffer, offered: ReadonlySet<number>, prehashed = false): SignPlan {
  if (prehashed && data.length !== HASH_LEN[alg.hash]) throw new UnsupportedError(`a ${alg.hash} digest is ${HASH_LEN[alg.hash]} bytes, got ${data.length}`);
  const digest = (): Buffer => prehashed ? data : createHash(alg.hash).update(data).digest();
  // Hashing mechanisms want the content; with a digest in hand, pretend they are not offered.
  if (prehashed) offered = new Set([...offered].filter((m) => m !== RSA_PSS_HASHED[alg.hash] && m !== RSA_PKCS_HASHED[alg.hash]));
  const identity = (raw: Buffer): Buffer => raw;
  if (alg.kind === 'ecdsa') {
    if (keyType !== 'ec') throw new UnsupportedError('ECDSA needs an EC key');
    if (!offered.has(ck.CKM_ECDSA)) throw new UnsupportedError('the token does not offer CKM_ECDSA');
    return { mechanism: { mechanism: ck.CKM_ECDSA }, input: digest(), outLength: 2 * keyBytes, finish: (raw) => ecdsaRawToDer(raw) };
  }
  if (keyType !== 'rsa') throw new UnsupportedError(`${alg.kind} needs an RSA key`);
  if (alg.kind === 'rsa-pss') {
    const parameter = { type: ck.CK_PARAMS_RSA_PSS, hashAlg: HASH_MECH[alg.hash], mgf: MGF[alg.hash], saltLen: HASH_LEN[alg.hash] };
    if (offered.has(RSA_PSS_HASHED[alg.hash])) return { mechanism: { mechanism: RSA_PSS_HASHED[alg.hash], parameter }, input: data, outLength: keyBytes, finish: identity };
    if (offered.has(ck.CKM_RSA_PKCS_PSS)) return { mechanism: { mechanism: ck.CKM_RSA_PKCS_PSS, parameter }, input: digest(), outLength: keyBytes, finish: identity };
    throw new UnsupportedError('the token offers neither CKM_RSA_PKCS_PSS nor a hashing PSS mechanism');
  }
  if (offered.has(RSA_PKCS_HASHED[alg.hash])) return { mechanism: { mechanism: RSA_PKCS_HASHED[alg.hash] }, input: data, outLength: keyBytes, finish: identity };
  if (offered.has(ck.CKM_RSA_PKCS)) return { mechanism: { mechanism: ck.CKM_RSA_PKCS }, input: Buffer.concat([DIGEST_INFO[alg.hash], digest()]), outLength: keyBytes, finish: identity };
  throw new UnsupportedError('the token offers no RSA PKCS#1 v1.5 signing mechanism');
}

/** DER INTEGER body for an unsigned big-endian value: minimal, with a 0x00 if the top bit is set. */
function derUnsigned(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const v = bytes.subarray(i);
  return (v[0]! & 0x80) ? Buffer.concat([Buffer.from([0]), v]) : v;
}

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Converts a PKCS#11 ECDSA signature (r||s, each the field size) to DER ECDSA-Sig-Value. */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  if (raw.length === 0 || raw.length % 2 !== 0) throw new UnsupportedError(`ECDSA signature of odd length ${raw.length} from the token`);
  const half = raw.length / 2;
  const ints = [raw.subarray(0, half), raw.subarray(half)].map((x) => {
    const body = derUnsigned(x);
    return Buffer.concat([Buffer.from([0x02]), derLength(body.length), body]);
  });
  const body = Buffer.concat(ints);
  return Buffer.concat([Buffer.from([0x30]), derLength(body.length), body]);
}
