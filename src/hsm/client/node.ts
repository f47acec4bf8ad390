// HsmNode: one HSM of the cluster as the client sees it — a link that is re-opened with
// exponential backoff when it drops, periodic health checks (bounded, unref'd timers), an
// in-flight counter for balancing, and the in-rotation flag the cluster client sets once the
// HSM is known to be in sync with its peers.
import type { HsmInfo } from '../protocol/types.js';
import { ClientClosedError, NoHealthyHsmError } from './cluster-errors.js';
import { isBusyError, isTransportError, publishState, type HsmAddress, type HsmLink, type LinkFactory, type LoginCredentials } from './link.js';

/** Tuning of one node; defaults suit loopback HSMs. */
export interface HsmNodeOptions {
  /** Health check period (default 1,000 ms). */
  healthIntervalMs?: number;
  /** A health check slower than this marks the HSM down (default 2,000 ms). */
  healthTimeoutMs?: number;
  /** First reconnect delay, doubled per failure (default 50 ms). */
  reconnectMinMs?: number;
  /** Reconnect delay cap (default 2,000 ms). */
  reconnectMaxMs?: number;
}

/** Where a node is in its life: only 'up' nodes that are in sync serve requests. */
export type NodeStatus = 'connecting' | 'up' | 'down' | 'closed';

/** Hooks the cluster client gives each node. */
export interface HsmNodeHooks<C extends HsmLink> {
  /** Called after every (re)connect, before the node may serve: check sync, resync, then `setInRotation(true)`. */
  onConnected(node: HsmNode<C>): void;
  /** Called when the node leaves the 'up' state. */
  onDown?(node: HsmNode<C>, err: unknown): void;
}

/** One HSM with reconnect/backoff, health checks and in-flight accounting. */
export class HsmNode<C extends HsmLink> {
  status: NodeStatus = 'connecting';
  /** Requests currently sent to this HSM through `run`. */
  inFlight = 0;
  /** Requests served successfully since creation (for tests and status). */
  served = 0;
  /** Set by the cluster client once the HSM is in sync with its peers. */
  inRotation = false;
  /** The last health check's answer. */
  lastInfo?: HsmInfo;
  lastError?: unknown;
  private link?: C;
  private failures = 0;
  private reconnectTimer?: NodeJS.Timeout;
  private healthTimer?: NodeJS.Timeout;
  private connecting?: Promise<void>;
  private readonly opts: Required<HsmNodeOptions>;

  constructor(
    readonly address: HsmAddress,
    private readonly factory: LinkFactory<C>,
    private credentials: LoginCredentials,
    private readonly hooks: HsmNodeHooks<C>,
    opts: HsmNodeOptions = {},
  ) {
    this.opts = {
      healthIntervalMs: opts.healthIntervalMs ?? 1000,
      healthTimeoutMs: opts.healthTimeoutMs ?? 2000,
      reconnectMinMs: opts.reconnectMinMs ?? 50,
      reconnectMaxMs: opts.reconnectMaxMs ?? 2000,
    };
  }

  get id(): string {
    return this.address.id;
  }

  /** host:port, for messages and state events. */
  get addressText(): string {
    return `${this.address.host}:${this.address.port}`;
  }

  /** Whether the balancer may send requests here. */
  get available(): boolean {
    return this.status === 'up' && this.inRotation && this.link !== undefined;
  }

  /** Opens the link (first connect); resolves once connected or on the first failure (then retries in background). */
  start(): Promise<void> {
    if (this.status === 'closed') return Promise.reject(new ClientClosedError());
    this.connecting ??= this.connect().finally(() => { this.connecting = undefined; });
    return this.connecting;
  }

  /** Changes the login used for future (re)connects; a node that was refused tries again with it. */
  setCredentials(credentials: LoginCredentials): void {
    this.credentials = credentials;
    if (this.status === 'down' && !this.reconnectTimer && !this.connecting) void this.start();
  }

  private async connect(): Promise<void> {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.status = 'connecting';
    let link: C;
    try {
      link = await this.factory(this.address, this.credentials);
    } catch (err) {
      if (this.isClosed()) return;
      this.lastError = err;
      this.status = 'down';
      this.emitState();
      // Retrying a refused login would only lock the account: wait for new credentials instead.
      // A busy HSM (too many logins in progress) did not check the password: retry with backoff.
      if (isTransportError(err) || isBusyError(err)) this.scheduleReconnect();
      return;
    }
    if (this.isClosed()) {
      await link.close().catch(() => undefined);
      return;
    }
    this.link = link;
    this.failures = 0;
    this.status = 'up';
    this.inRotation = false;
    this.watchClose(link);
    this.scheduleHealthCheck();
    this.emitState();
    this.hooks.onConnected(this);
  }

