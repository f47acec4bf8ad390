// A Signer over an in-memory node:crypto key, with injectable latency and faults, so tests
// exercise the asynchronous signature path exactly as an HSM-backed signer would.
import { constants, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { SignatureScheme, type CertifiedKey, type Signer } from '../../src/tls/signer.js';

export interface SoftSignerOptions {
  /** Delay before answering, in ms. */
  latencyMs?: number;
  /** 'reject': sign rejects; 'hang': never answers (until aborted); 'garbage': returns random bytes. */
  fault?: 'reject' | 'hang' | 'garbage';
}

const PSS: Record<number, string> = {
  [SignatureScheme.rsa_pss_rsae_sha256]: 'sha256', [SignatureScheme.rsa_pss_rsae_sha384]: 'sha384', [SignatureScheme.rsa_pss_rsae_sha512]: 'sha512',
};

/** Signs with a local key; counts calls and aborts for leak checks. */
const ECDSA = [
  SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ecdsa_secp384r1_sha384, SignatureScheme.ecdsa_secp521r1_sha512,
];

export class SoftSigner implements Signer {
  readonly keyType: 'rsa' | 'ec';
  readonly curve?: 'P-256' | 'P-384';
  readonly bits?: number;
  readonly schemes: readonly number[];
  calls = 0;
  aborted = 0;
  inFlight = 0;

  constructor(private readonly key: KeyObject, public opts: SoftSignerOptions = {}) {
    const d = key.asymmetricKeyDetails ?? {};
    if (key.asymmetricKeyType === 'rsa') {
      this.keyType = 'rsa';
      this.bits = d.modulusLength;
      this.schemes = [SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512];
    } else {
      this.keyType = 'ec';
      this.curve = d.namedCurve === 'secp384r1' ? 'P-384' : 'P-256';
      // As the engine: the curve's own scheme first (TLS 1.3), then every ECDSA hash (TLS 1.2 takes any).
      const own = this.curve === 'P-384' ? SignatureScheme.ecdsa_secp384r1_sha384 : SignatureScheme.ecdsa_secp256r1_sha256;
      this.schemes = [own, ...ECDSA.filter((s) => s !== own)];
    }
  }

  async sign(scheme: number, data: Buffer, signal?: AbortSignal): Promise<Buffer> {
    this.calls++;
    this.inFlight++;
    try {
      if (this.opts.latencyMs || this.opts.fault === 'hang') await this.wait(this.opts.fault === 'hang' ? 2 ** 31 - 1 : this.opts.latencyMs!, signal);
      if (this.opts.fault === 'reject') throw new Error('injected signer fault');
      if (this.opts.fault === 'garbage') return Buffer.alloc(this.keyType === 'rsa' ? (this.bits ?? 2048) / 8 : 70, 0x5a);
      const pss = PSS[scheme];
      if (pss) return cryptoSign(pss, data, { key: this.key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST });
      const hash = { [SignatureScheme.ecdsa_secp384r1_sha384]: 'sha384', [SignatureScheme.ecdsa_secp521r1_sha512]: 'sha512' }[scheme] ?? 'sha256';
      return cryptoSign(hash, data, this.key);
    } finally {
      this.inFlight--;
    }
  }

  private wait(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) { this.aborted++; reject(new Error('aborted')); return; }
      const onAbort = (): void => { clearTimeout(timer); this.aborted++; reject(new Error('aborted')); };
      const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** A CertifiedKey over a test certificate and a SoftSigner. */
export function softCertifiedKey(chain: Buffer[], key: KeyObject, opts?: SoftSignerOptions): CertifiedKey & { signer: SoftSigner } {
  return { chain, signer: new SoftSigner(key, opts) };
}
