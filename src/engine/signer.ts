// The Signer handed to tls/ (and used by the WebCrypto provider): maps TLS schemes to HSM
// mechanisms, goes through admission control, returns TLS wire-form signatures (DER ECDSA),
// verifies each signature before releasing it (RSA by default: an RSA-CRT fault leaks the key),
// and publishes `hsmproxy:engine:sign` on node:diagnostics_channel.
import { channel } from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';
import { CURVES, describeAlgorithm, type Curve, type KeyAlgorithm, type Mechanism } from './algorithm.js';
import type { SignContext, Signer } from '../tls/signer.js';
import type { Admission } from './admission.js';
import type { Backend, BackendKind, KeyHandle } from './backend.js';
import { derToRaw, rawToDer } from './ecdsa.js';
import { DerError } from '../tls/der.js';
import { AbortedError, BackendError, BadSignatureError, EngineError, SignTimeoutError, UnsupportedError } from './errors.js';
import { mechanismFits, mechanismForScheme, schemesFor, verifySignatureAsync } from './schemes.js';

export type { CertifiedKey, Signer } from '../tls/signer.js';

/** Channel name and message of the per-signature event (metrics/ duplicates these). */
export const ENGINE_SIGN_CHANNEL = 'hsmproxy:engine:sign';
export interface EngineSignEvent {
  backend: BackendKind;
  keyType: 'rsa' | 'ec';
  scheme: number;
  durationMs: number;
  outcome: 'ok' | string;
}
const signChannel = channel(ENGINE_SIGN_CHANNEL);

/** When to verify a signature before returning it. */
export type VerifyPolicy = 'all' | 'rsa' | 'none';

/** Everything an EngineSigner needs; built by Engine.signer(). */
export interface EngineSignerOptions {
  backend: Backend;
  key: KeyHandle;
  /** Gates applied in order (e.g. per listener, then global). */
  gates: readonly Admission[];
  verify?: VerifyPolicy;
  /** Deadline for one signature, queueing included (default 10 s); 0 = none. */
  timeoutMs?: number;
}

/** Signs with one HSM key on behalf of TLS and PKI code. */
export class EngineSigner implements Signer {
  readonly keyType: 'rsa' | 'ec';
  readonly curve?: Curve;
  readonly bits?: number;
  readonly schemes: readonly number[];
  readonly algorithm: KeyAlgorithm;
  readonly key: KeyHandle;
  private readonly backend: Backend;
  private readonly gates: readonly Admission[];
  private readonly verify: boolean;
  private readonly timeoutMs: number;

