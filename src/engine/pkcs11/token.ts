// One logged-in PKCS#11 token: module, slot, login, the session pool, and recovery.
// Every token operation goes through run(): it borrows a session, and when the session, the
// login, the token or the module was lost underneath us (CKR_SESSION_HANDLE_INVALID,
// CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_CRYPTOKI_NOT_INITIALIZED)
// it re-establishes what was lost and retries the operation once, else fails with a clear error.
import { ck, ckrName, ckrOf, findToken, loadModule } from './module.js';
import type { FoundToken, LoadedModule, Pkcs11Api, TokenSelector } from './module.js';
import { SessionPool } from './session-pool.js';
import type { PoolStats, Session, SessionSource } from './session-pool.js';
import { AbortedError, BadCredentialsError, ClosedError, KeyNotFoundError, Pkcs11EngineError, TokenOperationError } from './errors.js';
import { EngineError } from '../errors.js';

/** How HSMPROXY_PIN goes to C_Login: whole (`user:password` for CloudHSM), or only what follows the first ':'. */
export type PinFormat = 'as-is' | 'password';

/** Options to open a token. */
export interface TokenOptions {
  /** Path of the PKCS#11 module (.so). */
  module: string;
  /** Which token: a label, or a selector by label/serial/slot id. */
  token: string | TokenSelector;
  /** The crypto user's PIN; defaults to $HSMPROXY_PIN. */
  pin?: string;
  pinFormat?: PinFormat;
  /** Sessions kept open, i.e. token operations in flight at once (default 8). */
  poolSize?: number;
  /** Observer for recoveries (metrics/logging subscribe here; this module never logs). */
  onRecovery?: (event: RecoveryEvent) => void;
}

/** Emitted each time a lost session, login, token or module is re-established. */
export interface RecoveryEvent { kind: LossKind; ckr: string; operation: string }

type LossKind = 'session' | 'login' | 'token' | 'module' | 'object';

const LOSS = new Map<number, LossKind>([
  [ck.CKR_SESSION_HANDLE_INVALID, 'session'],
  [ck.CKR_SESSION_CLOSED, 'session'],
  [ck.CKR_USER_NOT_LOGGED_IN, 'login'],
  [ck.CKR_DEVICE_REMOVED, 'token'],
  [ck.CKR_TOKEN_NOT_PRESENT, 'token'],
  [ck.CKR_TOKEN_NOT_RECOGNIZED, 'token'],
  [ck.CKR_SLOT_ID_INVALID, 'token'],
  [ck.CKR_DEVICE_ERROR, 'token'],
  [ck.CKR_CRYPTOKI_NOT_INITIALIZED, 'module'],
  [ck.CKR_KEY_HANDLE_INVALID, 'object'],
  [ck.CKR_OBJECT_HANDLE_INVALID, 'object'],
]);

// Session states (PKCS#11 v2.40 §5.6); pkcs11js does not export the CKS_* constants.
const CKS_RO_USER_FUNCTIONS = 1;
const CKS_RW_USER_FUNCTIONS = 3;

/** Default number of sessions (and so of operations in flight) per token. */
export const DEFAULT_POOL_SIZE = 8;

/** The PIN to log in with, from the option or $HSMPROXY_PIN, shaped per `format`. */
export function resolvePin(pin: string | undefined, format: PinFormat = 'as-is'): string {
  const raw = pin ?? process.env.HSMPROXY_PIN;
  if (raw === undefined || raw === '') throw new BadCredentialsError('no PIN given: set HSMPROXY_PIN to the token PIN (user:password for CloudHSM)');
  if (format === 'password') {
    const i = raw.indexOf(':');
    return i >= 0 ? raw.slice(i + 1) : raw;
  }
  return raw;
}

/** A logged-in token with a pool of sessions; the unit the backend's keys and signers use. */
export class Pkcs11Token implements SessionSource {
  epoch = 0;
  /** Mechanisms the token offers (CKM_*), read once at open. */
  readonly mechanisms: ReadonlySet<number>;
  private slotFound: FoundToken | undefined;
  private needLogin = true;
  private fatal: Error | undefined;
  private closed = false;
  private readonly owned = new Map<string, Session>();
  private readonly pool: SessionPool;
  /** Object handles resolved in the current epoch (handles do not survive re-initialisation). */
  readonly handles = new Map<string, Buffer>();

  private constructor(
    private readonly mod: LoadedModule, private readonly selector: TokenSelector, private readonly pin: string,
    poolSize: number, private readonly onRecovery?: (e: RecoveryEvent) => void,
  ) {
    this.slotFound = findToken(mod.api, selector);
    this.mechanisms = new Set(mod.api.C_GetMechanismList(this.slotFound.slot));
    this.pool = new SessionPool(this, poolSize);
  }

