// Drives one prepared operation at a fixed number of requests in flight, for a count or a
// duration, and turns the samples into a point (ops/s, latency percentiles and their split).
// A sweep repeats that over concurrencies and finds the knee.
import { performance } from 'node:perf_hooks';
import type { PreparedOp } from './ops.js';
import { findKnee, latencyStats, type Knee, type LatencyStats, type Sample } from './stats.js';
import type { TimingCollector } from './timings.js';

/** How long a point lasts: a number of operations, or seconds. */
export type PointBudget = { count: number } | { seconds: number };

/** One measured point of a sweep. */
export interface BenchPoint {
  op: string;
  hsms: number | null;
  concurrency: number;
  /** Operations completed (errors excluded). */
  ops: number;
  errors: number;
  /** The first error's message, when there were errors. */
  firstError?: string;
  seconds: number;
  opsPerSec: number;
  /** False when the backend reports no HSM timings: then all of the latency shows as network. */
  splitReported: boolean;
  latency: LatencyStats;
}

/** Progress of the point being measured, for the live line on stderr. */
export interface Progress {
  op: string;
  concurrency: number;
  done: number;
  elapsedS: number;
  budget: PointBudget;
}

/** Runs `prepared` at `concurrency` in flight until the budget is spent. */
export async function runPoint(
  prepared: PreparedOp,
  meta: { op: string; hsms: number | null; concurrency: number; budget: PointBudget; signal?: AbortSignal },
  collector: TimingCollector | undefined,
  onProgress?: (p: Progress) => void,
): Promise<BenchPoint> {
  const { concurrency, budget } = meta;
  const samples: Sample[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let started = 0;
  const t0 = performance.now();
  const deadline = 'seconds' in budget ? t0 + budget.seconds * 1000 : Infinity;
  const more = (): boolean => !meta.signal?.aborted && ('count' in budget ? started < budget.count : performance.now() < deadline);
  const timer = onProgress
    ? setInterval(
      () => onProgress({
        op: meta.op, concurrency, done: samples.length + errors, elapsedS: (performance.now() - t0) / 1000, budget,
      }),
      250,
    )
    : undefined;
  try {
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (more()) {
        started++;
        const s0 = performance.now();
        try {
          if (collector && prepared.runTimed) {
            const t = await prepared.runTimed();
            samples.push({
              totalMs: performance.now() - s0, queueMs: t.queueWaitUs / 1000, serviceMs: t.serviceUs / 1000,
            });
          } else if (collector) {
            const t = await collector.measure(prepared.run);
            const totalMs = performance.now() - s0;
            samples.push(t.reported ? { totalMs, queueMs: t.queueMs, serviceMs: t.serviceMs } : { totalMs });
          } else {
            await prepared.run();
            samples.push({ totalMs: performance.now() - s0 });
          }
        } catch (err) {
          errors++;
          firstError ??= (err as Error).message;
        }
      }
    }));
  } finally {
    clearInterval(timer);
  }
  const seconds = (performance.now() - t0) / 1000;
  if (samples.length === 0 && meta.signal?.aborted) throw new InterruptedError();
  if (samples.length === 0) throw new Error(`every ${meta.op} failed at concurrency ${concurrency}: ${firstError ?? 'no operation ran'}`);
  return {
    op: meta.op, hsms: meta.hsms, concurrency, ops: samples.length, errors, ...(firstError ? { firstError } : {}),
    seconds: Math.round(seconds * 1000) / 1000, opsPerSec: Math.round((samples.length / seconds) * 10) / 10,
    splitReported: collector !== undefined, latency: latencyStats(samples),
  };
}

/** Runs a concurrency sweep of one operation (after a short warm-up) and finds its knee. */
export async function runSweep(
  prepared: PreparedOp,
  meta: { op: string; hsms: number | null; concurrencies: number[]; budget: PointBudget; signal?: AbortSignal },
  collector: TimingCollector | undefined,
  onProgress?: (p: Progress) => void,
): Promise<{ points: BenchPoint[]; knee: Knee }> {
  // Warm-up (JIT, connections, key caches): not measured.
  const warm = Math.max(...meta.concurrencies);
  await runPoint(prepared, {
    op: meta.op, hsms: meta.hsms, concurrency: Math.min(warm, 16), budget: { count: Math.min(200, 4 * warm) },
    ...(meta.signal ? { signal: meta.signal } : {}),
  }, undefined);
  const points: BenchPoint[] = [];
  for (const concurrency of meta.concurrencies) {
    points.push(await runPoint(prepared, { ...meta, concurrency }, collector, onProgress));
    if (meta.signal?.aborted) throw new InterruptedError();
  }
  const knee = findKnee(points.map((p) => ({
    concurrency: p.concurrency, opsPerSec: p.opsPerSec, p99Ms: p.latency.p99.totalMs,
  })));
  return { points, knee };
}

/** The run was interrupted (Ctrl-C); what it made has been cleaned up by the time this reaches the user. */
export class InterruptedError extends Error {
  readonly code = 'CLI_ERR_INTERRUPTED';
  constructor() {
    super('interrupted: the temporary cluster and the keys made for the run were removed');
    this.name = 'InterruptedError';
  }
}
