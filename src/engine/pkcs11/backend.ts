// engine/pkcs11/: the `pkcs11` backend. Keys live on any PKCS#11 token (SoftHSMv2, CloudHSM, Luna,
// YubiHSM…); this folder loads the module, logs in, keeps a pool of sessions, recovers lost
// sessions/logins, manages key pairs, signs, and names keys with RFC 7512 `pkcs11:` URIs.
// May import node built-ins, the pkcs11js binding, and engine/ siblings (errors, algorithm,
// keyref, backend, credentials); nothing above engine/.
//
// Binding: pkcs11js, not graphene-pk11. graphene is a convenience layer on top of pkcs11js whose
// object API is synchronous; we need exactly pkcs11js's asynchronous C_SignAsync and
// C_GenerateKeyPairAsync (run on the libuv thread pool, so the event loop never waits for the
// token) plus raw access to CKR codes for recovery, with one fewer layer to audit.
//
// Threads: every in-flight signature occupies one libuv worker. The pool defaults to 4
// (UV_THREADPOOL_SIZE), shared with fs, dns.lookup and crypto; it is read once, when the pool
// starts, which for an ESM entry happens before the entry's first line runs. The hsmproxy
// executable (cli/entry.cjs) sets it; embedders set threadPoolSizeFor(poolSize) in the environment.
import { createHash, type KeyObject } from 'node:crypto';
import { resolve as resolvePath } from 'node:path';
import type { KeyAlgorithm, Mechanism } from '../algorithm.js';
import { mechanismAlgorithm } from '../algorithm.js';
import type { Backend, GenerateSpec, KeyHandle, KeyInfo, SignOptions } from '../backend.js';
import { loadCredentials } from '../credentials.js';
import { KeyMismatchError, KeyNotFoundError, UnsupportedError } from '../errors.js';
import type { KeyRef, Pkcs11KeyRef } from '../keyref.js';
import { Pkcs11Token } from './token.js';
import type { PinFormat, RecoveryEvent } from './token.js';
import type { TokenSelector } from './module.js';
import type { PoolStats } from './session-pool.js';
import { deleteKey, findKey, generateKey, importKey, listKeys, signatureUnitBytes } from './keys.js';
import type { KeySelector, Pkcs11KeyInfo, Pkcs11KeySpec } from './keys.js';
import { Pkcs11Signer, signOnToken } from './signer.js';
import { planSignature } from './mechanisms.js';
import { formatPkcs11Uri, parsePkcs11Uri } from './uri.js';
import { OtherTokenError, Pkcs11UriError } from './errors.js';
import { allowedModulePath, type AllowHint } from './module-allowlist.js';

/** Options of openPkcs11Backend. */
export interface Pkcs11BackendOptions {
  /** Path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so. */
  module: string;
  /** Token label, or a selector by label/serial/slot id. */
  token: string | TokenSelector;
  /** PIN; defaults to HSMPROXY_PIN (or the HSMPROXY_CREDENTIALS file), as the engine reads them. */
  pin?: string;
  /** A 0600 file holding the PIN (or user:password), read when `pin` is not given; default $HSMPROXY_CREDENTIALS. */
  credentials?: string;
  /** 'as-is' (default; CloudHSM wants "user:password" whole) or 'password' (drop "user:"). */
  pinFormat?: PinFormat;
  /** Sessions, i.e. signatures in flight at once (default 8); see threadPoolSizeFor(). */
  poolSize?: number;
  /** Observer for session/login/token recoveries. */
  onRecovery?: (event: RecoveryEvent) => void;
  /**
   * Resolve references that name another token (default false: refused). For a token chosen
   * over what references record (serve's hsm.token); the key id and public key still must match.
   */
  acceptOtherTokens?: boolean;
}

/** A key on the token, with the URI a key reference records for it. */
export interface Pkcs11Key extends Pkcs11KeyInfo { uri: string }

/** An open PKCS#11 token: the engine's Backend, plus key management and direct signers. */
export class Pkcs11Backend implements Backend {
  readonly kind = 'pkcs11' as const;
  /** CKM_ECDSA returns raw r||s; the engine's signer converts to DER. */
  readonly ecdsaEncoding = 'raw' as const;
  private constructor(readonly token: Pkcs11Token, private readonly acceptOtherTokens = false) {}

  /** Opens the token (loads the module, logs in); see openPkcs11Backend. */
  static async open(opts: Pkcs11BackendOptions): Promise<Pkcs11Backend> {
    const pin = opts.pin ?? credentialsPin(await loadCredentials({ file: opts.credentials, allowPlainPin: true }));
    return new Pkcs11Backend(await Pkcs11Token.open({ ...opts, pin }), opts.acceptOtherTokens);
  }

