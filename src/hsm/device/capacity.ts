// The capacity model: a fixed number of crypto units, a bounded FIFO queue in front of them,
// and per-operation rates from a profile. Each request does its real crypto on a unit, then
// holds the unit for the rest of the service time the profile prescribes (units / rate), so
// an HSM with rate R saturates at R ops/s and latency grows with queue depth as on hardware.
// Waiting is a timer, never a busy loop: the event loop stays free.
import { BusyError, InvalidArgumentError } from './errors.js';
import type { CryptoResult } from './types.js';

/**
 * A capacity profile. `rates` maps an operation key to ops/s for the whole HSM. Keys are
 * looked up as `op:alg` (e.g. 'sign:rsa-2048'), then `op:family` ('sign:rsa'), then `op`
 * ('sign'), then '*'; an operation
 * with no rate costs only its real crypto time.
 */
export interface CapacityProfile {
  name: string;
  units: number;
  rates: Record<string, number>;
  /** Requests that may wait for a unit; one more is refused at once with BusyError. */
  maxQueue: number;
}

/** Names of the built-in profiles. */
export type CapacityProfileName = 'unlimited' | 'hsm1.medium' | 'hsm2m.medium';

// Derived figures (only the RSA-2048 and P-256 sign rates are published by AWS, as per-cluster
// numbers that work out to these per-HSM rates). The rest scale with the cost of the math in
// software: RSA private ops grow ~3.4x from 2048→3072 and ~7x to 4096; RSA public ops are ~20x
// cheaper than private ones; P-384 costs ~2x P-256; ECDSA verify ~1.2x sign; symmetric ops and
// HMAC are bounded by the device's command overhead, not by the cipher.
const HW_COMMON: Record<string, number> = {
  'sign:rsa-2048': 1000,
  'sign:rsa-3072': 300,
  'sign:rsa-4096': 140,
  'decrypt:rsa-2048': 1000,
  'decrypt:rsa-3072': 300,
  'decrypt:rsa-4096': 140,
  'unwrap:rsa-2048': 1000,
  'unwrap:rsa-3072': 300,
  'unwrap:rsa-4096': 140,
  'verify:rsa': 20000,
  'encrypt:rsa': 20000,
  'wrap:rsa': 20000,
  'generate:rsa-2048': 20,
  'generate:rsa-3072': 6,
  'generate:rsa-4096': 2,
  'generate:aes': 2000,
  'generate:generic-secret': 2000,
  'import': 500,
  '*': 10000,
};

/** Built-in profiles: `unlimited` (real crypto only) and the published hardware models. */
export const CAPACITY_PROFILES: Record<CapacityProfileName, CapacityProfile> = {
  // unlimited: enough units that nothing queues; only the real crypto costs time.
  unlimited: { name: 'unlimited', units: 4096, rates: {}, maxQueue: 100_000 },
  'hsm1.medium': {
    name: 'hsm1.medium',
    units: 8,
    rates: { ...HW_COMMON, 'sign:ec-p256': 250, 'sign:ec-p384': 125, 'verify:ec-p256': 200, 'verify:ec-p384': 100, 'generate:ec-p256': 200, 'generate:ec-p384': 100 },
    maxQueue: 2000,
  },
  'hsm2m.medium': {
    name: 'hsm2m.medium',
    units: 8,
    rates: { ...HW_COMMON, 'sign:ec-p256': 1500, 'sign:ec-p384': 750, 'verify:ec-p256': 1200, 'verify:ec-p384': 600, 'generate:ec-p256': 1200, 'generate:ec-p384': 600 },
    maxQueue: 2000,
  },
};

