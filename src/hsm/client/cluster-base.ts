// The cluster client's engine, independent of the wire: a set of HsmNodes; least-outstanding
// balancing (ties → spare capacity, then round robin); retries (busy → another HSM with
// exponential backoff; a failed HSM → out of rotation, and the request repeated elsewhere only
// if it is safe to repeat); replication of token keys and users to every HSM in rotation before
// acknowledging; and the sync gate an HSM passes before it (re)enters rotation.
import { EventEmitter } from 'node:events';
import { ClientClosedError, ClusterBusyError, NoHealthyHsmError, NotRepeatedError, ResyncError, SessionKeyLostError, UnprovenStateError } from './cluster-errors.js';
import { isBusyError, isTransportError, type HsmAddress, type HsmLink, type LinkFactory, type LoginCredentials } from './link.js';
import { HsmNode, type HsmNodeOptions } from './node.js';
import { currentState, type CurrentState, type StateReport } from './current.js';
import { inSync, merge, resync, type ResyncReport } from './sync.js';

/** Options of the cluster engine. */
export interface ClusterBaseOptions<C extends HsmLink> {
  members: HsmAddress[];
  factory: LinkFactory<C>;
  credentials: LoginCredentials;
  /** A CO or AU login used to resync returning HSMs (default: `credentials`, which then must be CO/AU). */
  syncCredentials?: LoginCredentials;
  node?: HsmNodeOptions;
  /** Busy answers retried (default 3, as CloudHSM's client). */
  busyRetries?: number;
  /** First busy backoff, doubled per retry (default 10 ms). */
  busyBackoffMs?: number;
  /** How long a request waits for some HSM to be in rotation before failing (default 3,000 ms). */
  waitForHsmMs?: number;
  /**
   * `start` fails with the first HSM's error when no HSM could be reached or logged in to
   * (CLI use; default false: keep trying).
   */
  requireOne?: boolean;
}

/** Per-HSM counters readable by callers (backpressure, balancing tests, status). */
export interface NodeStats {
  hsm: string;
  address: string;
  status: string;
  inRotation: boolean;
  inFlight: number;
  served: number;
}

/** What a request needs to know to be routed and retried. */
export interface RunOptions {
  /** Safe to repeat on another HSM after a failure (sign, verify, encrypt, decrypt, random, find...). */
  safe: boolean;
  /** Route to this HSM only (session keys live on one HSM). */
  pin?: string;
  /** Never route to these HSMs (a hedge goes elsewhere than the HSMs that are late). */
  avoid?: ReadonlySet<string>;
  /** Told the HSM each attempt is sent to (hedging arms its delay for that HSM). */
  onNode?: (hsm: string) => void;
  /** True once nobody waits for the answer (a hedge race decided): no more retries. */
  abandoned?: () => boolean;
}

/** Balancing, failover, replication and sync over HsmNodes of any link type. */
export class ClusterBase<C extends HsmLink> {
  protected readonly nodes = new Map<string, HsmNode<C>>();
  /** Session key id → the HSM holding it. */
  protected readonly sessionKeys = new Map<string, string>();
  private readonly events = new EventEmitter();
  private rr = 0;
  private closed = false;
  private settled = false;
  private readonly syncing = new Set<string>();
  private readonly admitAgain = new Set<string>();
  private readonly syncRetry = new Map<string, NodeJS.Timeout>();
  /** HSMs seen behind a peer (or that missed a replicated change) and not resynced since. */
  private readonly stale = new Set<string>();
  /** Why the reachable HSMs are not trusted, when they are not (error messages). */
  private unproven?: string;
  /**
   * Set while the HSMs in rotation entered without proof that they are current (their peers are
   * unreachable): they serve uses of existing keys, so one HSM down does not stop every
   * handshake, but changes are refused until a peer answers and proves which state is current.
   */
  private degraded?: string;
  /** Last resync per HSM (status, tests). */
  readonly resyncs = new Map<string, ResyncReport>();
  protected credentials: LoginCredentials;
  /** Set while hedging is on: whether an HSM has a request past its hedge delay (pick avoids it). */
  protected isLate?: (hsm: string) => boolean;

