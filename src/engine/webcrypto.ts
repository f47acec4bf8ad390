// A WebCrypto-compatible provider whose `subtle.sign` for HSM-backed keys goes to the engine's
// signer (so the private key never leaves the HSM), and which delegates everything else to
// node's webcrypto. @peculiar/x509 builds CSRs and certificates through it.
import { webcrypto } from 'node:crypto';
import type { Curve, HashName, Mechanism } from './algorithm.js';
import { CURVES } from './algorithm.js';
import { derToRaw } from './ecdsa.js';
import { UnsupportedError } from './errors.js';
import type { EngineSigner } from './signer.js';

type SubtleCrypto = webcrypto.SubtleCrypto;
type CryptoKey = webcrypto.CryptoKey;

/** How an HSM key signs through WebCrypto: the algorithm a certificate or CSR will name. */
export type WebSigningAlgorithm =
  | { name: 'RSASSA-PKCS1-v1_5'; hash: 'SHA-256' | 'SHA-384' | 'SHA-512' }
  | { name: 'RSA-PSS'; hash: 'SHA-256' | 'SHA-384' | 'SHA-512' }
  | { name: 'ECDSA'; hash: 'SHA-256' | 'SHA-384' | 'SHA-512' };

/** A private CryptoKey look-alike whose key material stays in the HSM. Non-extractable, sign only. */
export class HsmCryptoKey {
  readonly type = 'private' as const;
  readonly extractable = false;
  readonly usages: ['sign'] = ['sign'];
  readonly algorithm: Record<string, unknown>;
  constructor(readonly signer: EngineSigner, algorithm: WebSigningAlgorithm) {
    if ((algorithm.name === 'ECDSA') !== (signer.keyType === 'ec')) {
      throw new UnsupportedError(`a ${signer.keyType.toUpperCase()} key cannot sign with ${algorithm.name}`);
    }
    const alg = signer.algorithm;
    this.algorithm = alg.type === 'ec'
      ? { name: 'ECDSA', namedCurve: alg.curve }
      : {
        name: algorithm.name, hash: { name: algorithm.hash }, modulusLength: alg.bits,
        publicExponent: new Uint8Array([1, 0, 1]),
      };
  }
}

function hashOf(algorithm: unknown, fallback?: unknown): HashName {
  const raw = (algorithm as { hash?: unknown })?.hash ?? fallback;
  const name = typeof raw === 'string' ? raw : (raw as { name?: unknown })?.name;
  switch (String(name).toUpperCase()) {
    case 'SHA-256': return 'sha256';
    case 'SHA-384': return 'sha384';
    case 'SHA-512': return 'sha512';
    default: throw new UnsupportedError(`hash ${String(name)} is not supported for HSM signing (use SHA-256, SHA-384 or SHA-512)`);
  }
}

/** Maps a WebCrypto sign call on an HSM key to an HSM mechanism. */
function mechanismFor(algorithm: unknown, key: HsmCryptoKey): Mechanism {
  const name = String(typeof algorithm === 'string' ? algorithm : (algorithm as { name?: unknown })?.name).toUpperCase();
  if (name === 'ECDSA') return `ecdsa-${hashOf(algorithm)}`;
  const hash = hashOf(algorithm, (key.algorithm as { hash?: unknown }).hash);
  if (name === 'RSASSA-PKCS1-V1_5') return `rsa-pkcs1-${hash}`;
  if (name === 'RSA-PSS') {
    const saltLength = (algorithm as { saltLength?: unknown }).saltLength;
    const want = { sha256: 32, sha384: 48, sha512: 64 }[hash];
    // HSMs (and TLS) use salt length = hash length; anything else cannot be honoured.
    if (saltLength !== undefined && saltLength !== want) throw new UnsupportedError(`RSA-PSS with salt length ${String(saltLength)} is not supported (use ${want}, the hash length)`);
    return `rsa-pss-${hash}`;
  }
  throw new UnsupportedError(`algorithm ${name} cannot sign with an HSM key`);
}

function toBuffer(data: unknown): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  throw new TypeError('data must be a BufferSource');
}

/** The engine's WebCrypto provider: node's webcrypto plus HSM-backed private keys. */
export class EngineCrypto {
  readonly subtle: SubtleCrypto;

  constructor() {
    const base = webcrypto.subtle;
    const sign = async (algorithm: unknown, key: CryptoKey | HsmCryptoKey, data: unknown): Promise<ArrayBuffer> => {
      if (!(key instanceof HsmCryptoKey)) {
        // A plain node CryptoKey: delegate unchanged (signature of the overloads varies by type).
        return base.sign(algorithm as Parameters<SubtleCrypto['sign']>[0], key, data as Parameters<SubtleCrypto['sign']>[2]);
      }
      const der = await key.signer.signMechanism(mechanismFor(algorithm, key), toBuffer(data));
      // WebCrypto ECDSA signatures are raw r‖s; the certificate builder re-encodes them as DER.
      const alg = key.signer.algorithm;
      const out = alg.type === 'ec' ? derToRaw(der, CURVES[alg.curve as Curve].size) : der;
      return out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength) as ArrayBuffer;
    };
    this.subtle = new Proxy(base, {
      get(target, prop) {
        if (prop === 'sign') return sign;
        if (prop === 'exportKey' || prop === 'wrapKey') {
          const fn = Reflect.get(target, prop) as (...args: unknown[]) => Promise<unknown>;
          return (...args: unknown[]) => {
            if (args.some((a) => a instanceof HsmCryptoKey)) return Promise.reject(new UnsupportedError('an HSM private key cannot be exported'));
            return fn.apply(target, args);
          };
        }
        const value = Reflect.get(target, prop) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }

  getRandomValues<T extends ArrayBufferView | null>(array: T): T {
    return webcrypto.getRandomValues(array as unknown as Uint8Array) as unknown as T;
  }

  randomUUID(): string {
    return webcrypto.randomUUID();
  }

  /** A private CryptoKey for an HSM key, signing with the given algorithm. */
  privateKey(signer: EngineSigner, algorithm: WebSigningAlgorithm): HsmCryptoKey {
    return new HsmCryptoKey(signer, algorithm);
  }

  /** The matching public CryptoKey (a real node key, imported from the HSM key's SPKI). */
  async publicKey(signer: EngineSigner, algorithm: WebSigningAlgorithm): Promise<CryptoKey> {
    const spki = signer.key.publicKey.export({ type: 'spki', format: 'der' });
    const alg = signer.algorithm;
    const importAlg = alg.type === 'ec' ? { name: 'ECDSA', namedCurve: alg.curve } : { name: algorithm.name, hash: algorithm.hash };
    return webcrypto.subtle.importKey('spki', spki, importAlg, true, ['verify']);
  }

  /** Both halves for @peculiar/x509's `keys` parameter. */
  async keyPair(
    signer: EngineSigner, algorithm: WebSigningAlgorithm,
  ): Promise<{ privateKey: HsmCryptoKey; publicKey: CryptoKey }> {
    return { privateKey: this.privateKey(signer, algorithm), publicKey: await this.publicKey(signer, algorithm) };
  }
}
