// ClusterClient: the whole cluster behind the same methods as HsmConnection, so callers (engine
// `sim` backend, CLI) swap one for the other in one line. Reads are balanced and failed over;
// changes of token keys and users are applied on every HSM in rotation before they are
// acknowledged (keys generated in one HSM and copied as masked objects, users as the masked
// user table); session keys stay on the HSM that made them and their requests are routed there.
import { randomBytes } from 'node:crypto';
import { stat } from 'node:fs/promises';
import type {
  CryptoResult, DecryptRequest, EncryptRequest, HsmInfo, ImportPrivateKeyRequest, KeyAttributeChanges, KeyFilter,
  ImportPublicKeyRequest,
  KeyInfo, KeyPairInfo, KeyPairSpec, KeyTemplate, Role, SecretKeySpec, SignRequest, StateDigest, UnwrapRequest,
  UserInfo, VerifyRequest, WrapRequest,
} from '../protocol/types.js';
import { ClusterBase, type ClusterBaseOptions, type RunOptions } from './cluster-base.js';
import type { HsmConnection, LoginInfo, RequestOptions } from './connection.js';
import { Hedging, type HedgeCounts, type HedgeOptions } from './hedge.js';
import type { HsmAddress } from './link.js';

// The routing of every request that may be repeated elsewhere and is not pinned (one object for all).
const SAFE: RunOptions = Object.freeze({ safe: true });

/** Options of ClusterClient: the base options plus an optional membership source to watch. */
export interface ClusterClientOptions extends ClusterBaseOptions<HsmConnection> {
  /** Re-read membership when `file` changes (polled by mtime; add/remove HSMs without a restart). */
  membership?: { file: string; read: () => Promise<HsmAddress[]>; intervalMs?: number };
  /** Hedged signs (off unless given with `enabled` not false); see hedge.ts. */
  hedge?: HedgeOptions;
}

/** Hedge counters per HSM that was late, totals, and each HSM's current hedge delay (ms). */
export interface HedgeStats {
  maxShare: number;
  minDelayMs: number;
  perHsm: Map<string, HedgeCounts>;
  totals: HedgeCounts & { requests: number };
  delays: Map<string, number>;
}

/** The cluster as one HSM: balancing, failover, replication. */
export class ClusterClient extends ClusterBase<HsmConnection> {
  private watchTimer?: NodeJS.Timeout;
  private lastMtime = 0;
  private hedging?: Hedging;

  constructor(private readonly copts: ClusterClientOptions) {
    super(copts);
    this.setHedging(copts.hedge);
  }

  /**
   * Turns hedged signs on (with these options) or off (undefined or `enabled: false`); counters
   * restart. While on, the balancer also keeps new requests off an HSM with a late one.
   */
  setHedging(opts: HedgeOptions | undefined): void {
    const h = opts && opts.enabled !== false ? new Hedging(opts) : undefined;
    this.hedging = h;
    // New signs avoid an HSM with a late request until it answers (what a hedge did for that one).
    this.isLate = h ? (hsm) => h.isLate(hsm) : undefined;
  }

  /** Hedge counters per HSM that was late, and totals (undefined when hedging is off). */
  hedgeStats(): HedgeStats | undefined {
    const h = this.hedging;
    if (!h) return undefined;
    const delays = new Map([...this.nodes.keys()].map((id) => [id, h.delayFor(id)]));
    return { maxShare: h.maxShare, minDelayMs: h.minDelayMs, perHsm: h.stats(), totals: h.totals(), delays };
  }

  /** Connects every HSM and returns once the in-sync ones are in rotation. */
  static async connect(opts: ClusterClientOptions): Promise<ClusterClient> {
    const c = new ClusterClient(opts);
    await c.start();
    c.watchMembership();
    return c;
  }

  private watchMembership(): void {
    const m = this.copts.membership;
    if (!m) return;
    const tick = async (): Promise<void> => {
      try {
        const st = await stat(m.file);
        if (st.mtimeMs !== this.lastMtime) {
          const first = this.lastMtime === 0;
          this.lastMtime = st.mtimeMs;
          if (!first) await this.setMembers(await m.read());
        }
      } catch {
        // A manifest being rewritten (or briefly missing) is read on the next tick.
      }
      this.watchTimer = setTimeout(() => void tick(), m.intervalMs ?? 500);
      this.watchTimer.unref();
    };
    void tick();
  }

  /** Applies a membership change: new HSMs join (after a sync check), missing ones leave. */
  async setMembers(members: HsmAddress[]): Promise<void> {
    const want = new Map(members.map((m) => [m.id, m]));
    for (const [id, node] of this.nodes) {
      const m = want.get(id);
      if (!m || m.host !== node.address.host || m.port !== node.address.port) {
        await this.removeNode(id);
        this.hedging?.forget(id);
      }
    }
    await Promise.all(members.filter((m) => !this.nodes.has(m.id)).map(async (m) => {
      await this.addNode(m);
    }));
  }

