// The `sim` backend: keys in the simulated HSM cluster, reached through a client that speaks the
// HSM protocol (HsmConnection for one HSM, ClusterClient for the cluster). It codes to the small
// SimClient interface below, which both satisfy (directly or through a thin adapter), and tests
// satisfy with an in-process fake.
import type { KeyObject } from 'node:crypto';
import { keyAlgorithmOf, type KeyAlgorithm, type Mechanism } from './algorithm.js';
import type { Backend, GenerateSpec, KeyHandle, KeyInfo, SignOptions } from './backend.js';
import type { Credentials } from './credentials.js';
import {
  AbortedError, BackendError, BadCredentialsError, ClosedError, EngineError, KeyMismatchError, KeyNotFoundError,
  OtherClusterError, UnsupportedError,
} from './errors.js';
import { toPublicKey, type KeyRef, type SimKeyRef } from './keyref.js';

/** A private key as the HSM lists it. */
export interface SimKeyEntry {
  readonly id: string;
  readonly label: string;
}

/** What the sim backend needs from an HSM client. Errors carry a stable `code` (HSM_ERR_*). */
export interface SimClient {
  login(user: string, password: string): Promise<unknown>;
  /** Private keys this user can use, optionally filtered by id or label. */
  findKeys(filter: { id?: string; label?: string }): Promise<readonly SimKeyEntry[]>;
  /** The public key of a private key, as a KeyObject, SPKI DER or PEM. */
  exportPublicKey(keyId: string): Promise<KeyObject | Buffer | string>;
  /** Signs data (the HSM hashes) with a mechanism; ECDSA answers in DER unless the adapter says raw. */
  sign(keyId: string, mechanism: Mechanism, data: Buffer, opts?: { signal?: AbortSignal }): Promise<Buffer>;
  generateKeyPair(spec: { algorithm: KeyAlgorithm; label: string; session?: boolean }): Promise<{ id: string }>;
  /** Imports a private key given as PKCS#8 DER. */
  importKey(spec: { pkcs8: Buffer; label: string }): Promise<{ id: string }>;
  deleteKey(keyId: string): Promise<unknown>;
  close(): Promise<unknown>;
}

/** Options for SimBackend: the client, the cluster it talks to, and the crypto user's login. */
export interface SimBackendOptions {
  client: SimClient;
  /** SHA-256 fingerprint of the cluster certificate (the manifest's clusterId). */
  clusterId: string;
  credentials: Credentials;
  /** ECDSA encoding the client returns (default DER). */
  ecdsaEncoding?: 'der' | 'raw';
  /** Close the client when the backend closes (default true). */
  ownsClient?: boolean;
}

/** Normalises a fingerprint for comparison: lower case, no colons. */
export function normaliseClusterId(id: string): string {
  return id.toLowerCase().replace(/:/g, '');
}

