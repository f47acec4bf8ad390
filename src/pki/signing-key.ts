// An HSM key ready for @peculiar/x509: the WebCrypto key pair (private half in the HSM) and the
// signature algorithm that follows the key (RSA: sha256WithRSAEncryption, or RSASSA-PSS on request;
// EC P-256: ecdsa-with-SHA256; P-384: ecdsa-with-SHA384).
import type { webcrypto } from 'node:crypto';
import type { EngineCrypto, EngineSigner, HsmCryptoKey, KeyAlgorithm } from '../engine/index.js';

/** What a certificate or CSR built with this key will name as its signature algorithm. */
export type SigningParams =
  | { name: 'RSASSA-PKCS1-v1_5'; hash: 'SHA-256' }
  | { name: 'RSA-PSS'; hash: 'SHA-256'; saltLength: 32 }
  | { name: 'ECDSA'; hash: 'SHA-256' | 'SHA-384' };

/** An HSM key wrapped for certificate and CSR building. */
export interface SigningKey {
  readonly signer: EngineSigner;
  readonly crypto: EngineCrypto;
  readonly params: SigningParams;
  readonly privateKey: HsmCryptoKey;
  readonly publicKey: webcrypto.CryptoKey;
}

/** The signature algorithm a key signs certificates with. */
export function signingParamsFor(alg: KeyAlgorithm, opts: { pss?: boolean } = {}): SigningParams {
  if (alg.type === 'rsa') return opts.pss ? { name: 'RSA-PSS', hash: 'SHA-256', saltLength: 32 } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  return { name: 'ECDSA', hash: alg.curve === 'P-384' ? 'SHA-384' : 'SHA-256' };
}

/** Wraps an engine signer for pki/: `pss` asks for RSASSA-PSS with an RSA key (ignored for EC). */
export async function signingKey(
  signer: EngineSigner, crypto: EngineCrypto, opts: { pss?: boolean } = {},
): Promise<SigningKey> {
  const params = signingParamsFor(signer.algorithm, opts);
  const { privateKey, publicKey } = await crypto.keyPair(signer, { name: params.name, hash: params.hash });
  return { signer, crypto, params, privateKey, publicKey };
}