  /** The HSMs the client currently knows. */
  members(): HsmAddress[] {
    return [...this.nodes.values()].map((n) => n.address);
  }

  /** The user the client is logged in as (from any live connection), as HsmConnection reports it. */
  get user(): LoginInfo | undefined {
    for (const n of this.nodes.values()) {
      const u = n.currentLink?.user;
      if (u) return u;
    }
    return undefined;
  }

  private pinFor(keyId: string): string | undefined {
    return this.sessionKeys.get(keyId);
  }

  private reads<T>(op: string, keyId: string | undefined, fn: (c: HsmConnection) => Promise<T>): Promise<T> {
    const pin = keyId === undefined ? undefined : this.pinFor(keyId);
    return this.execute(op, pin ? { safe: true, pin } : SAFE, fn);
  }

  // ---- session and users ----

  /**
   * Logs in on every HSM (and for every later reconnect). The links were logged in with the
   * client's credentials when they connected, and an HSM refuses a second login on a connection:
   * with the same credentials the existing logins stand; with others, each HSM gets a new link
   * logged in as the new user (HsmNode.relogin), replacing the old one.
   */
  async login(user: string, password: string, opts?: RequestOptions): Promise<LoginInfo> {
    const same = this.credentials.user === user && this.credentials.password === password;
    this.credentials = { user, password };
    const live = [...this.nodes.values()].filter((n) => n.currentLink);
    if (same) {
      for (const n of this.nodes.values()) n.setCredentials(this.credentials);
      const info = live.map((n) => n.currentLink?.user).find((u) => u !== undefined && u.user === user);
      if (info) return info;
    }
    const links = await Promise.all([...this.nodes.values()].map((n) => n.relogin(this.credentials)));
    const info = links.map((l) => l?.user).find((u) => u !== undefined);
    if (info) return info;
    // No HSM connected: wait for one to (re)connect, which logs in with the new credentials.
    return this.execute('login', { safe: true }, async (c) => c.user ?? c.login(user, password, opts));
  }

  /** Changes the logged-in user's password on every HSM (a CO/AU's as one copied user table, so hashes match). */
  async changePassword(newPassword: string, opts?: RequestOptions): Promise<LoginInfo> {
    const role = [...this.nodes.values()].map((n) => n.currentLink?.user?.role).find((r) => r !== undefined);
    let out: LoginInfo;
    if (role === 'CO' || role === 'AU') {
      out = await this.userChange('changePassword', (c) => c.changePassword(newPassword, opts));
    } else {
      // A CU cannot export the user table: the change is applied on every HSM in rotation, with
      // one salt nonce so every HSM stores the same hash and the state digests keep agreeing. A
      // target that fails leaves rotation (resynced before it serves); if the origin fails, the
      // targets already changed are set back to the old password (not acknowledged).
      const nonce = randomBytes(16);
      const undoNonce = randomBytes(16);
      const old = this.credentials.password;
      out = await this.replicated('changePassword', (c) => c.changePassword(newPassword, opts, nonce),
        async (_o, _r, target) => { await target.changePassword(newPassword, opts, nonce); },
        undefined, async (target) => { await target.changePassword(old, opts, undoNonce); });
    }
    this.credentials = { user: this.credentials.user, password: newPassword };
    for (const n of this.nodes.values()) n.setCredentials(this.credentials);
    return out;
  }

  private userChange<T>(op: string, fn: (c: HsmConnection) => Promise<T>): Promise<T> {
    let masked: Buffer | undefined;
    return this.replicated(op, fn, async (origin, _r, target) => {
      masked ??= await origin.exportUsers();
      await target.importUsers(masked);
    });
  }

  /** CO: creates a user on every HSM. */
  createUser(name: string, role: Exclude<Role, 'PRECO'>, password: string, opts?: RequestOptions): Promise<UserInfo> {
    return this.userChange('createUser', (c) => c.createUser(name, role, password, opts));
  }
  /** CO: deletes a user on every HSM. */
  deleteUser(name: string, opts?: RequestOptions): Promise<void> {
    return this.userChange('deleteUser', (c) => c.deleteUser(name, opts));
  }
  /** CO: resets a user's password on every HSM. */
  resetPassword(name: string, newPassword: string, opts?: RequestOptions): Promise<void> {
    return this.userChange('resetPassword', (c) => c.resetPassword(name, newPassword, opts));
  }
  /** CO: unlocks a user on every HSM. */
  unlockUser(name: string, opts?: RequestOptions): Promise<void> {
    return this.userChange('unlockUser', (c) => c.unlockUser(name, opts));
  }
  /** CO: lists users. */
  listUsers(opts?: RequestOptions): Promise<UserInfo[]> {
    return this.reads('listUsers', undefined, (c) => c.listUsers(opts));
  }