/** Resolves a profile name or checks a custom profile. */
export function resolveCapacityProfile(p: CapacityProfileName | CapacityProfile | undefined): CapacityProfile {
  if (p === undefined) return CAPACITY_PROFILES.unlimited;
  if (typeof p === 'string') {
    const found = CAPACITY_PROFILES[p];
    if (!found) throw new InvalidArgumentError(`unknown capacity profile ${p}; use one of ${Object.keys(CAPACITY_PROFILES).join(', ')} or a custom { units, rates, maxQueue }`);
    return found;
  }
  if (!Number.isInteger(p.units) || p.units < 1) throw new InvalidArgumentError('capacity profile: units must be a positive integer');
  if (!Number.isInteger(p.maxQueue) || p.maxQueue < 0) throw new InvalidArgumentError('capacity profile: maxQueue must be a non-negative integer');
  for (const [op, r] of Object.entries(p.rates)) {
    if (!(r > 0) || !Number.isFinite(r)) throw new InvalidArgumentError(`capacity profile: rate for ${op} must be a positive number of ops/s`);
  }
  return { ...p, name: p.name ?? 'custom', rates: { ...p.rates } };
}

interface Waiter { start: () => void }
interface Unit { virtualFree: number; handedOver: boolean }

const UTILISATION_WINDOW_MS = 5000;
const BUCKET_MS = 100;
// Most timer lateness (and event-loop delay) a busy unit may make up on its next requests.
const MAX_CREDIT_MS = 50;

/** Crypto units plus their FIFO queue; `run` executes work under the profile's timing. */
export class CapacityModel {
  readonly profile: CapacityProfile;
  /** rateFor's answers by operation key. */
  private readonly rates = new Map<string, number | undefined>();
  private readonly free: Unit[] = [];
  private readonly queue: Waiter[] = [];
  private inService = 0;
  // Busy unit-milliseconds per 100 ms bucket (keyed by bucket number), for utilisation.
  private readonly busy = new Map<number, number>();
  private readonly running = new Map<number, number>();
  private seq = 0;

  constructor(profile: CapacityProfileName | CapacityProfile | undefined) {
    this.profile = resolveCapacityProfile(profile);
    for (let i = 0; i < this.profile.units; i++) this.free.push({ virtualFree: 0, handedOver: false });
  }

  /** Service time floor in ms for an operation key (0 if the profile has no rate for it). */
  minServiceMs(opKey: string): number {
    const rate = this.rateFor(opKey);
    return rate === undefined ? 0 : (1000 * this.profile.units) / rate;
  }

  /** Runs `work` on a crypto unit once one is free; rejects at once with BusyError if the queue is full. */
  run<T>(opKey: string, work: () => T | Promise<T>): Promise<CryptoResult<T>> {
    // Queue wait is the time spent waiting for a unit (0 when one was free); service runs from
    // the grant to the end, so it includes any wait for the event loop, as a device's would.
    const queuedAt = performance.now();
    if (this.queue.length === 0) {
      const unit = this.free.pop();
      if (unit) {
        this.inService++;
        if (this.rateFor(opKey) === undefined) return this.serveNow(unit, queuedAt, work);
        return this.serve(unit, queuedAt, queuedAt, opKey, work);
      }
    }
    if (this.queue.length >= this.profile.maxQueue) return Promise.reject(new BusyError(this.queue.length));
    return new Promise((resolve) => {
      this.queue.push({
        start: () => {
          const unit = this.free.pop();
          // release() only calls start() after returning a unit, so one is always there.
          if (!unit) throw new Error('capacity model invariant: no free unit for a started waiter');
          this.inService++;
          resolve(this.serve(unit, queuedAt, performance.now(), opKey, work));
        },
      });
    });
  }

  // serve() for a request granted at once with no rate to keep (`unlimited`, the hot path): the
  // same bookkeeping without an async frame, so the answer is not held for extra microtask turns.
  private serveNow<T>(unit: Unit, begin: number, work: () => T | Promise<T>): Promise<CryptoResult<T>> {
    const id = ++this.seq;
    this.running.set(id, begin);
    const done = (): number => {
      const end = performance.now();
      unit.virtualFree = begin;
      this.running.delete(id);
      this.recordBusy(begin, end);
      this.release(unit);
      return Math.round((end - begin) * 1000);
    };
    let out: T | Promise<T>;
    try {
      out = work();
    } catch (e) {
      done();
      return Promise.reject(e);
    }
    if (out instanceof Promise) {
      return out.then(
        (result) => ({ result, queueWaitUs: 0, serviceUs: done() }),
        (e: unknown) => {
          done();
          throw e;
        },
      );
    }
    return Promise.resolve({ result: out, queueWaitUs: 0, serviceUs: done() });
  }

