// The advisor's eyes: subscribes to the hsm:request, hsm:state and tls:handshake channels and
// keeps sliding windows of sign latency, queue wait, busy answers and handshakes, plus each HSM's
// last reported utilisation and key occupancy. `stats()` hands the advisor one ScalingStats.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { HsmSample, ScalingStats } from './advisor.js';
import { CHANNELS, type HsmRequestEvent, type HsmStateEvent, type TlsHandshakeEvent } from './channels.js';
import { CountWindow, LatencyWindow } from './window.js';

/** The HSMs of the cluster right now (from the cluster client), when the caller knows them. */
export type MembersSource = () => Array<{ hsm: string; inRotation: boolean }>;

/** Options of the monitor. */
export interface ScalingMonitorOptions {
  /** The advisor's window (default 60 s); the 1 and 5 minute figures are always kept too. */
  windowMs?: number;
  members?: MembersSource;
  /** Clock in ms (tests inject one). */
  now?: () => number;
}

interface HsmSeen { up: boolean; utilisation?: number; keys?: number; keysMax?: number; seenAt: number }

// Without a members source, an HSM that has not reported for this long has left the cluster.
const FORGET_MS = 10_000;
const MINUTE = 60_000;

/** Windowed figures per span, for the /scaling answer and gauges. */
export interface WindowFigures {
  signs: number; signP50Ms?: number; signP99Ms?: number; queueP50Ms?: number; queueP99Ms?: number;
  busyRejections: number;
}

/** Collects what the advisor decides from, off the diagnostics channels. */
export class ScalingMonitor {
  readonly windowMs: number;
  // One pair of latency windows per span read (the advisor's, 1 min, 5 min): each answers in one pass.
  private readonly latency = new Map<number, { rtt: LatencyWindow; queue: LatencyWindow }>();
  private readonly busy: CountWindow;
  private readonly full: CountWindow;
  private readonly resumed: CountWindow;
  private readonly hsms = new Map<string, HsmSeen>();
  private readonly now: () => number;
  private readonly subs: Array<[string, (msg: unknown) => void]>;

  constructor(private readonly opts: ScalingMonitorOptions = {}) {
    this.windowMs = opts.windowMs ?? MINUTE;
    const span = Math.max(this.windowMs, 5 * MINUTE);
    for (const w of new Set([this.windowMs, MINUTE, 5 * MINUTE])) {
      this.latency.set(w, { rtt: new LatencyWindow(w), queue: new LatencyWindow(w) });
    }
    this.busy = new CountWindow(span);
    this.full = new CountWindow(span);
    this.resumed = new CountWindow(span);
    this.now = opts.now ?? Date.now;
    // A malformed event must never throw into the emitter's code path.
    const guard = <E>(fn: (e: E) => void) => (msg: unknown) => {
      try {
        if (msg && typeof msg === 'object') fn(msg as E);
      } catch {
        /* dropped */
      }
    };
    this.subs = [
      [CHANNELS.hsmRequest, guard((e: HsmRequestEvent) => this.onRequest(e))],
      [CHANNELS.hsmState, guard((e: HsmStateEvent) => this.onState(e))],
      [CHANNELS.tlsHandshake, guard((e: TlsHandshakeEvent) => this.onHandshake(e))],
    ];
    for (const [name, fn] of this.subs) subscribe(name, fn);
  }

  /** Records one HSM request (also called directly by tests). */
  onRequest(e: HsmRequestEvent): void {
    const t = this.now();
    if (e.outcome === 'HSM_ERR_BUSY') this.busy.add(t);
    if (e.op !== 'sign' || e.outcome !== 'ok') return;
    for (const w of this.latency.values()) {
      w.rtt.record(e.rttMs, t);
      w.queue.record(e.queueWaitMs, t);
    }
  }

  /** Records one HSM state report. */
  onState(e: HsmStateEvent): void {
    const prev = this.hsms.get(e.hsm);
    const reported = e.keysToken !== undefined || e.keysSession !== undefined;
    const keys = reported ? (e.keysToken ?? 0) + (e.keysSession ?? 0) : prev?.keys;
    this.hsms.set(e.hsm, {
      up: e.up, seenAt: this.now(),
      utilisation: e.utilisation ?? prev?.utilisation, keys, keysMax: e.keysMax ?? prev?.keysMax,
    });
  }

  /** Records one handshake. */
  onHandshake(e: TlsHandshakeEvent): void {
    if (e.result !== 'ok') return;
    (e.resumed ? this.resumed : this.full).add(this.now());
  }

  /** Sign latency and busy figures over the last `spanMs`. */
  figures(spanMs: number, t = this.now()): WindowFigures {
    const opt = (k: string, v: number | undefined) => (v === undefined ? {} : { [k]: v });
    // The window of exactly this span, else the smallest longer one read over the span.
    const spans = [...this.latency.keys()].sort((a, b) => a - b);
    const w = this.latency.get(spans.find((s) => s >= spanMs) ?? spans[spans.length - 1]!)!;
    const [signP50, signP99] = w.rtt.quantiles([0.5, 0.99], t, spanMs);
    const [queueP50, queueP99] = w.queue.quantiles([0.5, 0.99], t, spanMs);
    return {
      signs: w.rtt.count(t, spanMs),
      ...opt('signP50Ms', signP50), ...opt('signP99Ms', signP99), ...opt('queueP50Ms', queueP50), ...opt('queueP99Ms', queueP99),
      busyRejections: this.busy.total(t, spanMs),
    };
  }

  /** Per-HSM figures: the members source's HSMs, or those heard from recently. */
  hsmSamples(t = this.now()): HsmSample[] {
    const sample = (hsm: string, inRotation: boolean | undefined): HsmSample => {
      const s = this.hsms.get(hsm);
      return {
        hsm, up: inRotation ?? s?.up ?? false,
        ...(s?.utilisation !== undefined ? { utilisation: s.utilisation } : {}),
        ...(s?.keys !== undefined ? { keysOccupied: s.keys } : {}),
        ...(s?.keysMax !== undefined ? { keysMax: s.keysMax } : {}),
      };
    };
    if (this.opts.members) return this.opts.members().map((m) => sample(m.hsm, m.inRotation));
    for (const [id, s] of this.hsms) if (t - s.seenAt > FORGET_MS) this.hsms.delete(id);
    return [...this.hsms.keys()].sort().map((id) => sample(id, undefined));
  }

  /** Everything the advisor needs, over its window, now. */
  stats(): ScalingStats {
    const t = this.now();
    const full = this.full.total(t, this.windowMs);
    const resumed = this.resumed.total(t, this.windowMs);
    const hs = full + resumed;
    return {
      atMs: t, windowMs: this.windowMs, hsms: this.hsmSamples(t), ...this.figures(this.windowMs, t),
      handshakesPerSec: hs / (this.windowMs / 1000), resumedShare: hs === 0 ? 0 : resumed / hs,
    };
  }

  /** Stops listening to the channels. */
  close(): void {
    for (const [name, fn] of this.subs) unsubscribe(name, fn);
  }
}