  constructor(protected readonly opts: ClusterBaseOptions<C>) {
    this.credentials = opts.credentials;
    this.events.setMaxListeners(0);
  }

  /** Connects every HSM, settles which ones are in sync, and resyncs the rest. */
  async start(): Promise<void> {
    await Promise.all(this.opts.members.map((m) => this.addNode(m)));
    this.settled = true;
    await this.settleInitial();
    const nodes = [...this.nodes.values()];
    if (this.opts.requireOne && !nodes.some((n) => n.available)) {
      // Reachable but not trusted (peers down, nothing proves it current): say so, not "unreachable".
      if (this.unproven && nodes.some((n) => n.status === 'up')) {
        await this.close();
        throw new NoHealthyHsmError(this.unproven);
      }
      // A refused login says more than "unreachable": report it first.
      const errors = nodes.map((n) => n.lastError).filter((e) => e !== undefined);
      const err = errors.find((e) => !isTransportError(e)) ?? errors[0];
      if (err) {
        await this.close();
        throw err;
      }
    }
  }

  /** Adds (and connects) an HSM; used at start and on membership changes. */
  protected async addNode(addr: HsmAddress): Promise<void> {
    if (this.nodes.has(addr.id)) return;
    const node = new HsmNode<C>(addr, this.opts.factory, this.credentials, {
      onConnected: (n) => { if (this.settled) void this.admit(n); },
    }, this.opts.node);
    this.nodes.set(addr.id, node);
    await node.start();
  }

  /** Removes an HSM from the client (membership change). */
  protected async removeNode(id: string): Promise<void> {
    const node = this.nodes.get(id);
    if (!node) return;
    this.nodes.delete(id);
    this.stale.delete(id);
    clearTimeout(this.syncRetry.get(id));
    await node.close();
  }

  // The first time: the connected HSMs that provably hold the current state (shared rule in
  // current.ts) enter rotation; the others are resynced from them. With nothing proven, nobody
  // serves yet: each HSM is checked again until its peers answer.
  private async settleInitial(): Promise<void> {
    const up = [...this.nodes.values()].filter((n) => n.status === 'up' && n.currentLink);
    if (up.length === 0) return;
    const cur = await this.current();
    if (!cur?.proven) {
      if (cur) this.enterDegraded(cur);
      for (const n of up) if (!cur?.ids.includes(n.id)) this.retryAdmitLater(n);
      return;
    }
    this.enterRotation(cur.ids);
    await Promise.all(up.filter((n) => !cur.ids.includes(n.id) && n.status === 'up').map((n) => this.admit(n)));
  }

  // Unproven HSMs serve reads; they and any HSM admitted later stay read-only until proven.
  private enterDegraded(cur: CurrentState): void {
    this.degraded = cur.reason ?? 'the HSMs serving cannot prove they hold the latest state';
    this.enterRotation(cur.ids);
  }

  // With a newcomer answering, decide again: a proven group ends read-only service, and HSMs
  // that served without proof but are not in it leave rotation to be resynced from it.
  private async reconsiderDegraded(): Promise<CurrentState | undefined> {
    const cur = await this.current();
    if (!cur) return undefined;
    if (!cur.proven) {
      this.enterDegraded(cur);
      return cur;
    }
    this.degraded = undefined;
    for (const n of this.nodes.values()) {
      if (n.inRotation && !cur.ids.includes(n.id)) {
        this.stale.add(n.id);
        n.setInRotation(false);
      }
    }
    this.enterRotation(cur.ids);
    // Resync the ones that left from the proven group now, not at the next health interval.
    for (const n of this.nodes.values()) if (n.status === 'up' && !n.inRotation && this.stale.has(n.id)) void this.admit(n);
    return cur;
  }

