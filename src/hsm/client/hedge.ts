// Hedged requests (The Tail at Scale): a sign that has not returned after its HSM's recent p95 is
// sent to a second HSM as well, and the first answer wins (a signature may be made twice: signing
// changes nothing in the HSM). Per HSM a small window of recent latencies gives the delay; a
// token bucket refilled by requests caps hedges at a share of them, so a slow cluster does not
// double its own load. An HSM with a request past its delay is "late": it takes no hedges, and
// the balancer keeps new requests off it until it answers. The cluster client owns one Hedging
// and runs `race` for each sign of a token key.
import { channel } from 'node:diagnostics_channel';

/** Tuning of hedged requests. */
export interface HedgeOptions {
  /** Hedge at all (default true once options are given). */
  enabled?: boolean;
  /** At most this share of requests is hedged, over a window of `1 / maxShare * burst` requests (default 0.05). */
  maxShare?: number;
  /** The hedge delay is never below this (default 5 ms): loopback p95s of ~1 ms would hedge every hiccup. */
  minDelayMs?: number;
  /** The delay before an HSM has `minSamples` latencies (default 50 ms). */
  initialDelayMs?: number;
}

/** Counters per HSM (the HSM whose answer was late). */
export interface HedgeCounts {
  /** Hedges sent because this HSM had not answered by its delay. */
  sent: number;
  /** Hedges whose answer came first (this HSM was the slow one). */
  won: number;
  /** Hedges the budget refused. */
  refused: number;
}

/** Payload of `hsmproxy:hsm:hedge` (contract shared with metrics/). */
export interface HsmHedgeEvent {
  /** The HSM that had not answered. */
  hsm: string;
  /** The HSM the hedge went to (sent, won). */
  to?: string;
  outcome: 'sent' | 'won' | 'refused';
}

export const HSM_HEDGE_CHANNEL = 'hsmproxy:hsm:hedge';
const hedgeChannel = channel(HSM_HEDGE_CHANNEL);

const WINDOW = 128;
const MIN_SAMPLES = 20;
// The p95 is recomputed (a sort of WINDOW numbers) every this many samples, not per request.
const RECOMPUTE_EVERY = 16;

/** The last WINDOW successful latencies of one HSM in a ring; p95 cached and refreshed every few samples. */
export class LatencyWindow {
  private readonly ring = new Float64Array(WINDOW);
  private readonly scratch = new Float64Array(WINDOW);
  private count = 0;
  private next = 0;
  private sinceRecompute = 0;
  private cachedP95 = 0;

  /** Records one latency in milliseconds. */
  add(ms: number): void {
    this.ring[this.next] = ms;
    this.next = (this.next + 1) % WINDOW;
    if (this.count < WINDOW) this.count++;
    if (++this.sinceRecompute >= RECOMPUTE_EVERY || this.count === MIN_SAMPLES) this.recompute();
  }

  /** Samples held (at most WINDOW). */
  get samples(): number {
    return this.count;
  }

  /** The recent p95 in milliseconds, or undefined before MIN_SAMPLES. */
  get p95(): number | undefined {
    return this.count < MIN_SAMPLES ? undefined : this.cachedP95;
  }

  private recompute(): void {
    this.sinceRecompute = 0;
    const s = this.scratch.subarray(0, this.count);
    s.set(this.ring.subarray(0, this.count));
    s.sort();
    this.cachedP95 = s[Math.min(this.count - 1, Math.ceil(this.count * 0.95) - 1)]!;
  }
}

/**
 * A token bucket filled by requests: each request adds `share` of a token, a hedge takes one, and
 * the bucket holds at most `burst` tokens, so over any run of requests at most
 * `burst + share × requests` are hedged.
 */
export class HedgeBudget {
  private tokens: number;

  constructor(private readonly share: number, readonly burst: number) {
    this.tokens = burst;
  }

  /** Called once per request that may be hedged. */
  onRequest(): void {
    this.tokens = Math.min(this.burst, this.tokens + this.share);
  }

