// The Engine: loads key references, resolves them on the right backend once (failing early with
// a message naming the file), and hands out Signers (for tls/) and a WebCrypto provider (for pki/).
// Holds the global admission gate shared by every signer it makes.
import { Admission, type AdmissionOptions } from './admission.js';
import type { Backend, BackendKind, KeyHandle } from './backend.js';
import { ClosedError, UnsupportedError } from './errors.js';
import { readKeyRef, type KeyRef } from './keyref.js';
import { normaliseClusterId } from './sim.js';
import { EngineSigner, type VerifyPolicy } from './signer.js';
import { SoftBackend } from './soft.js';
import { EngineCrypto } from './webcrypto.js';

/** Opens the backend a reference needs (e.g. connects to its cluster or loads its PKCS#11 module). */
export type BackendOpener = (ref: KeyRef) => Promise<Backend>;

/** How to build an Engine. */
export interface EngineOptions {
  /** Ready backends by kind (tests, embedded use). */
  backends?: Partial<Record<BackendKind, Backend>>;
  /** Lazily opened backends by kind, one per cluster / module+token, cached. */
  openers?: Partial<Record<Exclude<BackendKind, 'soft'>, BackendOpener>>;
  /** The global cap on signatures in flight (or a shared gate). */
  admission?: AdmissionOptions | Admission;
  /** Verify-after-sign policy (default: RSA only). */
  verify?: VerifyPolicy;
  /** Deadline per signature, queueing included (default 10 s; 0 = none). */
  signTimeoutMs?: number;
}

/** Per-signer options. */
export interface SignerOptions {
  /** An extra gate in front of the global one, e.g. per listener. */
  admission?: Admission;
  verify?: VerifyPolicy;
  signTimeoutMs?: number;
}

/** Where a reference's key lives, as a cache key for opened backends. */
function locationOf(ref: KeyRef): string {
  return ref.backend === 'sim' ? `sim:${normaliseClusterId(ref.clusterId)}` : `pkcs11:${ref.module}|${ref.uri.replace(/;(id|object|type)=[^;?]*/g, '')}`;
}

/** Entry point of engine/: key references in, Signers and a WebCrypto provider out. */
export class Engine {
  readonly admission: Admission;
  private readonly backends: Partial<Record<BackendKind, Backend>>;
  private readonly openers: EngineOptions['openers'];
  private readonly opened = new Map<string, Promise<Backend>>();
  private readonly owners = new WeakMap<KeyHandle, Backend>();
  private readonly verify: VerifyPolicy;
  private readonly signTimeoutMs?: number;
  private soft?: SoftBackend;
  private crypto?: EngineCrypto;
  private closed = false;

  constructor(opts: EngineOptions = {}) {
    this.backends = { ...opts.backends };
    this.openers = opts.openers ?? {};
    this.admission = opts.admission instanceof Admission ? opts.admission : new Admission(opts.admission);
    this.verify = opts.verify ?? 'rsa';
    this.signTimeoutMs = opts.signTimeoutMs;
  }

  /** The backend for a reference: a ready one of its kind, else one opened (once) for its location. */
  async backendFor(ref: KeyRef): Promise<Backend> {
    this.check();
    const ready = this.backends[ref.backend];
    if (ready) return ready;
    const open = this.openers?.[ref.backend];
    if (!open) throw new UnsupportedError(`${ref.source ?? 'the key reference'} names a ${ref.backend} key, but no ${ref.backend} backend is configured`);
    const where = locationOf(ref);
    let p = this.opened.get(where);
    if (!p) {
      p = open(ref);
      this.opened.set(where, p);
      p.catch(() => this.opened.delete(where));
    }
    return p;
  }

  /** Resolves a parsed reference on its backend (key present, same cluster, credentials accepted). */
  async resolve(ref: KeyRef): Promise<KeyHandle> {
    const backend = await this.backendFor(ref);
    const handle = await backend.resolve(ref);
    this.owners.set(handle, backend);
    return handle;
  }

  /** Reads a key reference file and resolves it; every failure names the file. */
  async loadKey(path: string): Promise<KeyHandle> {
    return this.resolve(await readKeyRef(path));
  }

  /** Loads a real software private key (tests and baselines only: the key is in this process). */
  async loadSoftKey(path: string): Promise<KeyHandle> {
    this.check();
    this.soft ??= (this.backends.soft as SoftBackend | undefined) ?? new SoftBackend();
    const handle = await this.soft.loadFile(path);
    this.owners.set(handle, this.soft);
    return handle;
  }

  /** Registers a handle made directly by a backend (generate/import) so it can get a Signer. */
  adopt(handle: KeyHandle, backend: Backend): KeyHandle {
    this.owners.set(handle, backend);
    return handle;
  }

  /** A Signer for a key given as a reference path, a parsed reference or a resolved handle. */
  async signer(key: string | KeyRef | KeyHandle, opts: SignerOptions = {}): Promise<EngineSigner> {
    this.check();
    let handle: KeyHandle;
    if (typeof key === 'string') handle = await this.loadKey(key);
    else if ('algorithm' in key) handle = key;
    else handle = await this.resolve(key);
    const backend = this.owners.get(handle);
    if (!backend) throw new UnsupportedError(`key ${handle.keyId} was not resolved through this engine`);
    const gates = opts.admission ? [opts.admission, this.admission] : [this.admission];
    return new EngineSigner({
      backend, key: handle, gates, verify: opts.verify ?? this.verify,
      timeoutMs: opts.signTimeoutMs ?? this.signTimeoutMs,
    });
  }

  /** The WebCrypto provider whose sign for HSM keys goes to the HSM. */
  webcrypto(): EngineCrypto {
    this.crypto ??= new EngineCrypto();
    return this.crypto;
  }

  /** Closes every backend the engine opened or was given. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const all = new Set<Backend>(Object.values(this.backends).filter((b): b is Backend => b !== undefined));
    for (const p of this.opened.values()) {
      try {
        all.add(await p);
      } catch {
        // never opened: nothing to close
      }
    }
    if (this.soft) all.add(this.soft);
    await Promise.allSettled([...all].map((b) => b.close()));
  }

  private check(): void {
    if (this.closed) throw new ClosedError();
  }
}
