// Sliding-window statistics for the scaling advisor: latencies kept as log-scale histograms in
// one-second slots, so a 5-minute p99 costs a few hundred counters instead of every sample, and
// counters (busy answers, handshakes) in the same slots. Time is passed in, never read, so the
// windows are deterministic under test.

// Bins grow by 5% from 10 µs: quantiles are exact to ±2.5%, which is far below the SLO margin.
const GROWTH = 1.05;
const FIRST_MS = 0.01;
const BINS = Math.ceil(Math.log(120_000 / FIRST_MS) / Math.log(GROWTH)) + 1;
const SLOT_MS = 1000;

function binOf(ms: number): number {
  if (!(ms > FIRST_MS)) return 0;
  return Math.min(BINS - 1, Math.ceil(Math.log(ms / FIRST_MS) / Math.log(GROWTH)));
}

// The upper edge of a bin: a quantile reported from it never understates latency.
function edgeOf(bin: number): number {
  return FIRST_MS * GROWTH ** bin;
}

// The first one-second slot inside a span ending at `nowMs` (the current, partial slot counts).
function firstSecond(nowMs: number, spanMs: number): number {
  return Math.floor((nowMs - spanMs) / SLOT_MS) + 1;
}

interface Slot { second: number; counts: Uint32Array; n: number }

/** Latency samples over a sliding window (1 s resolution), with quantiles. */
export class LatencyWindow {
  private readonly slots: Slot[] = [];
  // The whole window merged, kept up to date as slots come and go: a full-span quantile costs one pass over the bins.
  private readonly total = new Float64Array(BINS);
  private totalN = 0;

  constructor(readonly spanMs: number) {}

  /** Adds one sample of `ms` milliseconds observed at `nowMs`. */
  record(ms: number, nowMs: number): void {
    const second = Math.floor(nowMs / SLOT_MS);
    let slot = this.slots.at(-1);
    if (!slot || slot.second !== second) {
      slot = { second, counts: new Uint32Array(BINS), n: 0 };
      this.slots.push(slot);
      this.prune(nowMs);
    }
    const bin = binOf(ms);
    slot.counts[bin]++;
    slot.n++;
    this.total[bin]++;
    this.totalN++;
  }

  /** Samples inside the last `spanMs` (default: the whole window) ending at `nowMs`. */
  count(nowMs: number, spanMs = this.spanMs): number {
    this.prune(nowMs);
    const from = firstSecond(nowMs, spanMs);
    let n = 0;
    for (const s of this.slots) if (s.second >= from) n += s.n;
    return n;
  }

  /** The q-quantile (0..1) in ms over the last `spanMs` ending at `nowMs`; undefined without samples. */
  quantile(q: number, nowMs: number, spanMs = this.spanMs): number | undefined {
    return this.quantiles([q], nowMs, spanMs)[0];
  }

  /** Several quantiles from one pass over the window (each undefined without samples). */
  quantiles(qs: readonly number[], nowMs: number, spanMs = this.spanMs): Array<number | undefined> {
    this.prune(nowMs);
    let merged = this.total;
    let n = this.totalN;
    if (spanMs < this.spanMs) {
      const from = firstSecond(nowMs, spanMs);
      merged = new Float64Array(BINS);
      n = 0;
      for (const s of this.slots) {
        if (s.second < from) continue;
        n += s.n;
        for (let i = 0; i < BINS; i++) merged[i] += s.counts[i];
      }
    }
    if (n === 0) return qs.map(() => undefined);
    return qs.map((q) => {
      const rank = Math.max(1, Math.ceil(q * n));
      let seen = 0;
      for (let i = 0; i < BINS; i++) {
        seen += merged[i];
        if (seen >= rank) return edgeOf(i);
      }
      return edgeOf(BINS - 1);
    });
  }

  private prune(nowMs: number): void {
    const from = firstSecond(nowMs, this.spanMs);
    while (this.slots.length > 0 && this.slots[0].second < from) {
      const old = this.slots.shift()!;
      for (let i = 0; i < BINS; i++) this.total[i] -= old.counts[i];
      this.totalN -= old.n;
    }
  }
}

/** A counter over a sliding window (1 s resolution). */
export class CountWindow {
  private readonly slots: Array<{ second: number; n: number }> = [];

  constructor(readonly spanMs: number) {}

  /** Adds `n` at `nowMs`. */
  add(nowMs: number, n = 1): void {
    const second = Math.floor(nowMs / SLOT_MS);
    const last = this.slots.at(-1);
    if (last && last.second === second) last.n += n;
    else {
      this.slots.push({ second, n });
      this.prune(nowMs);
    }
  }

  /** The sum over the last `spanMs` (default: the whole window) ending at `nowMs`. */
  total(nowMs: number, spanMs = this.spanMs): number {
    this.prune(nowMs);
    const from = firstSecond(nowMs, spanMs);
    let n = 0;
    for (const s of this.slots) if (s.second >= from) n += s.n;
    return n;
  }

  private prune(nowMs: number): void {
    const from = firstSecond(nowMs, this.spanMs);
    while (this.slots.length > 0 && this.slots[0].second < from) this.slots.shift();
  }
}
