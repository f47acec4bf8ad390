// The scaling advisor's core: from window statistics (latency of signs, busy answers, per-HSM
// utilisation and key occupancy) to a recommendation — add, remove or hold, how many, and a
// reason an operator can act on. It follows the CloudHSM advice: a consistent rise in latency
// means the HSMs are near their throughput limit (add one), so do keys near 3,500 (add one), and
// keep at least `min` HSMs. Hysteresis (remove only when clearly idle for longer, and only if the
// rest stay below the add threshold) and a cool-down after every change keep it from flapping.
// Pure: the state goes in and comes out, time comes from the stats.

/** The per-HSM key limit the advisor compares occupancy with when an HSM does not report one. */
const DEFAULT_KEYS_MAX = 3500;
/** Queue wait p99 (as a share of the SLO) from which slow signs are put down to the HSMs. */
const QUEUE_SHARE = 0.25;
/** Utilisation from which the HSMs count as busy whatever the queue says. */
const BUSY_UTILISATION = 0.8;

/** One HSM as the advisor sees it. */
export interface HsmSample {
  hsm: string;
  /** In rotation (answering and in sync). */
  up: boolean;
  /** Busy fraction of its crypto units, 0..1 (as the HSM reports it). */
  utilisation?: number;
  /** Keys occupied (token + session) and the HSM's limit. */
  keysOccupied?: number;
  keysMax?: number;
}

/** What the advisor decides from: sliding-window figures at one instant. */
export interface ScalingStats {
  /** When the figures were taken (ms, any monotonic clock). */
  atMs: number;
  /** The window the latency and counts cover. */
  windowMs: number;
  hsms: HsmSample[];
  /** Sign requests answered in the window, and their round-trip quantiles (ms). */
  signs: number;
  signP50Ms?: number;
  signP99Ms?: number;
  /** HSM-side queue wait of those signs (ms). */
  queueP50Ms?: number;
  queueP99Ms?: number;
  /** Requests refused with a `busy` answer in the window. */
  busyRejections: number;
  handshakesPerSec: number;
  /** Share of handshakes that were resumed (0..1; they cost no signature). */
  resumedShare: number;
}

/** The advisor's knobs (times in ms). */
export interface AdvisorConfig {
  /** Never recommend fewer HSMs than this (CloudHSM advice: 2, 3 for critical workloads). */
  min: number;
  max: number;
  /** p99 sign round trip the cluster should stay under. */
  sloP99Ms: number;
  /** After the HSM count changes, no further change is recommended for this long. */
  cooldownMs: number;
  /** How long latency must stay over the SLO (or busy answers continue) before adding. */
  sustainMs: number;
  /** How long every HSM must stay idle before removing one (longer than `sustainMs`: hysteresis). */
  removeSustainMs: number;
  /** An HSM counts as idle below this utilisation. */
  removeBelow: number;
  /** A removal must leave the others below this mean utilisation; also the utilisation an add aims for. */
  targetUtilisation: number;
  /** Occupied share of the key limit that asks for another HSM. */
  keysHighWater: number;
  /** Fewer signs than this in the window say nothing about latency. */
  minSigns: number;
}

/** Defaults: min 2 HSMs, SLO 20 ms, 5 min sustained before adding, 30 min idle before removing. */
export const ADVISOR_DEFAULTS: AdvisorConfig = {
  min: 2, max: 8, sloP99Ms: 20, cooldownMs: 600_000, sustainMs: 300_000, removeSustainMs: 1_800_000,
  removeBelow: 0.3, targetUtilisation: 0.7, keysHighWater: 0.9, minSigns: 20,
};

/** What the advisor remembers between evaluations. */
export interface AdvisorState {
  /** HSM count at the last evaluation, and when it last changed (cool-down start). */
  hsms?: number;
  /** HSMs in rotation at the last evaluation. */
  healthy?: number;
  changedAt?: number;
  /** Since when latency has been over the SLO (or busy answers seen) without a break. */
  pressureSince?: number;
  /** Since when every HSM has been idle without a break. */
  idleSince?: number;
  /** Since when fewer than `min` HSMs have been in rotation. */
  shortSince?: number;
}

/** The advisor's answer. */
export interface Recommendation {
  action: 'add' | 'remove' | 'hold';
  /** HSMs to add or remove (0 for hold). */
  count: number;
  currentHsms: number;
  healthyHsms: number;
  targetHsms: number;
  /** One line for people: `add 1 HSM: p99 sign latency 38 ms (SLO 20 ms) for 5 min, utilisation 0.91 on 2 HSMs`. */
  reason: string;
  atMs: number;
}