  // Reads every connected HSM's digest and applies the shared rule.
  private async current(): Promise<CurrentState | undefined> {
    const up = [...this.nodes.values()].filter((n) => n.status === 'up' && n.currentLink);
    const reports = await Promise.all(up.map(async (n): Promise<StateReport | undefined> => {
      try {
        const d = await n.currentLink!.stateDigest();
        return { id: n.id, digest: d.digest, version: d.version };
      } catch (err) {
        n.markDown(err);
        return undefined;
      }
    }));
    const cur = currentState(reports.filter((r) => r !== undefined), [...this.nodes.keys()], this.stale);
    this.unproven = cur && !cur.proven ? cur.reason : undefined;
    return cur;
  }

  private enterRotation(ids: string[]): void {
    for (const id of ids) this.nodes.get(id)?.setInRotation(true);
    this.events.emit('rotation');
  }

  /** The sync gate: an HSM that (re)connects serves only once its digest matches a peer in rotation. */
  protected async admit(node: HsmNode<C>): Promise<void> {
    if (this.closed) return;
    if (this.syncing.has(node.id)) {
      // A new link arrived while the old one is being checked: check again once that ends.
      this.admitAgain.add(node.id);
      return;
    }
    this.syncing.add(node.id);
    try {
      const link = node.currentLink;
      if (!link) return;
      let peer = this.degraded ? undefined : this.pick(new Set([node.id]));
      if (!peer) {
        // Nobody proven in rotation to compare with: only HSMs that provably hold the current
        // state may take changes; being the only one that answers proves nothing (it may be the
        // one that is behind), so such HSMs serve read-only (enterDegraded).
        const cur = await this.reconsiderDegraded();
        if (!cur) throw new ResyncError(node.id, 'no peer answered');
        if (cur.ids.includes(node.id)) return;
        if (!cur.proven) throw new ResyncError(node.id, cur.reason ?? 'no peer answered');
        peer = this.pick(new Set([node.id]));
        if (!peer) throw new ResyncError(node.id, 'its peers left rotation during the check');
      }
      const from = peer;
      const report = await this.withSyncLinks(peer, node, async (src, dst) => {
        if (await inSync(src, dst)) return undefined;
        // Behind its peer: never serves again until a resync has closed the difference.
        this.stale.add(node.id);
        let r = await resync(src, dst);
        if (!r.inSync) {
          // It holds what its peers lack (newer versions: a change that reached it alone, never
          // acknowledged). Versions never go back, so the HSMs in rotation take that first.
          await this.mergeIntoRotation(dst, node, from);
          r = await resync(src, dst);
        }
        this.resyncs.set(node.id, r);
        return r;
      });
      if (report && !report.inSync) throw new ResyncError(node.id, unclosed(report));
      this.stale.delete(node.id);
      if (node.currentLink === link) {
        node.setInRotation(true);
        this.events.emit('rotation');
        // A change acknowledged between the digest comparison and now was replicated without
        // this HSM (it was not yet in rotation): compare again, and resync if one slipped by.
        if (!(await this.stillInSync(node))) {
          this.stale.add(node.id);
          node.setInRotation(false);
          this.admitAgain.add(node.id);
        }
      }
    } catch (err) {
      node.lastError = err;
      if (isTransportError(err) && !(err instanceof ResyncError)) node.markDown(err);
      else this.retryAdmitLater(node);
    } finally {
      this.syncing.delete(node.id);
      if (this.admitAgain.delete(node.id) && node.status === 'up' && !node.inRotation) void this.admit(node);
    }
  }

  // Whether `node` (just admitted) has the digest of every peer in rotation: the origin of a
  // change that slipped by is one of them (another may still be receiving its copy).
  private async stillInSync(node: HsmNode<C>): Promise<boolean> {
    const peers = [...this.nodes.values()].filter((n) => n !== node && n.available);
    const [mine, ...theirs] = await Promise.all([node, ...peers].map((n) => n.run((l) => l.stateDigest())));
    return theirs.every((d) => d.digest === mine!.digest);
  }