  /** Module path the token was opened from (absolute). */
  get modulePath(): string { return this.token.modulePath; }

  // ---- key management (CLI, tests) --------------------------------------------------------

  /** Generates a key pair on the token. */
  async generateKey(spec: Pkcs11KeySpec, label: string, opts: { session?: boolean } = {}): Promise<Pkcs11Key> {
    return this.withUri(await generateKey(this.token, spec, label, opts));
  }

  /** Lists the private keys on the token. */
  async listKeys(): Promise<Pkcs11Key[]> {
    return (await listKeys(this.token)).map((k) => this.withUri(k));
  }

  /** Finds one key by CKA_ID, label, or a `pkcs11:` URI; throws KeyNotFoundError. */
  async findKey(sel: KeySelector | string): Promise<Pkcs11Key> {
    return this.withUri(await findKey(this.token, this.selector(sel)));
  }

  /** The key whose CKA_ID is `keyId` (hex), as the engine's handle; throws KeyNotFoundError. */
  async find(keyId: string): Promise<KeyHandle> {
    if (!/^([0-9a-fA-F]{2})+$/.test(keyId)) throw new KeyNotFoundError(`key id "${keyId}" (not a hex CKA_ID)`);
    return this.handle(await findKey(this.token, { id: Buffer.from(keyId, 'hex') }));
  }

  /** Deletes one key pair; returns what was deleted. */
  async deleteKey(sel: KeySelector | string): Promise<Pkcs11Key> {
    return this.withUri(await deleteKey(this.token, this.selector(sel)));
  }

  /** A TLS-style signer for the key (checked to exist now, so a stale reference fails at load time). */
  async signer(sel: KeySelector | string | Pkcs11KeyInfo): Promise<Pkcs11Signer> {
    const key = typeof sel !== 'string' && 'publicKey' in sel ? sel : await findKey(this.token, this.selector(sel));
    return new Pkcs11Signer(this.token, key);
  }

  /** The RFC 7512 URI naming `key` on this token (token label + serial, object id + label). */
  keyUri(key: { id: Buffer; label: string }): string {
    const t = this.token.info;
    return formatPkcs11Uri({ token: t.label, serial: t.serial, object: key.label, id: key.id, type: 'private' });
  }

  /** The key reference (for keyref.ts) that names `key` on this token through this module. */
  keyRef(key: Pkcs11KeyInfo): Pkcs11KeyRef {
    return { backend: 'pkcs11', module: this.modulePath, uri: this.keyUri(key), keyId: key.id.toString('hex'), label: key.label, publicKey: key.publicKey };
  }

  /** Session pool counts (size, open, idle, busy, waiting). */
  stats(): PoolStats { return this.token.stats(); }

  // ---- engine Backend ---------------------------------------------------------------------

  /** Finds the key a reference names on this token and checks its public key. */
  async resolve(ref: KeyRef): Promise<KeyHandle> {
    const file = ref.source ?? 'the key reference';
    if (ref.backend !== 'pkcs11') throw new UnsupportedError(`${file} names a ${ref.backend} key, not a key on a PKCS#11 token`);
    const uri = parsePkcs11Uri(ref.uri);
    const t = this.token.info;
    const otherToken = (uri.token !== undefined && uri.token !== t.label)
      || (uri.serial !== undefined && uri.serial !== t.serial);
    if (!this.acceptOtherTokens && otherToken) {
      throw new OtherTokenError(file, `"${uri.token ?? '?'}"${uri.serial ? ` (serial ${uri.serial})` : ''}`, `"${t.label}" (serial ${t.serial})`);
    }
    const id = Buffer.from(ref.keyId, 'hex');
    let key: Pkcs11KeyInfo;
    try {
      key = await findKey(this.token, { id });
    } catch (err) {
      if (err instanceof KeyNotFoundError) throw new KeyNotFoundError(`key "${ref.label}" (id ${ref.keyId}) named by ${file}`);
      throw err;
    }
    if (!key.publicKey.equals(ref.publicKey)) throw new KeyMismatchError(file);
    return this.handle(key, ref);
  }

  /** Signs `data` (the token hashes where it can); ECDSA comes back raw r||s. */
  sign(key: KeyHandle, mechanism: Mechanism, data: Buffer, opts: SignOptions = {}): Promise<Buffer> {
    return this.signPlanned(key, mechanism, data, false, opts.signal);
  }