/** Formats a duration as people read it in a reason: `40 s`, `5 min`, `2 h`. */
export function formatDuration(ms: number): string {
  if (ms < 60_000) return `${Math.max(0, Math.round(ms / 1000))} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / 3_600_000)} h`;
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;
const ms = (v: number): string => (v >= 10 ? `${Math.round(v)} ms` : `${v.toFixed(1)} ms`);

/** Turns window statistics and the previous state into a recommendation and the next state. */
export function advise(
  stats: ScalingStats, prev: AdvisorState, cfg: AdvisorConfig,
): { recommendation: Recommendation; state: AdvisorState } {
  const now = stats.atMs;
  const current = stats.hsms.length;
  const up = stats.hsms.filter((h) => h.up);
  const healthy = up.length;
  const utils = up.map((h) => clamp01(h.utilisation ?? 0));
  const sumUtil = utils.reduce((a, b) => a + b, 0);
  const meanUtil = healthy > 0 ? sumUtil / healthy : 0;
  const maxUtil = utils.length > 0 ? Math.max(...utils) : 0;

  const state: AdvisorState = { ...prev, hsms: current, healthy };
  // A new HSM changes the cluster when it enters rotation, not when it is first listed.
  if ((prev.hsms !== undefined && prev.hsms !== current) || (prev.healthy !== undefined && prev.healthy !== healthy)) {
    // A changed cluster starts its evidence over: figures from before the change describe another cluster.
    state.changedAt = now;
    delete state.pressureSince;
    delete state.idleSince;
  }
  const cooling = state.changedAt !== undefined && now - state.changedAt < cfg.cooldownMs;
  const p99 = stats.signP99Ms;
  const slow = stats.signs >= cfg.minSigns && p99 !== undefined && p99 > cfg.sloP99Ms;
  // Slow signs are the HSMs' doing only if requests queue for crypto units (or the units are
  // busy); time spent elsewhere (network, this proxy's CPU) is not cured by another HSM.
  const queueing = stats.queueP99Ms === undefined || stats.queueP99Ms >= cfg.sloP99Ms * QUEUE_SHARE
    || maxUtil >= BUSY_UTILISATION;
  const latencyHigh = slow && queueing;
  const pressure = latencyHigh || stats.busyRejections > 0;
  const idle = healthy > 0 && maxUtil < cfg.removeBelow && !pressure && !slow;
  // Evidence counts only once the whole window is younger than the last change.
  const fresh = state.changedAt === undefined || now - state.changedAt >= stats.windowMs;
  state.pressureSince = pressure && fresh ? (state.pressureSince ?? now) : undefined;
  state.idleSince = idle && fresh ? (state.idleSince ?? now) : undefined;
  state.shortSince = healthy < cfg.min ? (prev.shortSince ?? now) : undefined;
  for (const k of ['pressureSince', 'idleSince', 'shortSince'] as const) if (state[k] === undefined) delete state[k];

  const out = (action: Recommendation['action'], count: number, reason: string) => ({
    recommendation: {
      action, count, currentHsms: current, healthyHsms: healthy, reason, atMs: now,
      targetHsms: action === 'add' ? current + count : action === 'remove' ? current - count : current,
    },
    state,
  });
  const room = Math.max(0, cfg.max - current);
  const utilText = `utilisation ${meanUtil.toFixed(2)} on ${plural(healthy, 'HSM')}`;
  const latencyText = p99 === undefined || stats.signs < cfg.minSigns
    ? `too few signs to judge latency (${stats.signs} in ${formatDuration(stats.windowMs)})`
    : `p99 sign latency ${ms(p99)} (SLO ${ms(cfg.sloP99Ms)})`;

  // 1. Fewer HSMs than the minimum: at once, whatever the load (availability, not throughput).
  if (current < cfg.min) {
    const n = cfg.min - current;
    return out('add', n, `add ${plural(n, 'HSM')}: only ${plural(current, 'HSM')} in the cluster, minimum ${cfg.min}`);
  }
  const keys = keysPressure(stats.hsms);
  const held = (since: number | undefined) => (since === undefined ? 0 : now - since);

  // 2. Keys near the per-HSM limit: another HSM makes room for session keys.
  if (keys && keys.ratio >= cfg.keysHighWater) {
    const what = `keys occupied ${keys.occupied} of ${keys.max} (${Math.round(keys.ratio * 100)}%) on ${keys.hsm}`;
    if (room === 0) return out('hold', 0, `hold at the maximum of ${plural(cfg.max, 'HSM')}: ${what}`);
    if (cooling) return out('hold', 0, `hold at ${plural(current, 'HSM')}: ${what}, but cooling down for ${formatDuration(state.changedAt! + cfg.cooldownMs - now)} after the last change`);
    return out('add', 1, `add 1 HSM: ${what}`);
  }

  // 3. HSMs out of rotation for long enough that fewer than `min` serve.
  if (state.shortSince !== undefined && held(state.shortSince) >= cfg.sustainMs && room > 0 && !cooling) {
    const n = Math.min(room, cfg.min - healthy);
    return out('add', n, `add ${plural(n, 'HSM')}: only ${healthy} of ${plural(current, 'HSM')} in rotation for ${formatDuration(held(state.shortSince))}, minimum ${cfg.min}`);
  }

  // 4. Latency over the SLO (or busy answers), sustained: the HSMs are at their throughput limit.
  if (pressure) {
    const busy = stats.busyRejections > 0 ? `, ${plural(stats.busyRejections, 'busy answer')}` : '';
    const signal = `${latencyHigh ? latencyText : `${plural(stats.busyRejections, 'busy answer')} from the HSMs`}`;
    const sustained = held(state.pressureSince);
    if (sustained < cfg.sustainMs) {
      return out('hold', 0, `hold at ${plural(current, 'HSM')}: ${signal} for ${formatDuration(sustained)} of the ${formatDuration(cfg.sustainMs)} that call for another HSM, ${utilText}`);
    }
    if (room === 0) return out('hold', 0, `hold at the maximum of ${plural(cfg.max, 'HSM')}: ${signal} for ${formatDuration(sustained)}, ${utilText}`);
    if (cooling) return out('hold', 0, `hold at ${plural(current, 'HSM')}: ${signal}, but cooling down for ${formatDuration(state.changedAt! + cfg.cooldownMs - now)} after the last change`);
    // Enough HSMs to bring utilisation down to the target; at least one.
    const n = Math.min(room, Math.max(1, Math.ceil(sumUtil / cfg.targetUtilisation) - current));
    return out('add', n, `add ${plural(n, 'HSM')}: ${latencyHigh ? latencyText : signal} for ${formatDuration(sustained)}, ${utilText}${latencyHigh ? busy : ''}`);
  }

  // 5. Idle for long, and the others would still be comfortably below the add threshold.
  const removable = current - 1 >= cfg.min && healthy === current && !cooling;
  if (idle && held(state.idleSince) >= cfg.removeSustainMs && removable) {
    const projected = sumUtil / (current - 1);
    if (projected < cfg.targetUtilisation) {
      const remain = current - 1 === 1 ? '1 HSM remains' : `${current - 1} HSMs remain`;
      return out('remove', 1, `remove 1 HSM: utilisation < ${cfg.removeBelow} for ${formatDuration(held(state.idleSince))} and ${remain}`);
    }
  }

  if (slow && !queueing) {
    return out('hold', 0, `hold at ${plural(current, 'HSM')}: ${latencyText}, but HSM queue wait p99 is ${ms(stats.queueP99Ms ?? 0)} and ${utilText}: the time is spent outside the HSMs (network or the proxy's CPU), another HSM would not help`);
  }
  const why = current - 1 < cfg.min && idle ? `, already at the minimum of ${cfg.min}` : cooling ? `, cooling down after the last change` : '';
  return out('hold', 0, `hold at ${plural(current, 'HSM')}: ${latencyText}, ${utilText}${why}`);
}

function clamp01(v: number): number {
  return Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0;
}

// The HSM with the highest occupied share of its key limit.
function keysPressure(hsms: HsmSample[]): { hsm: string; occupied: number; max: number; ratio: number } | undefined {
  let best: { hsm: string; occupied: number; max: number; ratio: number } | undefined;
  for (const h of hsms) {
    if (h.keysOccupied === undefined) continue;
    const max = h.keysMax && h.keysMax > 0 ? h.keysMax : DEFAULT_KEYS_MAX;
    const ratio = h.keysOccupied / max;
    if (!best || ratio > best.ratio) best = { hsm: h.hsm, occupied: h.keysOccupied, max, ratio };
  }
  return best;
}

/** The advisor with its state: feed it stats, read the latest recommendation. */
export class ScalingAdvisor {
  private state: AdvisorState = {};
  private last?: Recommendation;

  constructor(readonly config: AdvisorConfig) {}

  /** Evaluates `stats` and returns (and remembers) the recommendation. */
  evaluate(stats: ScalingStats): Recommendation {
    const r = advise(stats, this.state, this.config);
    this.state = r.state;
    this.last = r.recommendation;
    return r.recommendation;
  }

  /** The last recommendation, if any. */
  get latest(): Recommendation | undefined {
    return this.last;
  }
}
