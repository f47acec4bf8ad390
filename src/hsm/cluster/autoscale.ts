// Auto-scaling of the simulated cluster (opt-in, `hsm.autoscale`): every interval it asks a
// decision source (the scaling advisor, wired in by the caller: hsm/ does not import metrics/)
// and carries the decision out, one HSM at a time, so no request fails:
// - add: clone a new HSM from the latest backup (or a live HSM when there is no backup), start it
//   (the supervisor), and wait until the client's sync gate has put it in rotation;
// - remove: take the HSM out of rotation, wait until its in-flight requests are answered (drain),
//   then drop it from the manifest, the client and the supervisor (SIGTERM).
// Every action is published on `hsmproxy:hsm:scaling` (metrics count it) and given to `onEvent`.
import { channel } from 'node:diagnostics_channel';
import type { ClusterClient } from '../client/cluster-client.js';
import type { LoginCredentials } from '../client/link.js';
import { addHsm } from './add-remove.js';
import { listBackups } from './backup.js';
import { readManifest } from './manifest.js';
import { membersOf, removeFromManifest } from './membership.js';
import type { Supervisor } from './supervisor.js';

/** The channel autoscale actions are published on (restated in metrics/channels.ts). */
export const HSM_SCALING_CHANNEL = 'hsmproxy:hsm:scaling';

/** One autoscale action, as published. */
export interface AutoscaleEvent {
  action: 'add' | 'remove';
  hsm: string;
  result: 'ok' | 'failed';
  /** The decision's reason, e.g. `add 1 HSM: p99 sign latency 38 ms (SLO 20 ms) for 5 min, …`. */
  reason: string;
  durationMs: number;
  /** HSMs in the cluster after the action. */
  hsms: number;
  /** For an add: where the new HSM was cloned from. */
  from?: 'backup' | 'live';
  error?: string;
}

/** What the decision source answers (the advisor's Recommendation fits). */
export interface ScalingDecision {
  action: 'add' | 'remove' | 'hold';
  count: number;
  reason: string;
}

/** Options of the autoscaler. */
export interface AutoscalerOptions {
  dir: string;
  client: ClusterClient;
  /** The local supervisor (embedded mode); without one, the supervisor following the manifest elsewhere acts. */
  supervisor?: Supervisor;
  decide: () => ScalingDecision | Promise<ScalingDecision>;
  /** Never removes below this many HSMs, whatever the decision says (default 1). */
  min?: number;
  /** Decision period (default 1,000 ms). */
  intervalMs?: number;
  /** Pause after a failed action before asking again (default 30 s): a failure is rarely fixed in a second. */
  retryAfterFailureMs?: number;
  /** Clone source: 'auto' (default) uses the latest backup when there is one, else a live HSM. */
  from?: 'backup' | 'live' | 'auto';
  /** CO/AU login for live clones (default: the cluster's sync user). */
  credentials?: LoginCredentials;
  /** How long a new HSM may take to come into rotation (default 60 s). */
  joinTimeoutMs?: number;
  /** How long a leaving HSM may take to answer its in-flight requests (default 30 s). */
  drainTimeoutMs?: number;
  scryptCost?: number;
  onEvent?: (e: AutoscaleEvent) => void;
}

const scalingChannel = channel(HSM_SCALING_CHANNEL);

/** Follows scaling decisions by adding and removing HSMs of the cluster in `dir`. */
export class Autoscaler {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;

  constructor(private readonly opts: AutoscalerOptions) {}

  /** Starts the decision loop (unref'd timer). */
  start(): void {
    this.stopped = false;
    const tick = (): void => {
      if (this.stopped) return;
      let failed = false;
      this.running = this.step().then((done) => { failed = done.some((e) => e.result === 'failed'); }, () => { failed = true; }).finally(() => {
        this.running = undefined;
        if (this.stopped) return;
        this.timer = setTimeout(
          tick, failed ? (this.opts.retryAfterFailureMs ?? 30_000) : (this.opts.intervalMs ?? 1000),
        );
        this.timer.unref();
      });
    };
    this.timer = setTimeout(tick, this.opts.intervalMs ?? 1000);
    this.timer.unref();
  }

  /** Stops the loop; waits for an action under way to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Asks for a decision once and carries it out; returns what was done. */
  async step(): Promise<AutoscaleEvent[]> {
    const d = await this.opts.decide();
    const done: AutoscaleEvent[] = [];
    if (d.action === 'hold' || d.count < 1) return done;
    for (let i = 0; i < d.count && !this.stopped; i++) {
      const e = d.action === 'add' ? await this.addOne(d.reason) : await this.removeOne(d.reason);
      done.push(e);
      if (e.result === 'failed') break;
    }
    return done;
  }