  /** Loads the module, finds the token and logs in; errors name the module, token or PIN problem. */
  static async open(opts: TokenOptions): Promise<Pkcs11Token> {
    const pin = resolvePin(opts.pin, opts.pinFormat);
    const selector = typeof opts.token === 'string' ? { label: opts.token } : opts.token;
    const poolSize = opts.poolSize ?? DEFAULT_POOL_SIZE;
    if (!Number.isInteger(poolSize) || poolSize < 1) throw new Pkcs11EngineError(`poolSize must be a positive integer, got ${poolSize}`, 'ENGINE_ERR_CONFIG');
    const mod = loadModule(opts.module);
    let token: Pkcs11Token | undefined;
    try {
      token = new Pkcs11Token(mod, selector, pin, poolSize, opts.onRecovery);
      // Log in now so a wrong PIN fails at startup, not on the first handshake; then open the
      // rest of the pool (best effort: a token may cap sessions), since C_OpenSession is
      // synchronous and a network HSM would otherwise stall the first burst of handshakes.
      const held = [await token.pool.acquire()];
      try {
        while (held.length < poolSize) held.push(await token.pool.acquire());
      } catch {
        // fewer sessions than asked for: the pool retries opening them on demand
      } finally {
        for (const s of held) token.pool.release(s);
      }
      return token;
    } catch (err) {
      if (token) await token.close();
      else mod.release();
      throw err;
    }
  }

  /** The binding, for the key and signing layers. */
  get api(): Pkcs11Api { return this.mod.api; }
  /** The module path this token was opened from. */
  get modulePath(): string { return this.mod.path; }
  /** The token's identity (label, serial, slot) as last found. */
  get info(): FoundToken { return this.slot(); }