  private retryAdmitLater(node: HsmNode<C>): void {
    clearTimeout(this.syncRetry.get(node.id));
    const t = setTimeout(() => { if (node.status === 'up' && !node.inRotation) void this.admit(node); }, this.opts.node?.healthIntervalMs ?? 1000);
    t.unref();
    this.syncRetry.set(node.id, t);
  }

  // Copies what `source` (the link to `node`, being admitted) holds newer to every other HSM in
  // rotation. One that fails leaves rotation and is resynced, as a failed replication target.
  private async mergeIntoRotation(source: HsmLink, node: HsmNode<C>, peer: HsmNode<C>): Promise<void> {
    const others = [...this.nodes.values()].filter((n) => n !== node && (n === peer || n.available));
    await Promise.all(others.map(async (n) => {
      try {
        await this.withSyncLink(n, (l) => merge(source, l));
      } catch (err) {
        if (n === peer) throw err;
        this.stale.add(n.id);
        if (isTransportError(err)) n.markDown(err);
        else {
          n.setInRotation(false);
          void this.admit(n);
        }
      }
    }));
  }

  // Runs sync work on one HSM with a CO/AU link: the sync login if configured, else the main link.
  private async withSyncLink<T>(node: HsmNode<C>, fn: (link: HsmLink) => Promise<T>): Promise<T> {
    const sync = this.opts.syncCredentials;
    if (!sync) return fn(node.currentLink!);
    const link = await this.opts.factory(node.address, sync);
    try {
      return await fn(link);
    } finally {
      await link.close().catch(() => undefined);
    }
  }

  // Runs sync work with CO/AU links: the sync login if configured, else the main links.
  private async withSyncLinks<T>(
    peer: HsmNode<C>, node: HsmNode<C>, fn: (src: HsmLink, dst: HsmLink) => Promise<T>,
  ): Promise<T> {
    const sync = this.opts.syncCredentials;
    if (!sync) return fn(peer.currentLink!, node.currentLink!);
    const [src, dst] = await Promise.all([
      this.opts.factory(peer.address, sync), this.opts.factory(node.address, sync),
    ]);
    try {
      return await fn(src, dst);
    } finally {
      await Promise.all([src.close().catch(() => undefined), dst.close().catch(() => undefined)]);
    }
  }

  /**
   * Whether some HSM not in `avoid` is in rotation and no busier (in flight) than `late`: a hedge
   * sent to an HSM as loaded as the late one would most likely be late too, and would spend budget
   * the late requests of a stalled HSM need.
   */
  protected hasHedgeTarget(late: string, avoid: ReadonlySet<string>): boolean {
    const max = this.nodes.get(late)?.inFlight ?? 0;
    for (const n of this.nodes.values()) if (!avoid.has(n.id) && n.available && n.inFlight <= max) return true;
    return false;
  }

  /**
   * The least-loaded HSM in rotation, excluding `exclude`; ties → spare capacity, then round robin.
   * HSMs `isLate` names (a request past its hedge delay on them: stalled now) are used only when
   * every other is excluded or late too.
   */
  protected pick(exclude?: Set<string>): HsmNode<C> | undefined {
    const late = this.isLate;
    return (late && this.pickFrom(exclude, late)) || this.pickFrom(exclude);
  }

  private pickFrom(exclude: Set<string> | undefined, skip?: (hsm: string) => boolean): HsmNode<C> | undefined {
    const usable = (n: HsmNode<C>): boolean => n.available && !exclude?.has(n.id) && !skip?.(n.id);
    // One pass finds the least in flight; a list of the tied is made only when there are several.
    let first: HsmNode<C> | undefined;
    let min = Infinity;
    let ties = 0;
    for (const n of this.nodes.values()) {
      if (!usable(n)) continue;
      if (n.inFlight < min) {
        min = n.inFlight;
        first = n;
        ties = 1;
      } else if (n.inFlight === min) ties++;
    }
    if (ties <= 1) return first;
    const best = [...this.nodes.values()].filter((n) => usable(n) && n.inFlight === min);
    const util = (n: HsmNode<C>): number => n.lastInfo?.utilisation ?? 0;
    const lowest = Math.min(...best.map(util));
    // Utilisation is a smoothed figure: only a clear difference (10 points) beats round robin.
    const spare = best.filter((n) => util(n) <= lowest + 0.1);
    return spare[this.rr++ % spare.length];
  }