  // Serves one request on `unit`, granted at `begin`: the work, then the rest of the profile's service time.
  private async serve<T>(
    unit: Unit, queuedAt: number, begin: number, opKey: string, work: () => T | Promise<T>,
  ): Promise<CryptoResult<T>> {
    const queueWaitUs = Math.round((begin - queuedAt) * 1000);
    const id = ++this.seq;
    this.running.set(id, begin);
    try {
      const minServiceMs = this.minServiceMs(opKey);
      // A unit handed straight from one request to the next has been busy all along: schedule
      // from the previous ideal deadline so late timers do not lower the rate (bounded credit).
      const scheduled = unit.handedOver ? Math.min(begin, Math.max(unit.virtualFree, begin - MAX_CREDIT_MS)) : begin;
      const deadline = scheduled + minServiceMs;
      // Synchronous work (most crypto) is not awaited: no extra turn of the microtask queue.
      const out = work();
      const result = out instanceof Promise ? await out : out;
      let end = performance.now();
      // Timers have millisecond granularity and may fire a little early: wait until the deadline really passed.
      if (minServiceMs > 0) {
        for (; deadline - end > 0.05; end = performance.now()) {
          await new Promise((r) => setTimeout(r, Math.max(1, deadline - end)));
        }
      }
      unit.virtualFree = deadline;
      return { result, queueWaitUs, serviceUs: Math.round((end - begin) * 1000) };
    } finally {
      this.running.delete(id);
      this.recordBusy(begin, performance.now());
      this.release(unit);
    }
  }

  /** Requests waiting for a unit. */
  get queued(): number {
    return this.queue.length;
  }

  /** Requests being served right now. */
  get active(): number {
    return this.inService;
  }

  /** Busy fraction of all units over the last few seconds, 0..1. */
  utilisation(): number {
    const now = performance.now();
    const from = now - UTILISATION_WINDOW_MS;
    let busyMs = 0;
    for (const [bucket, ms] of this.busy) if ((bucket + 1) * BUCKET_MS > from) busyMs += ms;
    for (const s of this.running.values()) busyMs += now - Math.max(s, from);
    return Math.min(1, busyMs / (UTILISATION_WINDOW_MS * this.profile.units));
  }

  private rateFor(opKey: string): number | undefined {
    // The profile is fixed for the model's life and op keys are few: look each up once, not per request.
    if (this.rates.has(opKey)) return this.rates.get(opKey);
    // 'sign:rsa-2048' → 'sign:rsa' → 'sign' → '*'
    const r = this.profile.rates;
    const op = opKey.split(':')[0] ?? opKey;
    const family = opKey.replace(/-p?\d+$/, '');
    const rate = r[opKey] ?? r[family] ?? r[op] ?? r['*'];
    this.rates.set(opKey, rate);
    return rate;
  }

  private release(unit: Unit): void {
    this.inService--;
    const next = this.queue.shift();
    unit.handedOver = next !== undefined;
    this.free.push(unit);
    if (next) next.start();
  }

  // A whole request is booked to the bucket it ended in: close enough for a 5 s window.
  private recordBusy(start: number, end: number): void {
    const bucket = Math.floor(end / BUCKET_MS);
    this.busy.set(bucket, (this.busy.get(bucket) ?? 0) + (end - start));
    if (this.busy.size > UTILISATION_WINDOW_MS / BUCKET_MS + 2) {
      const horizon = Math.floor((end - UTILISATION_WINDOW_MS) / BUCKET_MS) - 1;
      for (const b of this.busy.keys()) if (b < horizon) this.busy.delete(b);
    }
  }
}