  // ---- keys ----

  private async created<T>(
    op: string, token: boolean, ids: (r: T) => string[], fn: (c: HsmConnection) => Promise<T>,
  ): Promise<T> {
    if (!token) {
      let hsm = '';
      const r = await this.execute(op, { safe: false }, (c, node) => { hsm = node.id; return fn(c); });
      for (const id of ids(r)) this.sessionKeys.set(id, hsm);
      return r;
    }
    return this.replicated(op, fn, async (origin, r, target) => {
      for (const id of ids(r)) await target.importMasked(await origin.exportMasked(id));
    }, undefined, async (target, r) => {
      // Deleting a private key takes its public half too: a missing id is already gone.
      for (const id of ids(r)) await target.deleteKey(id).catch((err: unknown) => { if ((err as { code?: unknown }).code !== 'HSM_ERR_NO_SUCH_KEY') throw err; });
    });
  }

  /** CU: generates a key pair in one HSM and copies it (masked) to every other HSM in rotation. */
  generateKeyPair(spec: KeyPairSpec, template: KeyTemplate, opts?: RequestOptions): Promise<KeyPairInfo> {
    return this.created('generateKeyPair', template.token !== false, pairIds, (c) => c.generateKeyPair(spec, template, opts));
  }
  /** CU: generates a secret key in one HSM and copies it (masked) to the others. */
  generateKey(spec: SecretKeySpec, template: KeyTemplate, opts?: RequestOptions): Promise<KeyInfo> {
    return this.created('generateKey', template.token !== false, (k) => [k.keyId], (c) => c.generateKey(spec, template, opts));
  }
  /** CU: imports a private key in one HSM and copies it (masked) to the others. */
  importKey(req: ImportPrivateKeyRequest, opts?: RequestOptions): Promise<KeyPairInfo> {
    return this.created('importKey', req.template.token !== false, pairIds, (c) => c.importKey(req, opts));
  }
  /** CU: imports a public key in one HSM and copies it to the others. */
  importPublicKey(req: ImportPublicKeyRequest, opts?: RequestOptions): Promise<KeyInfo> {
    return this.created('importPublicKey', req.template.token !== false, (k) => [k.keyId], (c) => c.importPublicKey(req, opts));
  }
  /** Unwraps into a new key (replicated when it is a token key). */
  unwrap(req: UnwrapRequest, opts?: RequestOptions): Promise<KeyInfo> {
    // A private key comes with its public half: both go to every HSM.
    const ids = (k: KeyInfo): string[] => (k.pairKeyId ? [k.keyId, k.pairKeyId] : [k.keyId]);
    return this.created('unwrap', req.template.token !== false, ids, (c) => c.unwrap(req, opts));
  }
  /** Keys visible to the user (token keys are the same on every HSM). */
  findKeys(filter: KeyFilter = {}, opts?: RequestOptions): Promise<KeyInfo[]> {
    return this.reads('findKeys', undefined, (c) => c.findKeys(filter, opts));
  }
  /** One key's attributes. */
  getKey(keyId: string, opts?: RequestOptions): Promise<KeyInfo> {
    return this.reads('getKey', keyId, (c) => c.getKey(keyId, opts));
  }

  private keyChange<T>(op: string, keyId: string, fn: (c: HsmConnection) => Promise<T>): Promise<T> {
    const pin = this.pinFor(keyId);
    if (pin) return this.execute(op, { safe: false, pin }, (c) => fn(c));
    return this.replicated(op, fn, async (_o, _r, target) => { await fn(target); });
  }

  /** Owner: deletes a key on every HSM. */
  async deleteKey(keyId: string, opts?: RequestOptions): Promise<void> {
    await this.keyChange('deleteKey', keyId, (c) => c.deleteKey(keyId, opts));
    this.sessionKeys.delete(keyId);
  }
  /** Owner: shares a key on every HSM. */
  shareKey(keyId: string, user: string, opts?: RequestOptions): Promise<KeyInfo> {
    return this.keyChange('shareKey', keyId, (c) => c.shareKey(keyId, user, opts));
  }
  /** Owner: unshares a key on every HSM. */
  unshareKey(keyId: string, user: string, opts?: RequestOptions): Promise<KeyInfo> {
    return this.keyChange('unshareKey', keyId, (c) => c.unshareKey(keyId, user, opts));
  }
  /** Owner: changes attributes on every HSM. */
  setAttributes(keyId: string, changes: KeyAttributeChanges, opts?: RequestOptions): Promise<KeyInfo> {
    return this.keyChange('setAttributes', keyId, (c) => c.setAttributes(keyId, changes, opts));
  }
  /** Public key of a key pair half. */
  exportPublicKey(keyId: string, opts?: RequestOptions): Promise<{ der: Buffer; pem: string }> {
    return this.reads('exportPublicKey', keyId, (c) => c.exportPublicKey(keyId, opts));
  }