  constructor(opts: EngineSignerOptions) {
    this.backend = opts.backend;
    this.key = opts.key;
    this.gates = opts.gates;
    this.algorithm = opts.key.algorithm;
    this.keyType = this.algorithm.type;
    if (this.algorithm.type === 'rsa') this.bits = this.algorithm.bits;
    else this.curve = this.algorithm.curve;
    this.schemes = Object.freeze(schemesFor(this.algorithm));
    const policy = opts.verify ?? 'rsa';
    this.verify = policy === 'all' || (policy === 'rsa' && this.keyType === 'rsa');
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /** Signs `data` for TLS with `scheme`; returns the wire form (DER for ECDSA). */
  sign(scheme: number, data: Buffer, signal?: AbortSignal, context?: SignContext): Promise<Buffer> {
    const mechanism = mechanismForScheme(scheme);
    if (!mechanism || !this.schemes.includes(scheme)) {
      const err = new UnsupportedError(`signature scheme 0x${scheme.toString(16).padStart(4, '0')} is not available for this ${describeAlgorithm(this.algorithm)} key`);
      this.publish(scheme, 0, err.code);
      return Promise.reject(err);
    }
    // A caller that aborts its signal by its own deadline, no later than ours (a TLS handshake's
    // sign timeout), needs no second signal and timer: creating an AbortSignal costs several µs.
    const deadline = context?.deadlineMs;
    if (signal && deadline !== undefined && deadline > 0 && (this.timeoutMs === 0 || deadline <= this.timeoutMs)) {
      return this.runUnderCallerDeadline(scheme, mechanism, data, signal, context?.client);
    }
    return this.run(scheme, mechanism, data, signal, context?.client);
  }

  /** Signs with an explicit mechanism (certificates, CSRs); ECDSA answers in DER. */
  signMechanism(mechanism: Mechanism, data: Buffer, signal?: AbortSignal): Promise<Buffer> {
    if (!mechanismFits(this.algorithm, mechanism)) {
      return Promise.reject(new UnsupportedError(`mechanism ${mechanism} does not fit this ${describeAlgorithm(this.algorithm)} key`));
    }
    return this.run(schemeForMechanism(mechanism, this.algorithm), mechanism, data, signal);
  }

  private async run(
    scheme: number, mechanism: Mechanism, data: Buffer, signal?: AbortSignal, client?: string,
  ): Promise<Buffer> {
    const start = performance.now();
    // One signal for queue, HSM request and deadline: the caller's abort or our timer cancels all.
    const ac = new AbortController();
    let timedOut = false;
    const onAbort = (): void => ac.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) ac.abort();
    const timer = this.timeoutMs > 0 ? setTimeout(() => { timedOut = true; ac.abort(); }, this.timeoutMs) : undefined;
    timer?.unref?.();
    try {
      const sig = await this.gated(0, () => this.produce(mechanism, data, ac.signal), ac.signal, client);
      if (ac.signal.aborted) throw timedOut ? new SignTimeoutError(this.timeoutMs) : new AbortedError();
      this.publish(scheme, performance.now() - start, 'ok');
      return sig;
    } catch (err) {
      let coded = err instanceof EngineError ? err : new BackendError((err as Error)?.message ?? String(err), err);
      if (timedOut && !(signal?.aborted)) coded = new SignTimeoutError(this.timeoutMs);
      this.publish(scheme, performance.now() - start, coded.code);
      throw coded;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** As run(), with the caller's signal as the only one: the caller's deadline is the one that fires first. */
  private async runUnderCallerDeadline(
    scheme: number, mechanism: Mechanism, data: Buffer, signal: AbortSignal, client?: string,
  ): Promise<Buffer> {
    const start = performance.now();
    try {
      if (signal.aborted) throw new AbortedError();
      const sig = await this.gated(0, () => this.produce(mechanism, data, signal), signal, client);
      if (signal.aborted) throw new AbortedError();
      this.publish(scheme, performance.now() - start, 'ok');
      return sig;
    } catch (err) {
      const coded = err instanceof EngineError ? err : new BackendError((err as Error)?.message ?? String(err), err);
      this.publish(scheme, performance.now() - start, coded.code);
      throw coded;
    }
  }

  private gated<T>(i: number, fn: () => Promise<T>, signal?: AbortSignal, client?: string): Promise<T> {
    const gate = this.gates[i];
    if (!gate) return fn();
    return gate.run(() => this.gated(i + 1, fn, signal, client), signal, client);
  }

  private async produce(mechanism: Mechanism, data: Buffer, signal?: AbortSignal): Promise<Buffer> {
    let sig = await this.backend.sign(this.key, mechanism, data, signal ? { signal } : {});
    if (this.algorithm.type === 'ec') {
      const size = CURVES[this.algorithm.curve].size;
      try {
        // Canonicalise: raw r‖s becomes DER; DER is re-encoded so a sloppy encoding never reaches a peer.
        sig = rawToDer(this.backend.ecdsaEncoding === 'raw' ? sig : derToRaw(sig, size), size);
      } catch (err) {
        if (err instanceof DerError) throw new BadSignatureError(`key ${this.key.keyId} (${err.message})`);
        throw err;
      }
    }
    if (this.verify && !(await verifySignatureAsync(this.key.publicKey, mechanism, data, sig))) {
      throw new BadSignatureError(`key ${this.key.keyId} ("${this.key.label}")`);
    }
    return sig;
  }

  private publish(scheme: number, durationMs: number, outcome: string): void {
    if (!signChannel.hasSubscribers) return;
    const event: EngineSignEvent = { backend: this.backend.kind, keyType: this.keyType, scheme, durationMs, outcome };
    signChannel.publish(event);
  }
}

/** The TLS scheme code for a mechanism on this key, or 0 when TLS has none (e.g. ECDSA P-256 with SHA-384). */
function schemeForMechanism(m: Mechanism, alg: KeyAlgorithm): number {
  for (const scheme of schemesFor(alg)) if (mechanismForScheme(scheme) === m) return scheme;
  return 0;
}