  /** Adds one HSM and waits until it serves. */
  async addOne(reason: string): Promise<AutoscaleEvent> {
    const t0 = performance.now();
    let hsm = '';
    let from: 'backup' | 'live' | undefined;
    try {
      from = this.opts.from === 'backup' || this.opts.from === 'live' ? this.opts.from : (await listBackups(this.opts.dir)).some((b) => b.header) ? 'backup' : 'live';
      const r = await addHsm(this.opts.dir, {
        from, ...(this.opts.credentials ? { credentials: this.opts.credentials } : {}),
        ...(this.opts.scryptCost ? { scryptCost: this.opts.scryptCost } : {}),
      });
      hsm = r.hsm.id;
      // The supervisor starts it and publishes its port; the client then connects and resyncs it.
      await this.opts.supervisor?.reconcile();
      await this.syncMembers();
      await this.opts.client.waitInRotation(hsm, this.opts.joinTimeoutMs ?? 60_000);
      return await this.emit({ action: 'add', hsm, result: 'ok', reason, from, t0 });
    } catch (err) {
      return this.emit({ action: 'add', hsm, result: 'failed', reason, t0, err, ...(from ? { from } : {}) });
    }
  }

  /** Drains and removes one HSM (one not in rotation first, else the newest). */
  async removeOne(reason: string): Promise<AutoscaleEvent> {
    const t0 = performance.now();
    let hsm = '';
    try {
      const m = await readManifest(this.opts.dir);
      if (m.hsms.length - 1 < Math.max(1, this.opts.min ?? 1)) throw new Error(`the cluster has ${m.hsms.length} HSMs; removing one would leave fewer than the minimum of ${Math.max(1, this.opts.min ?? 1)}`);
      const stats = new Map(this.opts.client.stats().map((s) => [s.hsm, s]));
      const ids = m.hsms.map((h) => h.id).sort(byNumber);
      hsm = ids.find((id) => !stats.get(id)?.inRotation) ?? ids.at(-1) ?? '';
      const others = ids.filter((id) => id !== hsm && stats.get(id)?.inRotation);
      if (others.length === 0) throw new Error(`${hsm} is the only HSM in rotation; it is not removed`);
      await this.drain(hsm);
      await removeFromManifest(this.opts.dir, hsm);
      await this.syncMembers();
      await this.opts.supervisor?.reconcile();
      return await this.emit({ action: 'remove', hsm, result: 'ok', reason, t0 });
    } catch (err) {
      // A drained HSM that could not be removed goes back to serving (the sync gate decides).
      const node = hsm ? this.opts.client.node(hsm) : undefined;
      if (node && node.status === 'up' && !node.inRotation) node.setInRotation(true);
      return this.emit({ action: 'remove', hsm, result: 'failed', reason, t0, err });
    }
  }

  // Out of rotation first (no new requests), then wait for the ones already sent to come back.
  private async drain(hsm: string): Promise<void> {
    const node = this.opts.client.node(hsm);
    if (!node) return;
    node.setInRotation(false);
    const end = Date.now() + (this.opts.drainTimeoutMs ?? 30_000);
    while (node.inFlight > 0) {
      if (Date.now() > end) throw new Error(`${hsm} still had ${node.inFlight} requests in flight after ${this.opts.drainTimeoutMs ?? 30_000} ms; it is not removed`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  // The client also follows the manifest by polling; telling it now saves the poll interval.
  private async syncMembers(): Promise<void> {
    await this.opts.client.setMembers(membersOf(await readManifest(this.opts.dir)));
  }

  private async emit(p: { action: 'add' | 'remove'; hsm: string; result: 'ok' | 'failed'; reason: string; t0: number; from?: 'backup' | 'live'; err?: unknown }): Promise<AutoscaleEvent> {
    const hsms = await readManifest(this.opts.dir).then((m) => m.hsms.length, () => this.opts.client.members().length);
    const e: AutoscaleEvent = {
      action: p.action, hsm: p.hsm, result: p.result, reason: p.reason,
      durationMs: Math.round(performance.now() - p.t0), hsms,
      ...(p.from ? { from: p.from } : {}),
      ...(p.err !== undefined ? { error: p.err instanceof Error ? p.err.message : String(p.err) } : {}),
    };
    scalingChannel.publish(e);
    this.opts.onEvent?.(e);
    return e;
  }
}

// hsm-2 before hsm-10.
function byNumber(a: string, b: string): number {
  const n = (s: string): number => Number(/(\d+)$/.exec(s)?.[1] ?? 0);
  return n(a) - n(b) || a.localeCompare(b);
}