/** Maps an HSM client error to an EngineError with a message that says what to do. */
export function mapSimError(err: unknown, what: string): EngineError {
  if (err instanceof EngineError) return err;
  const e = err as { code?: unknown; name?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (e?.name === 'AbortError' || /ABORT|CANCEL/.test(code)) return new AbortedError();
  if (/NOT_FOUND|NO_SUCH_KEY|UNKNOWN_KEY|KEY_MISSING/.test(code)) return new KeyNotFoundError(what);
  if (/LOGIN|CREDENTIAL|PASSWORD|AUTH|LOCKED|NOT_LOGGED_IN|NO_SUCH_USER/.test(code)) {
    return new BadCredentialsError(`the HSM refused the crypto-user login (${message}); check HSMPROXY_PIN or the credentials file`);
  }
  return new BackendError(message || `the HSM failed (${code || 'unknown error'})`, err);
}

/** Keys in the simulated cluster. */
export class SimBackend implements Backend {
  readonly kind = 'sim' as const;
  readonly ecdsaEncoding: 'der' | 'raw';
  readonly clusterId: string;
  private readonly client: SimClient;
  private readonly credentials: Credentials;
  private readonly ownsClient: boolean;
  private loggedIn?: Promise<void>;
  /** The login settled successfully: signatures skip awaiting it (one promise hop less per sign). */
  private loginDone = false;
  private closed = false;

  constructor(opts: SimBackendOptions) {
    this.client = opts.client;
    this.clusterId = opts.clusterId;
    this.credentials = opts.credentials;
    this.ecdsaEncoding = opts.ecdsaEncoding ?? 'der';
    this.ownsClient = opts.ownsClient ?? true;
  }

  /** Logs in once; a rejected login is remembered only until the next attempt. */
  private login(): Promise<void> {
    this.check();
    if (!this.loggedIn) {
      const { user, password } = this.credentials;
      if (!user) return Promise.reject(new BadCredentialsError('the simulated HSM needs HSMPROXY_PIN=user:password (a crypto user and its password)'));
      this.loggedIn = this.client.login(user, password).then(
        () => { this.loginDone = true; },
        (err: unknown) => {
          this.loggedIn = undefined;
          throw mapSimError(err, `login of ${user}`);
        },
      );
    }
    return this.loggedIn;
  }

  async resolve(ref: KeyRef): Promise<KeyHandle> {
    const file = ref.source ?? 'the key reference';
    if (ref.backend !== 'sim') throw new UnsupportedError(`${file} names a ${ref.backend} key, not a key in the simulated cluster`);
    if (normaliseClusterId(ref.clusterId) !== normaliseClusterId(this.clusterId)) {
      throw new OtherClusterError(file, ref.clusterId, this.clusterId);
    }
    await this.login();
    const what = `key ${ref.keyId} ("${ref.label}") named by ${file}`;
    const handle = await this.handleFor(ref.keyId, ref.label, what, ref);
    if (!handle.publicKey.equals(ref.publicKey)) throw new KeyMismatchError(`${file}`);
    return handle;
  }

  private async handleFor(keyId: string, label: string, what: string, ref?: SimKeyRef): Promise<KeyHandle> {
    let found: readonly SimKeyEntry[];
    let publicKey: KeyObject;
    try {
      found = await this.client.findKeys({ id: keyId });
      if (!found.some((k) => k.id === keyId)) throw new KeyNotFoundError(what);
      publicKey = toPublicKey(await this.client.exportPublicKey(keyId));
    } catch (err) {
      throw mapSimError(err, what);
    }
    const entry = found.find((k) => k.id === keyId)!;
    const algorithm = keyAlgorithmOf(publicKey);
    const theRef: SimKeyRef = ref ?? { backend: 'sim', clusterId: this.clusterId, keyId, label: entry.label || label, publicKey };
    return { backend: 'sim', keyId, label: entry.label || label, algorithm, publicKey, ref: theRef };
  }

  /** Finds a key by cluster-wide id or by label (which must then be unique). */
  async find(idOrLabel: string): Promise<KeyHandle> {
    await this.login();
    let byId: readonly SimKeyEntry[];
    let byLabel: readonly SimKeyEntry[] = [];
    try {
      byId = await this.client.findKeys({ id: idOrLabel });
      if (byId.length === 0) byLabel = await this.client.findKeys({ label: idOrLabel });
    } catch (err) {
      throw mapSimError(err, `key "${idOrLabel}"`);
    }
    const hit = byId[0] ?? byLabel[0];
    if (!hit) throw new KeyNotFoundError(`a private key with id or label "${idOrLabel}"`);
    if (byLabel.length > 1) throw new UnsupportedError(`${byLabel.length} keys are labelled "${idOrLabel}"; name one by its key id (see \`hsmproxy key list\`)`);
    return this.handleFor(hit.id, hit.label, `key ${hit.id}`);
  }

  async sign(key: KeyHandle, mechanism: Mechanism, data: Buffer, opts: SignOptions = {}): Promise<Buffer> {
    if (this.loginDone) this.check();
    else await this.login();
    if (opts.signal?.aborted) throw new AbortedError();
    try {
      return await this.client.sign(key.keyId, mechanism, data, opts.signal ? { signal: opts.signal } : {});
    } catch (err) {
      throw mapSimError(err, `key ${key.keyId} ("${key.label}")`);
    }
  }

  async generateKeyPair(spec: GenerateSpec): Promise<KeyHandle> {
    await this.login();
    let id: string;
    try {
      ({ id } = await this.client.generateKeyPair({
        algorithm: spec.algorithm, label: spec.label, session: spec.session ?? false,
      }));
    } catch (err) {
      throw mapSimError(err, `new key "${spec.label}"`);
    }
    return this.handleFor(id, spec.label, `new key ${id}`);
  }

  async importKey(privateKey: KeyObject, label: string): Promise<KeyHandle> {
    keyAlgorithmOf(privateKey);
    await this.login();
    let id: string;
    try {
      ({ id } = await this.client.importKey({ pkcs8: privateKey.export({ type: 'pkcs8', format: 'der' }), label }));
    } catch (err) {
      throw mapSimError(err, `imported key "${label}"`);
    }
    return this.handleFor(id, label, `imported key ${id}`);
  }

  async list(): Promise<KeyInfo[]> {
    await this.login();
    try {
      const keys = await this.client.findKeys({});
      const out: KeyInfo[] = [];
      for (const k of keys) {
        const publicKey = toPublicKey(await this.client.exportPublicKey(k.id));
        out.push({ keyId: k.id, label: k.label, algorithm: keyAlgorithmOf(publicKey), publicKey });
      }
      return out;
    } catch (err) {
      throw mapSimError(err, 'the key list');
    }
  }

  async delete(key: KeyHandle | string): Promise<void> {
    await this.login();
    const id = typeof key === 'string' ? key : key.keyId;
    try {
      await this.client.deleteKey(id);
    } catch (err) {
      throw mapSimError(err, `key ${id}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsClient) await this.client.close();
  }

  private check(): void {
    if (this.closed) throw new ClosedError('the sim backend');
  }
}