  private watchClose(link: C): void {
    void link.closed.then(() => {
      if (this.link === link) this.markDown(new NoHealthyHsmError(`connection to ${this.id} closed`));
    });
  }

  /**
   * Logs in with other credentials. The HSM refuses a second login on a connection (a connection
   * logs in once), so a new link is opened (the factory logs it in) and replaces the current one,
   * which is closed; the node stays in rotation (the HSM's state did not change). If the login is
   * refused, the current link is kept and the error is thrown. Resolves undefined when the node
   * has no link (it logs in with the new credentials when it reconnects).
   */
  async relogin(credentials: LoginCredentials): Promise<C | undefined> {
    this.setCredentials(credentials);
    const old = this.link;
    if (!old || this.status !== 'up') return undefined;
    const link = await this.factory(this.address, credentials);
    if (this.link !== old || this.isClosed()) {
      await link.close().catch(() => undefined);
      return undefined;
    }
    this.link = link;
    this.watchClose(link);
    void old.close().catch(() => undefined);
    return link;
  }

  // A method, not an inline comparison: `status` changes across awaits, which narrowing ignores.
  private isClosed(): boolean {
    return this.status === 'closed';
  }

  private scheduleReconnect(): void {
    if (this.status === 'closed' || this.reconnectTimer) return;
    const delay = Math.min(this.opts.reconnectMaxMs, this.opts.reconnectMinMs * 2 ** this.failures);
    this.failures = Math.min(this.failures + 1, 20);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.start();
    }, delay);
    this.reconnectTimer.unref();
  }

  private scheduleHealthCheck(): void {
    clearTimeout(this.healthTimer);
    this.healthTimer = setTimeout(() => { void this.healthCheck(); }, this.opts.healthIntervalMs);
    this.healthTimer.unref();
  }

  /** Runs one health check now: info within the deadline, or the node goes down. */
  async healthCheck(): Promise<HsmInfo | undefined> {
    const link = this.link;
    if (!link || this.status !== 'up') return undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      const info = await Promise.race([
        link.info(),
        new Promise<never>((_, reject) => {
          // Kept referenced (bounded by healthTimeoutMs) so an awaited check cannot be cut short by exit.
          timer = setTimeout(() => reject(Object.assign(new Error(`health check of ${this.id} missed its ${this.opts.healthTimeoutMs} ms deadline`), { code: 'HSM_ERR_TIMEOUT' })), this.opts.healthTimeoutMs);
        }),
      ]);
      if (this.link !== link) return undefined;
      this.lastInfo = info;
      this.emitState();
      this.scheduleHealthCheck();
      return info;
    } catch (err) {
      if (this.link === link) this.markDown(err);
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Takes the node out of rotation, drops its link (in-flight requests fail over) and reconnects with backoff. */
  markDown(err: unknown): void {
    if (this.status === 'closed') return;
    const link = this.link;
    this.link = undefined;
    this.lastError = err;
    const wasUp = this.status === 'up';
    this.status = 'down';
    this.inRotation = false;
    clearTimeout(this.healthTimer);
    if (link) void link.close().catch(() => undefined);
    if (wasUp) {
      this.emitState();
      this.hooks.onDown?.(this, err);
    }
    this.scheduleReconnect();
  }

  /** Sets whether the balancer may use this node (after a sync check). */
  setInRotation(on: boolean): void {
    if (this.inRotation === on) return;
    this.inRotation = on && this.status === 'up';
    this.emitState();
  }

  /** The live link, for sync work that must bypass rotation; undefined when down. */
  get currentLink(): C | undefined {
    return this.link;
  }

  /** Runs `fn` on this node's link, counting it in flight. */
  async run<T>(fn: (link: C) => Promise<T>): Promise<T> {
    const link = this.link;
    if (!link) throw Object.assign(new Error(`HSM ${this.id} is not connected`), { code: 'HSM_ERR_CONNECTION' });
    this.inFlight++;
    try {
      const out = await fn(link);
      this.served++;
      return out;
    } finally {
      this.inFlight--;
    }
  }

  /** Publishes this node's `hsmproxy:hsm:state`. */
  emitState(): void {
    const occ = this.lastInfo?.occupancy;
    publishState({
      hsm: this.id,
      address: this.addressText,
      up: this.available,
      inFlight: this.inFlight,
      ...(occ ? { keysToken: occ.token, keysSession: occ.session, keysMax: occ.max } : {}),
      ...(this.lastInfo ? { utilisation: this.lastInfo.utilisation } : {}),
    });
  }

  /** Stops timers and closes the link for good. */
  async close(): Promise<void> {
    if (this.status === 'closed') return;
    this.status = 'closed';
    this.inRotation = false;
    clearTimeout(this.healthTimer);
    clearTimeout(this.reconnectTimer);
    const link = this.link;
    this.link = undefined;
    this.emitState();
    if (link) await link.close().catch(() => undefined);
  }
}
