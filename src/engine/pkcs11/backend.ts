// The PKCS#11 backend as the rest of hsmproxy sees it: open a token, manage its keys, hand out
// signers, and name keys with RFC 7512 URIs that key references carry.
import { Pkcs11Token } from './token.js';
import type { PinFormat, RecoveryEvent } from './token.js';
import type { TokenSelector } from './module.js';
import type { PoolStats } from './session-pool.js';
import { deleteKey, findKey, generateKey, listKeys } from './keys.js';
import type { KeySelector, Pkcs11KeyInfo, Pkcs11KeySpec } from './keys.js';
import { Pkcs11Signer } from './signer.js';
import { formatPkcs11Uri, parsePkcs11Uri } from './uri.js';
import type { Pkcs11Uri } from './uri.js';
import { Pkcs11UriError } from './errors.js';

/** Options of openPkcs11Backend. */
export interface Pkcs11BackendOptions {
  /** Path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so. */
  module: string;
  /** Token label, or a selector by label/serial/slot id. */
  token: string | TokenSelector;
  /** PIN; defaults to $HSMPROXY_PIN. */
  pin?: string;
  /** 'as-is' (default; CloudHSM wants "user:password" whole) or 'password' (drop "user:"). */
  pinFormat?: PinFormat;
  /**
   * Sessions, i.e. signatures in flight at once (default 8). Signing runs on the libuv thread
   * pool, so UV_THREADPOOL_SIZE (default 4) must be at least this large for the parallelism to
   * be real; see threadPoolSizeFor().
   */
  poolSize?: number;
  /** Observer for session/login/token recoveries. */
  onRecovery?: (event: RecoveryEvent) => void;
}

/** A key on the token, with the URI a key reference records for it. */
export interface Pkcs11Key extends Pkcs11KeyInfo { uri: string }

/** An open PKCS#11 token: key management and signers. Close it when done. */
export class Pkcs11Backend {
  readonly kind = 'pkcs11' as const;
  private constructor(readonly token: Pkcs11Token) {}

  /** Opens the token (loads the module, logs in); see openPkcs11Backend. */
  static async open(opts: Pkcs11BackendOptions): Promise<Pkcs11Backend> {
    return new Pkcs11Backend(await Pkcs11Token.open(opts));
  }

  /** Module path the token was opened from. */
  get modulePath(): string { return this.token.modulePath; }

  /** Generates a key pair on the token. */
  async generateKey(spec: Pkcs11KeySpec, label: string): Promise<Pkcs11Key> {
    return this.withUri(await generateKey(this.token, spec, label));
  }

  /** Lists the private keys on the token. */
  async listKeys(): Promise<Pkcs11Key[]> {
    return (await listKeys(this.token)).map((k) => this.withUri(k));
  }

  /** Finds one key by CKA_ID, label, or a `pkcs11:` URI; throws KeyNotFoundError. */
  async findKey(sel: KeySelector | string): Promise<Pkcs11Key> {
    return this.withUri(await findKey(this.token, this.selector(sel)));
  }

  /** Deletes one key pair; returns what was deleted. */
  async deleteKey(sel: KeySelector | string): Promise<Pkcs11Key> {
    return this.withUri(await deleteKey(this.token, this.selector(sel)));
  }

  /** A signer for the key (checked to exist now, so a stale reference fails at load time). */
  async signer(sel: KeySelector | string | Pkcs11KeyInfo): Promise<Pkcs11Signer> {
    const key = typeof sel !== 'string' && 'publicKey' in sel ? sel : await findKey(this.token, this.selector(sel));
    return new Pkcs11Signer(this.token, key);
  }

  /** The RFC 7512 URI naming `key` on this token (token label + serial, object id + label). */
  keyUri(key: { id: Buffer; label: string }): string {
    const t = this.token.info;
    return formatPkcs11Uri({ token: t.label, serial: t.serial, object: key.label, id: key.id, type: 'private' });
  }

  /** Session pool counts (size, open, idle, busy, waiting). */
  stats(): PoolStats { return this.token.stats(); }

  /** Waits for signatures in flight, closes the sessions and releases the module. */
  close(): Promise<void> { return this.token.close(); }

  private withUri(k: Pkcs11KeyInfo): Pkcs11Key {
    return { ...k, uri: this.keyUri(k) };
  }

  private selector(sel: KeySelector | string): KeySelector {
    if (typeof sel !== 'string') return sel;
    const uri: Pkcs11Uri = parsePkcs11Uri(sel);
    if (!uri.id && uri.object === undefined) throw new Pkcs11UriError('names no key (needs id= or object=)');
    const t = this.token.info;
    if ((uri.token !== undefined && uri.token !== t.label) || (uri.serial !== undefined && uri.serial !== t.serial)) {
      throw new Pkcs11UriError(`names token "${uri.token ?? ''}"${uri.serial ? ` (serial ${uri.serial})` : ''}, but the open token is "${t.label}" (serial ${t.serial})`);
    }
    // The id is the key's identity; the label only narrows when there is no id.
    return uri.id ? { id: uri.id } : { label: uri.object };
  }
}

/** Opens a PKCS#11 token as an hsmproxy backend: `openPkcs11Backend({ module, token, pin, poolSize })`. */
export function openPkcs11Backend(opts: Pkcs11BackendOptions): Promise<Pkcs11Backend> {
  return Pkcs11Backend.open(opts);
}

/**
 * The UV_THREADPOOL_SIZE a process should start with for `poolSize` concurrent signatures, leaving
 * headroom for fs, dns and crypto work. It only takes effect if set before the thread pool
 * starts: in the environment, or at the top of a CommonJS entry (an ESM entry is too late, the
 * loader has already started the pool).
 */
export function threadPoolSizeFor(poolSize: number): number {
  return Math.min(1024, Math.max(4, poolSize + 2));
}