  /** Signs a digest computed by the caller (CKM_ECDSA, CKM_RSA_PKCS_PSS, CKM_RSA_PKCS + DigestInfo). */
  signDigest(key: KeyHandle, mechanism: Mechanism, digest: Buffer, opts: SignOptions = {}): Promise<Buffer> {
    return this.signPlanned(key, mechanism, digest, true, opts.signal);
  }

  /** Generates a key pair on the token (a session object if `spec.session`). */
  async generateKeyPair(spec: GenerateSpec): Promise<KeyHandle> {
    const key = await generateKey(this.token, specOf(spec.algorithm), spec.label, { session: spec.session });
    return this.handle(key);
  }

  /** Imports a software private key; it becomes sensitive and non-extractable on the token. */
  async importKey(privateKey: KeyObject, label: string): Promise<KeyHandle> {
    return this.handle(await importKey(this.token, privateKey, label));
  }

  /** Lists the private keys on the token. */
  async list(): Promise<KeyInfo[]> {
    return (await listKeys(this.token)).map((k) => ({ keyId: k.id.toString('hex'), label: k.label, algorithm: algorithmOf(k), publicKey: k.publicKey }));
  }

  /** Deletes a key pair, by handle or hex CKA_ID. */
  async delete(key: KeyHandle | string): Promise<void> {
    const keyId = typeof key === 'string' ? key : key.keyId;
    if (!/^([0-9a-fA-F]{2})+$/.test(keyId)) throw new KeyNotFoundError(`key id "${keyId}" (not a hex CKA_ID)`);
    await deleteKey(this.token, { id: Buffer.from(keyId, 'hex') });
  }

  /** Waits for signatures in flight, closes the sessions and releases the module. */
  close(): Promise<void> { return this.token.close(); }