  // ---- crypto: safe to repeat, balanced and failed over ----

  /** Signs on the least-loaded HSM (hedged on a second one when it is late, if hedging is on). */
  sign(req: SignRequest, opts?: RequestOptions): Promise<Buffer> {
    return this.signing(req.keyId, opts, (c, o) => c.sign(req, o));
  }
  /** Signs, with the serving HSM's queue wait and service time. */
  signTimed(req: SignRequest, opts?: RequestOptions): Promise<CryptoResult<Buffer>> {
    return this.signing(req.keyId, opts, (c, o) => c.signTimed(req, o));
  }

  // A sign, hedged when hedging is on and the key is a token key (a session key lives on one HSM).
  private signing<T>(
    keyId: string, opts: RequestOptions | undefined, fn: (c: HsmConnection, o?: RequestOptions) => Promise<T>,
  ): Promise<T> {
    const h = this.hedging;
    if (!h || this.nodes.size < 2 || this.pinFor(keyId) !== undefined) return this.reads('sign', keyId, (c) => fn(c, opts));
    const timeoutMs = opts?.timeoutMs;
    return h.race({
      run: (avoid, onNode, abandoned, remainingMs) => this.execute('sign', { safe: true, onNode, abandoned, ...(avoid !== undefined ? { avoid } : {}) },
        // The request's own deadline bounds both attempts: each gets what is left of it.
        (c) => fn(c, timeoutMs === undefined ? opts : { ...opts, timeoutMs: remainingMs() })),
      hasTarget: (late, avoid) => this.hasHedgeTarget(late, avoid),
    }, timeoutMs);
  }
  /** Verifies a signature or MAC. */
  verify(req: VerifyRequest, opts?: RequestOptions): Promise<boolean> {
    return this.reads('verify', req.keyId, (c) => c.verify(req, opts));
  }
  /** HMAC with a secret key. */
  hmac(req: SignRequest, opts?: RequestOptions): Promise<Buffer> {
    return this.reads('hmac', req.keyId, (c) => c.hmac(req, opts));
  }
  /** Encrypts. */
  encrypt(req: EncryptRequest, opts?: RequestOptions): Promise<Buffer> {
    return this.reads('encrypt', req.keyId, (c) => c.encrypt(req, opts));
  }
  /** Decrypts. */
  decrypt(req: DecryptRequest, opts?: RequestOptions): Promise<Buffer> {
    return this.reads('decrypt', req.keyId, (c) => c.decrypt(req, opts));
  }
  /** Random bytes. */
  random(length: number, opts?: RequestOptions): Promise<Buffer> {
    return this.reads('random', undefined, (c) => c.random(length, opts));
  }
  /** Wraps an extractable key. */
  wrap(req: WrapRequest, opts?: RequestOptions): Promise<Buffer> {
    return this.reads('wrap', req.keyId, (c) => c.wrap(req, opts));
  }

  // ---- status and backup ----

  /** One HSM's info (any in rotation). */
  info(opts?: RequestOptions): Promise<HsmInfo> {
    return this.reads('info', undefined, (c) => c.info(opts));
  }
  /** State digest of one HSM in rotation. */
  stateDigest(opts?: RequestOptions): Promise<StateDigest> {
    return this.reads('stateDigest', undefined, (c) => c.stateDigest(opts));
  }
  /** Snapshot of one HSM in rotation (CO or AU), for backups and clones. */
  snapshot(opts?: RequestOptions): Promise<Buffer> {
    return this.reads('snapshot', undefined, (c) => c.snapshot(opts));
  }

  /** A snapshot and the state digest it matches, both from the same HSM in rotation (backups, clones). */
  snapshotFrom(opts?: RequestOptions): Promise<{ hsm: string; snapshot: Buffer; state: StateDigest }> {
    return this.execute('snapshot', { safe: true }, async (c, node) => {
      const snapshot = await c.snapshot(opts);
      return { hsm: node.id, snapshot, state: await c.stateDigest(opts) };
    });
  }

  /** Stops watching membership and closes every connection. */
  override async close(): Promise<void> {
    clearTimeout(this.watchTimer);
    await super.close();
  }
}

function pairIds(r: KeyPairInfo): string[] {
  return [r.privateKey.keyId, r.publicKey.keyId];
}
