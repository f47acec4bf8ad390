// Admission control for signatures: every ClientHello costs an HSM signature before the peer has
// proved anything, so the number in flight is capped, waiting is bounded in length and time, and
// excess load is shed at once with ENGINE_ERR_OVERLOADED instead of piling up behind the HSMs.
// Waiting is fair between clients (round-robin), so one client's flood delays mostly itself.
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

/**
 * A counting gate with a bounded queue, a queue deadline and AbortSignal support. Waiting callers
 * are served round-robin by client (the `client` of `run`), FIFO within one client: a client that
 * floods the gate queues behind itself, and everyone else's next request is at most one turn away.
 */
export class Admission {
  readonly maxInFlight: number;
  readonly maxQueue: number;
  readonly queueTimeoutMs: number;
  private running = 0;
  /** Waiters by client; Map order is the round-robin order (a served client moves to the end). */
  private readonly lanes = new Map<string, Waiter[]>();
  private waiting = 0;
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
    return this.waiting;
  }

  /** Clients with a caller waiting. */
  get queuedClients(): number {
    return this.lanes.size;
  }

  /**
   * Runs `fn` once a slot is free; rejects with OverloadedError or AbortedError without running it.
   * `client` names whose request it is, for round-robin between clients (default: one shared lane).
   */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal, client = ''): Promise<T> {
    await this.acquire(signal, client);
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  private acquire(signal: AbortSignal | undefined, client: string): Promise<void> {
    if (signal?.aborted) return Promise.reject(new AbortedError());
    if (this.running < this.maxInFlight && this.waiting === 0) {
      this.running++;
      return Promise.resolve();
    }
    if (this.waiting >= this.maxQueue) {
      this.shed++;
      return Promise.reject(new OverloadedError(`too many signatures in flight (${this.running} running, ${this.waiting} queued); shedding load`));
    }
    return new Promise<void>((resolve, reject) => {
      const finish = (): void => {
        waiter.settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.remove(client, waiter);
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
      const lane = this.lanes.get(client);
      if (lane) lane.push(waiter);
      else this.lanes.set(client, [waiter]);
      this.waiting++;
    });
  }

  private remove(client: string, waiter: Waiter): void {
    const lane = this.lanes.get(client);
    if (!lane) return;
    const i = lane[0] === waiter ? 0 : lane.indexOf(waiter);
    if (i < 0) return;
    lane.splice(i, 1);
    this.waiting--;
    if (lane.length === 0) this.lanes.delete(client);
  }

  private release(): void {
    this.running--;
    if (this.running >= this.maxInFlight) return;
    // The client first in round-robin order gets the slot, then goes to the back of the order.
    for (const [client, lane] of this.lanes) {
      const next = lane[0]!;
      if (lane.length > 1) {
        this.lanes.delete(client);
        this.lanes.set(client, lane);
      }
      next.grant();
      return;
    }
  }
}

function positive(n: number, name: string): number {
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`${name} must be a positive number`);
  return n;
}