  private signPlanned(
    key: KeyHandle, mechanism: Mechanism, input: Buffer, prehashed: boolean, signal?: AbortSignal,
  ): Promise<Buffer> {
    try {
      const alg = mechanismAlgorithm(mechanism);
      if (!alg) throw new UnsupportedError(`mechanism ${mechanism} is not supported by the PKCS#11 backend`);
      const k = algorithmToKey(key.algorithm);
      const plan = planSignature(alg, k.keyType, signatureUnitBytes(k), input, this.token.mechanisms, prehashed);
      return signOnToken(this.token, Buffer.from(key.keyId, 'hex'), plan, signal);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  private handle(key: Pkcs11KeyInfo, ref?: KeyRef): KeyHandle {
    return { backend: 'pkcs11', keyId: key.id.toString('hex'), label: key.label, algorithm: algorithmOf(key), publicKey: key.publicKey, ref: ref ?? this.keyRef(key) };
  }

  private withUri(k: Pkcs11KeyInfo): Pkcs11Key {
    return { ...k, uri: this.keyUri(k) };
  }

  private selector(sel: KeySelector | string): KeySelector {
    if (typeof sel !== 'string') return sel;
    const uri = parsePkcs11Uri(sel);
    if (!uri.id && uri.object === undefined) throw new Pkcs11UriError('names no key (needs id= or object=)');
    const t = this.token.info;
    if ((uri.token !== undefined && uri.token !== t.label) || (uri.serial !== undefined && uri.serial !== t.serial)) {
      throw new Pkcs11UriError(`names token "${uri.token ?? ''}"${uri.serial ? ` (serial ${uri.serial})` : ''}, but the open token is "${t.label}" (serial ${t.serial})`);
    }
    // The id is the key's identity; the label only narrows when there is no id.
    return uri.id ? { id: uri.id } : { label: uri.object };
  }
}

function credentialsPin(c: { user?: string; password: string }): string {
  return c.user !== undefined ? `${c.user}:${c.password}` : c.password;
}

function algorithmOf(k: Pkcs11KeyInfo): KeyAlgorithm {
  return k.keyType === 'rsa' ? { type: 'rsa', bits: k.bits ?? 0 } : { type: 'ec', curve: k.curve ?? 'P-256' };
}

function algorithmToKey(a: KeyAlgorithm): { keyType: 'rsa' | 'ec'; bits?: number; curve?: 'P-256' | 'P-384' } {
  return a.type === 'rsa' ? { keyType: 'rsa', bits: a.bits } : { keyType: 'ec', curve: a.curve };
}

function specOf(a: KeyAlgorithm): Pkcs11KeySpec {
  if (a.type === 'ec') return { type: 'ec', curve: a.curve };
  if (a.bits === 2048 || a.bits === 3072 || a.bits === 4096) return { type: 'rsa', bits: a.bits };
  throw new UnsupportedError(`RSA-${a.bits} keys cannot be generated (use 2048, 3072 or 4096)`);
}

/** Opens a PKCS#11 token as an hsmproxy backend: `openPkcs11Backend({ module, token, pin, poolSize })`. */
export function openPkcs11Backend(opts: Pkcs11BackendOptions): Promise<Pkcs11Backend> {
  return Pkcs11Backend.open(opts);
}

/** Options of pkcs11Opener: module and token come from each reference unless overridden here. */
export interface Pkcs11OpenerOptions extends Omit<Pkcs11BackendOptions, 'module' | 'token' | 'acceptOtherTokens'> {
  /** Overrides the module path recorded in references (`--module`, serve's hsm.module). */
  module?: string;
  /**
   * Without `module`: the modules (absolute paths) a reference may name; any other is refused,
   * never loaded (default none). Serve's hsm.allowedModules, the CLI's HSMPROXY_PKCS11_MODULES.
   */
  allowedModules?: readonly string[];
  /** How the refusal tells the user to allow a module (default: this opener's option names). */
  allowHint?: AllowHint;
  /** Looks every key up on the token with this label instead of the one references record (serve's hsm.token). */
  token?: string;
}

/**
 * The engine's `openers.pkcs11`: opens the token a reference names (label and serial from its
 * URI) through `opts.module`, or else through the module it records if `opts.allowedModules` lists
 * it (a reference is not trusted to choose code to load); `opts.token` overrides the token. One backend per
 * (module, token), shared by every reference to it: the engine's own cache keys on what the
 * reference records, which an override makes differ for the same token.
 */
export function pkcs11Opener(opts: Pkcs11OpenerOptions = {}): Pkcs11Opener {
  const { module, token, allowedModules = [], allowHint, ...rest } = opts;
  const opened = new Map<string, Promise<Pkcs11Backend>>();
  const openAt = (modulePath: string, selector: TokenSelector): Promise<Pkcs11Backend> => {
    const where = JSON.stringify([resolvePath(modulePath), selector.label, selector.serial, selector.slot]);
    let p = opened.get(where);
    if (!p) {
      p = openPkcs11Backend({ ...rest, module: modulePath, token: selector, acceptOtherTokens: token !== undefined });
      opened.set(where, p);
      p.catch(() => opened.delete(where));
    }
    return p;
  };
  const forRef = async (ref: KeyRef): Promise<Backend> => {
    if (ref.backend !== 'pkcs11') throw new UnsupportedError(`${ref.source ?? 'the key reference'} names a ${ref.backend} key, not a PKCS#11 key`);
    const uri = parsePkcs11Uri(ref.uri);
    const selector: TokenSelector = token !== undefined ? { label: token } : {
      label: uri.token, serial: uri.serial, slot: uri.slotId,
    };
    const file = ref.source ?? 'the key reference';
    if (selector.label === undefined && selector.serial === undefined && selector.slot === undefined) throw new Pkcs11UriError(`${ref.uri} in ${file} names no token (needs token=, serial= or slot-id=)`);
    const modulePath = module ?? allowedModulePath(ref.module, file, allowedModules, allowHint);
    return openAt(modulePath, selector);
  };
  return Object.assign(forRef, {
    configuredToken: (): Promise<Pkcs11Backend> => {
      if (module === undefined || token === undefined) {
        return Promise.reject(new UnsupportedError('no token is configured: new keys need both module and token'));
      }
      return openAt(module, { label: token });
    },
  });
}

/** The engine's `openers.pkcs11`, and the configured token itself (where new keys are generated). */
export type Pkcs11Opener = ((ref: KeyRef) => Promise<Backend>) & {
  /** The backend of `module` + `token` (the same one references to that token resolve on). */
  configuredToken(): Promise<Pkcs11Backend>;
};

/**
 * The UV_THREADPOOL_SIZE a process should start with for `poolSize` concurrent signatures, leaving
 * headroom for fs, dns and crypto work. Only effective if set before the thread pool starts: in
 * the environment, or at the top of a CommonJS entry (an ESM entry is too late, measured).
 */
export function threadPoolSizeFor(poolSize: number): number {
  return Math.min(1024, Math.max(4, poolSize + 2));
}

/** SHA-256 of the key's SPKI, hex: how `key list` shows a key's identity next to its label. */
export function publicKeyFingerprint(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
}
