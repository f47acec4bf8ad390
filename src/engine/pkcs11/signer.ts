// A Signer for one private key on a PKCS#11 token. Each signature borrows a session of its
// own, runs C_SignInit (cheap, on the event loop) then C_Sign on the libuv thread pool through
// pkcs11js's async call, so the event loop never waits for the token.
import type { KeyObject } from 'node:crypto';
import type { Pkcs11Token } from './token.js';
import { privateKeyHandle, signatureUnitBytes } from './keys.js';
import type { Pkcs11KeyInfo } from './keys.js';
import type { Signer } from '../../tls/signer.js';
import { schemeAlgorithm, schemesFor } from '../schemes.js';
import { planSignature } from './mechanisms.js';
import type { SignAlgorithm, SignPlan } from './mechanisms.js';
import { UnsupportedError } from './errors.js';

/** Signs with a token-held key. */
export class Pkcs11Signer implements Signer {
  readonly keyType: 'rsa' | 'ec';
  readonly curve?: 'P-256' | 'P-384';
  readonly bits?: number;
  readonly schemes: readonly number[];
  readonly publicKey: KeyObject;
  /** CKA_ID of the key. */
  readonly id: Buffer;
  private readonly unitBytes: number;

  constructor(private readonly token: Pkcs11Token, key: Pkcs11KeyInfo) {
    this.keyType = key.keyType;
    this.curve = key.curve;
    this.bits = key.bits;
    this.publicKey = key.publicKey;
    this.id = key.id;
    this.schemes = schemesFor(key.keyType === 'rsa' ? { type: 'rsa', bits: key.bits ?? 0 } : { type: 'ec', curve: key.curve ?? 'P-256' });
    this.unitBytes = signatureUnitBytes(key);
  }

  /** Signs `data` (the whole content, not a digest) for a TLS SignatureScheme; ECDSA comes back DER. */
  sign(scheme: number, data: Buffer, signal?: AbortSignal): Promise<Buffer> {
    const alg = schemeAlgorithm(scheme);
    if (!alg) return Promise.reject(new UnsupportedError(`signature scheme 0x${scheme.toString(16).padStart(4, '0')} is not supported by the PKCS#11 backend`));
    return this.signWith(alg, data, signal);
  }

  /** Signs with an explicit algorithm (for X.509 work, where curve and hash are independent). */
  async signWith(alg: SignAlgorithm, data: Buffer, signal?: AbortSignal): Promise<Buffer> {
    const plan = planSignature(alg, this.keyType, this.unitBytes, data, this.token.mechanisms);
    return plan.finish(await signOnToken(this.token, this.id, plan, signal));
  }
}

/**
 * Runs one planned signature with the key `id` on a session of its own and returns the token's
 * output as is (raw r||s for ECDSA). C_SignInit is quick and synchronous; C_Sign goes to the
 * libuv thread pool.
 */
export function signOnToken(token: Pkcs11Token, id: Buffer, plan: SignPlan, signal?: AbortSignal): Promise<Buffer> {
  const api = token.api;
  return token.run('signing', (session) => {
    const key = privateKeyHandle(token, session, { id });
    api.C_SignInit(session, plan.mechanism, key);
    return api.C_SignAsync(session, plan.input, Buffer.alloc(plan.outLength));
  }, signal);
}