  private waitForRotation(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (v: boolean): void => {
        clearTimeout(timer);
        this.events.off('rotation', onRotation);
        resolve(v);
      };
      const onRotation = (): void => done(true);
      // Not unref'd: a caller is awaiting this request, so the process must stay up (bounded by waitForHsmMs).
      const timer = setTimeout(() => done(false), ms);
      this.events.on('rotation', onRotation);
    });
  }

  /** Runs one request with balancing, busy backoff and failover. */
  async execute<T>(op: string, ro: RunOptions, fn: (link: C, node: HsmNode<C>) => Promise<T>): Promise<T> {
    // Made at the first retry: most requests succeed on the first HSM picked.
    let tried: Set<string> | undefined = ro.avoid === undefined ? undefined : new Set(ro.avoid);
    let busy = 0;
    let failovers = 0;
    const deadline = Date.now() + (this.opts.waitForHsmMs ?? 3000);
    for (;;) {
      if (this.closed) throw new ClientClosedError();
      let node: HsmNode<C> | undefined;
      if (ro.pin) {
        node = this.nodes.get(ro.pin);
        if (!node?.available) throw new SessionKeyLostError(op, ro.pin);
      } else {
        node = this.pick(tried) ?? (tried && ro.avoid === undefined ? this.pick() : undefined);
      }
      if (!node) {
        if (ro.abandoned?.()) throw new NoHealthyHsmError(this.describeNodes());
        const left = deadline - Date.now();
        if (left > 0 && (await this.waitForRotation(Math.min(left, 200)), true)) continue;
        throw new NoHealthyHsmError(this.describeNodes());
      }
      ro.onNode?.(node.id);
      try {
        return await node.run((link) => fn(link, node));
      } catch (err) {
        if (ro.abandoned?.()) {
          if (isTransportError(err) && !isBusyError(err)) node.markDown(err);
          throw err;
        }
        if (isBusyError(err)) {
          if (++busy > (this.opts.busyRetries ?? 3)) throw new ClusterBusyError(busy);
          (tried ??= new Set()).add(node.id);
          await sleep((this.opts.busyBackoffMs ?? 10) * 2 ** (busy - 1));
          continue;
        }
        if (!isTransportError(err)) throw err;
        node.markDown(err);
        if (!ro.safe || ro.pin) {
          if (ro.pin) throw new SessionKeyLostError(op, ro.pin);
          throw new NotRepeatedError(op, node.id, err);
        }
        (tried ??= new Set()).add(node.id);
        if (++failovers > this.nodes.size + 2) throw err;
      }
    }
  }

  /**
   * Applies a change on one HSM, then `replicate(originLink, originResult, targetLink)` on every
   * other HSM in rotation before returning. A target that fails is taken out of rotation: it
   * is resynced when it returns, so the change is never lost. If the origin fails before every
   * copy is made, the change is not acknowledged and `undo(targetLink, result)` takes it back
   * on the targets that already have it, so the HSMs in rotation keep agreeing.
   */
  async replicated<T>(
    op: string, apply: (link: C, node: HsmNode<C>) => Promise<T>,
    replicate: (origin: C, result: T, target: C) => Promise<void>,
    pin?: string, undo?: (target: C, result: T) => Promise<void>,
  ): Promise<T> {
    if (this.degraded) throw new UnprovenStateError(op, this.degraded);
    let origin: HsmNode<C> | undefined;
    const result = await this.execute(op, { safe: false, ...(pin ? { pin } : {}) }, (link, node) => {
      origin = node;
      return apply(link, node);
    });
    const from = origin!;
    const targets = [...this.nodes.values()].filter((n) => n !== from && n.available);
    let originFailure: unknown;
    const copied: Array<HsmNode<C>> = [];
    await Promise.all(targets.map(async (t) => {
      try {
        await from.run((o) => t.run((l) => replicate(o, result, l)));
        copied.push(t);
      } catch (err) {
        if (isTransportError(err)) {
          // Client errors name the HSM whose connection failed: the origin, or this target.
          if ((err as { hsmId?: unknown }).hsmId === from.id || !from.currentLink) {
            originFailure ??= err;
            this.stale.add(from.id);
            from.markDown(err);
          } else {
            this.stale.add(t.id);
            t.markDown(err);
          }
        } else {
          // The target disagrees with the origin: it is out of sync; resync it before it serves again.
          this.stale.add(t.id);
          t.setInRotation(false);
          void this.admit(t);
        }
      }
    }));
    // The change is not acknowledged (and not repeated): take it back where it was copied; the
    // failed origin is resynced from its peers when it returns. A target that cannot undo is
    // out of sync until resynced.
    if (originFailure !== undefined) {
      if (undo) {
        await Promise.all(copied.map(async (t) => {
          try {
            await t.run((l) => undo(l, result));
          } catch {
            this.stale.add(t.id);
            t.setInRotation(false);
            void this.admit(t);
          }
        }));
      }
      throw new NotRepeatedError(op, from.id, originFailure);
    }
    return result;
  }

  /** Counters per HSM: in flight (backpressure), served, rotation. */
  stats(): NodeStats[] {
    return [...this.nodes.values()].map((n) => ({
      hsm: n.id, address: n.addressText, status: n.status,
      inRotation: n.inRotation, inFlight: n.inFlight, served: n.served,
    }));
  }

  /** Total requests in flight across the cluster. */
  get inFlight(): number {
    let s = 0;
    for (const n of this.nodes.values()) s += n.inFlight;
    return s;
  }

  /** Resolves once `hsm` is in rotation (or rejects after `timeoutMs`). */
  async waitInRotation(hsm: string, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!this.nodes.get(hsm)?.available) {
      if (Date.now() > end) throw new NoHealthyHsmError(`${hsm} did not return to rotation within ${timeoutMs} ms: ${this.describeNodes()}`);
      await this.waitForRotation(Math.min(100, end - Date.now()));
    }
  }

  /** The node object of one HSM (status, tests). */
  node(id: string): HsmNode<C> | undefined {
    return this.nodes.get(id);
  }

  protected describeNodes(): string {
    if (this.nodes.size === 0) return 'the manifest lists no HSM';
    if (this.unproven && ![...this.nodes.values()].some((n) => n.available)) return this.unproven;
    return [...this.nodes.values()].map((n) => `${n.id} at ${n.addressText}: ${n.available ? 'up' : n.status === 'up' ? 'syncing' : n.status}`).join('; ');
  }

  /** Closes every link and timer. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.syncRetry.values()) clearTimeout(t);
    await Promise.all([...this.nodes.values()].map((n) => n.close()));
  }
}

// Why a resync left an HSM out of sync, for ResyncError.
function unclosed(r: ResyncReport): string {
  const why: string[] = [];
  if (r.newerOnTarget.length > 0) why.push(`it holds newer versions of ${r.newerOnTarget.slice(0, 3).join(', ')}${r.newerOnTarget.length > 3 ? ` and ${r.newerOnTarget.length - 3} more` : ''} than its peers, which refused them`);
  if (r.keysNotDeleted.length > 0) why.push(`it holds ${r.keysNotDeleted.length} key(s) its peer does not and the sync login may not delete them`);
  return why.length > 0 ? `state digests still differ after copying users and keys: ${why.join('; ')}` : 'state digests still differ after copying users and keys';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
