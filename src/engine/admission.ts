// Admission control for signatures: every ClientHello costs an HSM signature before the peer has
// proved anything, so the number in flight is capped, waiting is bounded in length and time, and
// excess load is shed at once with ENGINE_ERR_OVERLOADED instead of piling up behind the HSMs.
import { AbortedError, OverloadedError } from './errors.js';

/** Limits for one admission gate (the engine's global one, or one per listener). */
export interface AdmissionOptions {
  /** Signatures allowed in flight at once. */
  maxInFlight?: number;
  /** Callers allowed to wait for a slot; beyond that, shed immediately. */
  maxQueue?: number;
  /** Longest wait for a slot before shedding, in ms. */
  queueTimeoutMs?: number;
}

interface Waiter {
  grant(): void;
  settled: boolean;
}

/** A counting gate with a bounded FIFO queue, a queue deadline and AbortSignal support. */
export class Admission {
  readonly maxInFlight: number;
  readonly maxQueue: number;
  readonly queueTimeoutMs: number;
  private running = 0;
  private readonly queue: Waiter[] = [];
  /** Requests shed since creation (queue full or queue deadline passed). */
  shed = 0;

  constructor(opts: AdmissionOptions = {}) {
    this.maxInFlight = positive(opts.maxInFlight ?? 256, 'maxInFlight');
    this.maxQueue = Math.max(0, Math.floor(opts.maxQueue ?? 1024));
    this.queueTimeoutMs = positive(opts.queueTimeoutMs ?? 2000, 'queueTimeoutMs');
  }

  /** Signatures currently running. */
  get inFlight(): number {
    return this.running;
  }

  /** Callers currently waiting for a slot. */
  get queued(): number {
    return this.queue.length;
  }

  /** Runs `fn` once a slot is free; rejects with OverloadedError or AbortedError without running it. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(signal);
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  private acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(new AbortedError());
    if (this.running < this.maxInFlight && this.queue.length === 0) {
      this.running++;
      return Promise.resolve();
    }
    if (this.queue.length >= this.maxQueue) {
      this.shed++;
      return Promise.reject(new OverloadedError(`too many signatures in flight (${this.running} running, ${this.queue.length} queued); shedding load`));
    }
    return new Promise<void>((resolve, reject) => {
      const finish = (): void => {
        waiter.settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const i = this.queue.indexOf(waiter);
        if (i >= 0) this.queue.splice(i, 1);
      };
      const waiter: Waiter = {
        settled: false,
        grant: () => {
          finish();
          this.running++;
          resolve();
        },
      };
      const onAbort = (): void => {
        finish();
        reject(new AbortedError());
      };
      const timer = setTimeout(() => {
        finish();
        this.shed++;
        reject(new OverloadedError(`no signature slot within ${this.queueTimeoutMs} ms (${this.running} running); the HSMs are behind, shedding load`));
      }, this.queueTimeoutMs);
      timer.unref?.();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiter);
    });
  }

  private release(): void {
    this.running--;
    const next = this.queue.find((w) => !w.settled);
    if (next && this.running < this.maxInFlight) next.grant();
  }
}

function positive(n: number, name: string): number {
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`${name} must be a positive number`);
  return n;
}
