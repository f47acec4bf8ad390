// From "sign this with scheme S" to a PKCS#11 mechanism, its input, and the wire-form output.
// RSA: CKM_SHAx_RSA_PKCS(_PSS) over the data when the token offers it (the token hashes),
// else the raw mechanism over a digest we compute. ECDSA: CKM_ECDSA over our digest (SoftHSM
// and most HSMs lack CKM_ECDSA_SHAx), then the raw r||s the token returns becomes DER.
import { createHash } from 'node:crypto';
import type { Mechanism } from 'pkcs11js';
import type { HashName, SignAlgorithm } from '../../tls/schemes.js';
import { rawToDer } from '../ecdsa.js';
import { ck } from './module.js';
import { UnsupportedError } from './errors.js';

export type { HashName, SignAlgorithm };

const HASH_LEN: Record<HashName, number> = { sha256: 32, sha384: 48, sha512: 64 };
const HASH_MECH: Record<HashName, number> = { sha256: ck.CKM_SHA256, sha384: ck.CKM_SHA384, sha512: ck.CKM_SHA512 };
const MGF: Record<HashName, number> = {
  sha256: ck.CKG_MGF1_SHA256, sha384: ck.CKG_MGF1_SHA384, sha512: ck.CKG_MGF1_SHA512,
};
const RSA_PKCS_HASHED: Record<HashName, number> = {
  sha256: ck.CKM_SHA256_RSA_PKCS, sha384: ck.CKM_SHA384_RSA_PKCS, sha512: ck.CKM_SHA512_RSA_PKCS,
};
const RSA_PSS_HASHED: Record<HashName, number> = {
  sha256: ck.CKM_SHA256_RSA_PKCS_PSS, sha384: ck.CKM_SHA384_RSA_PKCS_PSS, sha512: ck.CKM_SHA512_RSA_PKCS_PSS,
};

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
export function planSignature(
  alg: SignAlgorithm, keyType: 'rsa' | 'ec', keyBytes: number, data: Buffer, offered: ReadonlySet<number>, prehashed = false,
): SignPlan {
  if (prehashed && data.length !== HASH_LEN[alg.hash]) throw new UnsupportedError(`a ${alg.hash} digest is ${HASH_LEN[alg.hash]} bytes, got ${data.length}`);
  const digest = (): Buffer => prehashed ? data : createHash(alg.hash).update(data).digest();
  // Hashing mechanisms want the content; with a digest in hand, pretend they are not offered.
  if (prehashed) {
    offered = new Set([...offered].filter((m) => m !== RSA_PSS_HASHED[alg.hash] && m !== RSA_PKCS_HASHED[alg.hash]));
  }
  // RSA: the token's output is the wire form already.
  const rsa = (mechanism: Mechanism, input: Buffer): SignPlan =>
    ({ mechanism, input, outLength: keyBytes, finish: (s) => s });
  if (alg.kind === 'ecdsa') {
    if (keyType !== 'ec') throw new UnsupportedError('ECDSA needs an EC key');
    if (!offered.has(ck.CKM_ECDSA)) throw new UnsupportedError('the token does not offer CKM_ECDSA');
    return { mechanism: { mechanism: ck.CKM_ECDSA }, input: digest(), outLength: 2 * keyBytes, finish: ecdsaRawToDer };
  }
  if (keyType !== 'rsa') throw new UnsupportedError(`${alg.kind} needs an RSA key`);
  const hash = alg.hash;
  if (alg.kind === 'rsa-pss') {
    const parameter = { type: ck.CK_PARAMS_RSA_PSS, hashAlg: HASH_MECH[hash], mgf: MGF[hash], saltLen: HASH_LEN[hash] };
    if (offered.has(RSA_PSS_HASHED[hash])) return rsa({ mechanism: RSA_PSS_HASHED[hash], parameter }, data);
    if (offered.has(ck.CKM_RSA_PKCS_PSS)) return rsa({ mechanism: ck.CKM_RSA_PKCS_PSS, parameter }, digest());
    throw new UnsupportedError('the token offers neither CKM_RSA_PKCS_PSS nor a hashing PSS mechanism');
  }
  if (offered.has(RSA_PKCS_HASHED[hash])) return rsa({ mechanism: RSA_PKCS_HASHED[hash] }, data);
  if (offered.has(ck.CKM_RSA_PKCS)) {
    return rsa({ mechanism: ck.CKM_RSA_PKCS }, Buffer.concat([DIGEST_INFO[hash], digest()]));
  }
  throw new UnsupportedError('the token offers no RSA PKCS#1 v1.5 signing mechanism');
}

/** Converts a PKCS#11 ECDSA signature (r||s, each the field size) to DER ECDSA-Sig-Value. */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  if (raw.length === 0 || raw.length % 2 !== 0) throw new UnsupportedError(`ECDSA signature of odd length ${raw.length} from the token`);
  return rawToDer(raw, raw.length / 2);
}