  /** Takes a token for one hedge, if there is one. */
  take(): boolean {
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** How `race` reaches HSMs: the cluster client's routing, with the HSM each attempt went to. */
export interface HedgeRoute<T> {
  /**
   * Runs the request on the least-loaded HSM not in `avoid`; `onNode` is called with the HSM
   * picked for each attempt before it is sent; `abandoned()` true stops retries (the race is decided).
   */
  run(
    avoid: ReadonlySet<string> | undefined, onNode: (hsm: string) => void, abandoned: () => boolean,
    remainingMs: () => number,
  ): Promise<T>;
  /** Whether an HSM not in `avoid` may take the hedge of a request late on `late` (in rotation, no busier). */
  hasTarget(late: string, avoid: ReadonlySet<string>): boolean;
}

/** Hedged requests for one cluster client: latency windows per HSM, the budget, counters. */
export class Hedging {
  readonly maxShare: number;
  readonly minDelayMs: number;
  readonly initialDelayMs: number;
  private readonly budget: HedgeBudget;
  private readonly windows = new Map<string, LatencyWindow>();
  private readonly counts = new Map<string, HedgeCounts>();
  /**
   * Requests past their delay and not yet answered, per HSM: an HSM with one is stalled or slow
   * now, so it takes no hedges (a hedge sent to a frozen HSM only spends budget).
   */
  private readonly lateNow = new Map<string, number>();
  /** Races started (requests that could be hedged), for the share. */
  requests = 0;

  constructor(opts: HedgeOptions = {}) {
    this.maxShare = opts.maxShare ?? 0.05;
    this.minDelayMs = opts.minDelayMs ?? 5;
    this.initialDelayMs = Math.max(this.minDelayMs, opts.initialDelayMs ?? 50);
    if (!(this.maxShare > 0 && this.maxShare <= 1)) throw new RangeError(`hedge maxShare must be in (0, 1], got ${this.maxShare}`);
    if (!(this.minDelayMs >= 0)) throw new RangeError(`hedge minDelayMs must be >= 0, got ${this.minDelayMs}`);
    // A burst of 10 hedges (or one, for tiny shares): enough for one stall of a busy HSM.
    this.budget = new HedgeBudget(this.maxShare, Math.max(1, Math.round(this.maxShare * 200)));
  }

  /** The delay after which a request to `hsm` is hedged: its recent p95, at least minDelayMs. */
  delayFor(hsm: string): number {
    const p95 = this.windows.get(hsm)?.p95;
    return p95 === undefined ? this.initialDelayMs : Math.max(this.minDelayMs, p95);
  }

  /** Whether `hsm` has a request past its delay and unanswered now (stalled or slow: route elsewhere). */
  isLate(hsm: string): boolean {
    return this.lateNow.has(hsm);
  }

  /** Records a successful request's latency on `hsm`. */
  record(hsm: string, ms: number): void {
    let w = this.windows.get(hsm);
    if (!w) this.windows.set(hsm, (w = new LatencyWindow()));
    w.add(ms);
  }

  /** Counters per HSM (tests, status). */
  stats(): Map<string, HedgeCounts> {
    return new Map([...this.counts].map(([k, v]) => [k, { ...v }]));
  }

  /** Totals over every HSM. */
  totals(): HedgeCounts & { requests: number } {
    const t = { sent: 0, won: 0, refused: 0, requests: this.requests };
    for (const c of this.counts.values()) {
      t.sent += c.sent;
      t.won += c.won;
      t.refused += c.refused;
    }
    return t;
  }

  /** Forgets an HSM that left the cluster. */
  forget(hsm: string): void {
    this.windows.delete(hsm);
  }

  private count(hsm: string, outcome: HsmHedgeEvent['outcome'], to?: string): void {
    let c = this.counts.get(hsm);
    if (!c) this.counts.set(hsm, (c = { sent: 0, won: 0, refused: 0 }));
    c[outcome]++;
    if (!hedgeChannel.hasSubscribers) return;
    hedgeChannel.publish({ hsm, ...(to !== undefined ? { to } : {}), outcome } satisfies HsmHedgeEvent);
  }

  /**
   * Runs a request through `route`; if the HSM it went to has not answered after its delay, and
   * the budget allows, runs it again on another HSM. The first success wins; the loser is left to
   * finish (its HSM stays counted busy, so the balancer keeps new requests off a stalled HSM) and
   * its result or error is dropped. If one attempt fails while the other is in flight, the other
   * decides; if both fail, the caller sees the first attempt's error, once. `timeoutMs` is the
   * request's own deadline: the hedge gets what is left of it.
   */
  race<T>(route: HedgeRoute<T>, timeoutMs: number | undefined): Promise<T> {
    this.requests++;
    this.budget.onRequest();
    const t0 = performance.now();
    const remainingMs = (): number => (
      timeoutMs === undefined ? Infinity : Math.max(1, timeoutMs - (performance.now() - t0)));
    return new Promise<T>((resolve, reject) => {
      let decided = false;
      let primaryHsm: string | undefined;
      let primaryStarted = 0;
      let hedgeHsm: string | undefined;
      let hedgeStarted = 0;
      let timer: NodeJS.Timeout | undefined;
      // The HSM this request was counted late on (until its primary attempt settles).
      let lateOn: string | undefined;
      let rechecks = 0;
      const primarySettled = (): void => {
        if (lateOn === undefined) return;
        const n = (this.lateNow.get(lateOn) ?? 1) - 1;
        if (n > 0) this.lateNow.set(lateOn, n);
        else this.lateNow.delete(lateOn);
        lateOn = undefined;
      };
      // 0: primary only; 1: hedge in flight; the first error waits here while the other runs.
      let inFlight = 1;
      let firstError: { err: unknown } | undefined;
      const abandoned = (): boolean => decided;

      const win = (v: T, byHedge: boolean): void => {
        if (decided) return;
        decided = true;
        clearTimeout(timer);
        if (byHedge && primaryHsm !== undefined) this.count(primaryHsm, 'won', hedgeHsm);
        resolve(v);
      };
      const lose = (err: unknown): void => {
        if (decided) return;
        firstError ??= { err };
        if (--inFlight > 0) return; // the other attempt still runs: it decides
        decided = true;
        clearTimeout(timer);
        reject(firstError.err);
      };

      const fire = (): void => {
        if (decided || inFlight > 1 || primaryHsm === undefined) return;
        const slow = primaryHsm;
        primarySettled(); // counted once per request, on the HSM it is late on now
        lateOn = slow;
        this.lateNow.set(slow, (this.lateNow.get(slow) ?? 0) + 1);
        const avoid = new Set<string>();
        for (const [h, n] of this.lateNow) if (n > 0) avoid.add(h);
        if (!route.hasTarget(slow, avoid)) {
          // Every other HSM is late or busier now: look again later (still bounded by this
          // request's life), so a stall of this HSM is hedged once another one recovers; backing
          // off, so a backlog of late requests does not turn into a storm of timers.
          timer = setTimeout(() => setImmediate(fire), this.delayFor(slow) * 2 ** Math.min(++rechecks, 6));
          return;
        }
        if (!this.budget.take()) {
          this.count(slow, 'refused');
          return;
        }
        inFlight++;
        let counted = false;
        route.run(avoid, (hsm) => {
          hedgeHsm = hsm;
          hedgeStarted = performance.now();
          if (!counted) {
            counted = true;
            this.count(slow, 'sent', hsm);
          }
        }, abandoned, remainingMs).then((v) => {
          if (!decided && hedgeHsm !== undefined) this.record(hedgeHsm, performance.now() - hedgeStarted);
          win(v, true);
        }, lose);
      };

      route.run(undefined, (hsm) => {
        // A retry on another HSM (busy, failover) restarts the clock for that HSM.
        primaryHsm = hsm;
        primaryStarted = performance.now();
        if (decided || inFlight > 1) return;
        clearTimeout(timer);
        // Timers run before the poll phase: after a stall of this process, answers already waiting
        // in the socket are read first (setImmediate runs after poll), so they are not hedged.
        timer = setTimeout(() => setImmediate(fire), this.delayFor(hsm));
      }, abandoned, remainingMs).finally(primarySettled).then((v) => {
        // A primary that lost is not recorded: its stall is what hedging answered, and counting it
        // would raise that HSM's delay for its next stall (the budget, not the delay, bounds load).
        if (!decided && primaryHsm !== undefined) this.record(primaryHsm, performance.now() - primaryStarted);
        win(v, false);
      }, lose);
    });
  }
}