  /** Runs `fn` on a session of its own; re-establishes a lost session/login/token once and retries. */
  run<T>(operation: string, fn: (session: Buffer) => T | Promise<T>, signal?: AbortSignal): Promise<T> {
    const work = this.runWithRetry(operation, fn, signal);
    if (!signal) return work;
    // The token cannot cancel a C_Sign in progress: the caller is released at once, the session when it ends.
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(new AbortedError());
      signal.addEventListener('abort', onAbort, { once: true });
      work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  /** Session pool counts, for gauges and tests. */
  stats(): PoolStats { return this.pool.stats(); }

  /** Waits for operations in flight, closes every session and releases the module. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.close();
    this.mod.release();
  }

  private async runWithRetry<T>(
    operation: string, fn: (session: Buffer) => T | Promise<T>, signal?: AbortSignal,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.fatal) throw this.fatal;
      if (this.closed) throw new ClosedError('the PKCS#11 backend');
      let s: Session;
      try {
        s = await this.pool.acquire(signal);
      } catch (err) {
        const kind = lossKind(err);
        if (kind && attempt === 0) { this.tryRecover(kind, this.epoch, undefined, operation, err); continue; }
        throw this.describe(operation, err);
      }
      let broken = false;
      try {
        if (signal?.aborted) throw new AbortedError();
        return await fn(s.handle);
      } catch (err) {
        const code = ckrOf(err);
        const kind = lossKind(err);
        broken = code === ck.CKR_OPERATION_ACTIVE || (kind !== undefined && kind !== 'object' && kind !== 'login');
        if (kind && attempt === 0) {
          this.tryRecover(kind, s.epoch, s, operation, err);
          continue;
        }
        throw this.describe(operation, err);
      } finally {
        this.pool.release(s, broken);
      }
    }
  }

  private tryRecover(kind: LossKind, epoch: number, s: Session | undefined, operation: string, err: unknown): void {
    try {
      this.recover(kind, epoch, s, operation, err);
    } catch (recoveryErr) {
      throw this.describe(operation, recoveryErr);
    }
  }

  // Re-establishes what was lost. Synchronous, so concurrent failures of one epoch recover once.
  private recover(kind: LossKind, epoch: number, s: Session | undefined, operation: string, err: unknown): void {
    const ckr = ckrName(ckrOf(err) ?? 0);
    if (kind === 'object') {
      this.handles.clear();
      // Private objects vanish (invalid handle, empty search) when the login is gone: log in again.
      if (s && s.epoch === this.epoch && !this.loggedIn(s.handle)) {
        this.login(s.handle);
        this.onRecovery?.({ kind: 'login', ckr, operation });
      }
      return;
    }
    if (kind === 'login') {
      this.needLogin = true;
      if (s && s.epoch === this.epoch) this.login(s.handle);
      this.onRecovery?.({ kind, ckr, operation });
      return;
    }
    if (epoch !== this.epoch) return; // another operation already recovered this loss
    this.epoch++;
    this.needLogin = true;
    this.handles.clear();
    if (kind === 'module') {
      try { this.mod.reinitialize(); } catch { /* the next open reports the failure */ }
    }
    if (kind === 'module' || kind === 'token') {
      // Old handles are meaningless now and may be reused by new sessions: never close them.
      for (const old of this.owned.values()) old.dead = true;
      this.owned.clear();
      this.slotFound = undefined;
    }
    this.pool.retireIdle();
    this.onRecovery?.({ kind, ckr, operation });
  }

  private slot(): FoundToken {
    this.slotFound ??= findToken(this.mod.api, this.selector);
    return this.slotFound;
  }

  /** SessionSource: opens a read/write session, logging in first if this epoch has not. */
  open(): Session {
    const api = this.mod.api;
    const handle = api.C_OpenSession(this.slot().slot, ck.CKF_SERIAL_SESSION | ck.CKF_RW_SESSION);
    const s: Session = { handle, epoch: this.epoch, dead: false };
    const key = handle.toString('hex');
    // The module reused the handle of a session we still hold: that one is gone.
    const previous = this.owned.get(key);
    if (previous) previous.dead = true;
    this.owned.set(key, s);
    if (this.needLogin) {
      try {
        this.login(handle);
      } catch (err) {
        this.retire(s);
        throw err;
      }
    }
    return s;
  }

  /** SessionSource: closes a session the pool no longer wants (unless its handle is dead). */
  retire(s: Session): void {
    const key = s.handle.toString('hex');
    if (this.owned.get(key) === s) this.owned.delete(key);
    if (s.dead) return;
    try { this.mod.api.C_CloseSession(s.handle); } catch { /* already closed underneath us */ }
  }

  /** Whether the session sees private objects (state CKS_*_USER_FUNCTIONS). */
  loggedIn(session: Buffer): boolean {
    const state = this.mod.api.C_GetSessionInfo(session).state;
    return state === CKS_RW_USER_FUNCTIONS || state === CKS_RO_USER_FUNCTIONS;
  }

  private login(handle: Buffer): void {
    try {
      this.mod.api.C_Login(handle, ck.CKU_USER, this.pin);
    } catch (err) {
      const code = ckrOf(err);
      if (code !== ck.CKR_USER_ALREADY_LOGGED_IN) {
        const bad = loginError(code, this.slotFound?.label ?? this.selector.label ?? '');
        // A wrong PIN will not become right: stop before the token locks the user out.
        if (bad instanceof BadCredentialsError) this.fatal = bad;
        throw bad ?? err;
      }
    }
    this.needLogin = false;
  }

  private describe(operation: string, err: unknown): Error {
    if (err instanceof EngineError) return err;
    const code = ckrOf(err);
    if (code === ck.CKR_KEY_HANDLE_INVALID || code === ck.CKR_OBJECT_HANDLE_INVALID) return new KeyNotFoundError('the private key (its handle is no longer valid)');
    if (code !== undefined) return new TokenOperationError(operation, ckrName(code));
    return err instanceof Error ? err : new Error(String(err));
  }
}

function lossKind(err: unknown): LossKind | undefined {
  const code = ckrOf(err);
  return code === undefined ? undefined : LOSS.get(code);
}

function loginError(code: number | undefined, label: string): Error | undefined {
  const on = `token "${label}"`;
  switch (code) {
    case ck.CKR_PIN_INCORRECT: return new BadCredentialsError(`wrong PIN for ${on} (CKR_PIN_INCORRECT); check HSMPROXY_PIN`);
    case ck.CKR_PIN_LOCKED: return new BadCredentialsError(`the user PIN of ${on} is locked (CKR_PIN_LOCKED); the security officer must reset it`);
    case ck.CKR_PIN_LEN_RANGE: return new BadCredentialsError(`the PIN has the wrong length for ${on} (CKR_PIN_LEN_RANGE); check HSMPROXY_PIN`);
    case ck.CKR_PIN_EXPIRED: return new BadCredentialsError(`the PIN of ${on} has expired (CKR_PIN_EXPIRED); change it with the token's tools`);
    case ck.CKR_USER_PIN_NOT_INITIALIZED: return new BadCredentialsError(`${on} has no user PIN yet (CKR_USER_PIN_NOT_INITIALIZED); initialise it first`);
    case undefined: return undefined;
    default: return new TokenOperationError(`login to ${on}`, ckrName(code));
  }
}
