// The `soft` backend: real private keys held in this process by node:crypto. For tests and
// benchmark baselines only — it defeats the point of an HSM. It refuses key references, so a
// reference can never be mistaken for a usable key.
import { createPrivateKey, createPublicKey, generateKeyPair, randomUUID, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { CURVES, keyAlgorithmOf, type Mechanism } from './algorithm.js';
import type { Backend, GenerateSpec, KeyHandle, KeyInfo, SignOptions } from './backend.js';
import { AbortedError, ClosedError, KeyNotFoundError, MalformedKeyRefError, NotASoftKeyError, UnsupportedError } from './errors.js';
import { hasKeyRefMarker, type KeyRef } from './keyref.js';
import { mechanismFits, nodeSignAsync } from './schemes.js';

const generate = promisify(generateKeyPair);

/** In-process software keys; `ecdsaEncoding: 'raw'` imitates a PKCS#11 token (for tests). */
export class SoftBackend implements Backend {
  readonly kind = 'soft' as const;
  readonly ecdsaEncoding: 'der' | 'raw';
  private readonly keys = new Map<string, { info: KeyHandle; privateKey: KeyObject }>();
  private closed = false;

  constructor(opts: { ecdsaEncoding?: 'der' | 'raw' } = {}) {
    this.ecdsaEncoding = opts.ecdsaEncoding ?? 'der';
  }

  /** Loads a real PEM private key (PKCS#1, SEC1 or PKCS#8); refuses key references. */
  load(pem: string, source: string): KeyHandle {
    this.check();
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey(pem);
    } catch (err) {
      throw new MalformedKeyRefError(source, `it is not a PEM private key (${(err as Error).message})`);
    }
    // A key reference parses as a private key too: its private field starts with the marker.
    if (hasKeyRefMarker(privateKey)) throw new NotASoftKeyError(source);
    return this.add(privateKey, source, source);
  }

  /** Reads and loads a PEM private key file. */
  async loadFile(path: string): Promise<KeyHandle> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new MalformedKeyRefError(path, `cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    return this.load(text, path);
  }

  private add(privateKey: KeyObject, keyId: string, label: string): KeyHandle {
    const publicKey = createPublicKey(privateKey);
    const info: KeyHandle = { backend: 'soft', keyId, label, algorithm: keyAlgorithmOf(publicKey), publicKey };
    this.keys.set(keyId, { info, privateKey });
    return info;
  }

  async resolve(ref: KeyRef): Promise<KeyHandle> {
    throw new NotASoftKeyError(ref.source ?? 'the key reference');
  }

  async sign(key: KeyHandle, mechanism: Mechanism, data: Buffer, opts: SignOptions = {}): Promise<Buffer> {
    this.check();
    if (opts.signal?.aborted) throw new AbortedError();
    const entry = this.keys.get(key.keyId);
    if (!entry) throw new KeyNotFoundError(`soft key ${key.keyId}`);
    if (!mechanismFits(entry.info.algorithm, mechanism)) throw new UnsupportedError(`mechanism ${mechanism} does not fit a ${entry.info.algorithm.type} key`);
    return nodeSignAsync(entry.privateKey, mechanism, data, this.ecdsaEncoding === 'raw' ? 'ieee-p1363' : 'der');
  }

  async generateKeyPair(spec: GenerateSpec): Promise<KeyHandle> {
    this.check();
    const pair = spec.algorithm.type === 'rsa'
      ? await generate('rsa', { modulusLength: spec.algorithm.bits })
      : await generate('ec', { namedCurve: CURVES[spec.algorithm.curve].nodeName });
    return this.add(pair.privateKey, randomUUID(), spec.label);
  }

  async importKey(privateKey: KeyObject, label: string): Promise<KeyHandle> {
    this.check();
    return this.add(privateKey, randomUUID(), label);
  }

  async list(): Promise<KeyInfo[]> {
    this.check();
    return [...this.keys.values()].map((e) => e.info);
  }

  async delete(key: KeyHandle | string): Promise<void> {
    this.check();
    const id = typeof key === 'string' ? key : key.keyId;
    if (!this.keys.delete(id)) throw new KeyNotFoundError(`soft key ${id}`);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.keys.clear();
  }

  private check(): void {
    if (this.closed) throw new ClosedError('the soft backend');
  }
}
