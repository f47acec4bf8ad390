// Statistics of one benchmark point: percentiles of the end-to-end latency, each split into
// network / HSM queue wait / crypto service time, and the knee of a concurrency sweep.
// Pure functions over samples; imports nothing.

/** One completed operation: end-to-end latency and, if the HSM reported them, its queue wait and service time (ms). */
export interface Sample {
  totalMs: number;
  queueMs?: number;
  serviceMs?: number;
}

/** A latency split into where the time went; the three parts sum to `totalMs`. */
export interface LatencySplit {
  totalMs: number;
  /** Everything outside the HSM: client library, protocol, TLS, loopback, both event loops. */
  networkMs: number;
  /** Waiting for a free crypto unit inside the HSM. */
  queueMs: number;
  /** On a crypto unit: the real crypto plus the rest of the capacity profile's service time. */
  serviceMs: number;
}

/** Latency percentiles of one point (ms), each with its split. */
export interface LatencyStats {
  p50: LatencySplit;
  p95: LatencySplit;
  p99: LatencySplit;
  max: LatencySplit;
  mean: LatencySplit;
}

const PERCENTILES = { p50: 0.5, p95: 0.95, p99: 0.99 } as const;

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

function splitOf(s: Sample): LatencySplit {
  const queueMs = s.queueMs ?? 0;
  const serviceMs = s.serviceMs ?? 0;
  // The HSM's figures come from another process's clock; never let rounding make network negative.
  return {
    totalMs: round(s.totalMs), networkMs: round(Math.max(0, s.totalMs - queueMs - serviceMs)), queueMs: round(queueMs),
    serviceMs: round(serviceMs),
  };
}

/** Mean split of the samples in ranks [from, to). */
function meanSplit(sorted: Sample[], from: number, to: number): LatencySplit {
  const acc = { totalMs: 0, networkMs: 0, queueMs: 0, serviceMs: 0 };
  const n = Math.max(1, to - from);
  for (let i = from; i < to; i++) {
    const s = splitOf(sorted[i]!);
    acc.totalMs += s.totalMs; acc.networkMs += s.networkMs; acc.queueMs += s.queueMs; acc.serviceMs += s.serviceMs;
  }
  return {
    totalMs: round(acc.totalMs / n), networkMs: round(acc.networkMs / n), queueMs: round(acc.queueMs / n),
    serviceMs: round(acc.serviceMs / n),
  };
}

/** Nearest-rank index of quantile q in n sorted samples. */
export function rank(n: number, q: number): number {
  return Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1));
}

/**
 * Percentiles of the samples. A percentile's total is the nearest-rank value; its split is that
 * sample's (so the parts add up to exactly the total shown), and `mean` averages every sample.
 */
export function latencyStats(samples: Sample[]): LatencyStats {
  if (samples.length === 0) throw new RangeError('no samples');
  const sorted = [...samples].sort((a, b) => a.totalMs - b.totalMs);
  const at = (q: number): LatencySplit => splitOf(sorted[rank(sorted.length, q)]!);
  return {
    p50: at(PERCENTILES.p50), p95: at(PERCENTILES.p95), p99: at(PERCENTILES.p99),
    max: splitOf(sorted[sorted.length - 1]!),
    mean: meanSplit(sorted, 0, sorted.length),
  };
}

/** What the knee rule needs of a point. */
export interface KneeInput {
  concurrency: number;
  opsPerSec: number;
  p99Ms: number;
}

/** The knee: the rule and where it was found (null when latency never climbed without throughput). */
export interface Knee {
  concurrency: number | null;
  rule: string;
}

export const KNEE_RULE = 'first concurrency whose p99 is more than 2x the lowest concurrency\'s p99 while ops/s grew less than 10% over the previous point';

/** Finds the knee of a sweep ordered by concurrency: past it, more requests in flight only add latency. */
export function findKnee(points: KneeInput[]): Knee {
  const sorted = [...points].sort((a, b) => a.concurrency - b.concurrency);
  const base = sorted[0];
  for (let i = 1; i < sorted.length && base; i++) {
    const p = sorted[i]!;
    const prev = sorted[i - 1]!;
    if (p.p99Ms > 2 * base.p99Ms && p.opsPerSec < 1.1 * prev.opsPerSec) {
      return { concurrency: p.concurrency, rule: KNEE_RULE };
    }
  }
  return { concurrency: null, rule: KNEE_RULE };
}
