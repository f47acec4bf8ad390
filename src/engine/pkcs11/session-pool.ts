// A bounded pool of PKCS#11 sessions. One operation per session at a time: PKCS#11 allows a
// single active operation per session (a second C_SignInit fails with CKR_OPERATION_ACTIVE), so
// concurrency comes from many sessions. Sessions carry the epoch they were opened in; after a
// recovery the token bumps the epoch and older sessions are retired instead of reused.
import { AbortedError, ClosedError } from './errors.js';

/** One open session, as the pool tracks it. */
export interface Session {
  readonly handle: Buffer;
  readonly epoch: number;
  /** Set when the handle is known to be invalid (module re-initialised, handle reused): never close it. */
  dead: boolean;
}

/** What the pool needs from its owner: open a session now, retire one it no longer wants. */
export interface SessionSource {
  readonly epoch: number;
  open(): Session;
  retire(s: Session): void;
}

interface Waiter { resolve(s: Session): void; reject(e: Error): void; signal?: AbortSignal; onAbort?: () => void }

/** Counts for gauges: how many sessions exist, are free, are busy, and how many callers wait. */
export interface PoolStats { size: number; open: number; idle: number; busy: number; waiting: number }

/** Hands out sessions, opening up to `size`, queueing callers beyond that in FIFO order. */
export class SessionPool {
  private readonly idle: Session[] = [];
  private readonly waiters: Waiter[] = [];
  private busy = 0;
  private opening = 0;
  private closed = false;
  private drained: (() => void) | undefined;

  constructor(private readonly source: SessionSource, readonly size: number) {}

  /** Resolves with a session for the caller's exclusive use; release() it when done. */
  acquire(signal?: AbortSignal): Promise<Session> {
    if (this.closed) return Promise.reject(new ClosedError('the PKCS#11 backend'));
    if (signal?.aborted) return Promise.reject(new AbortedError());
    const s = this.takeIdle();
    if (s) { this.busy++; return Promise.resolve(s); }
    if (this.busy + this.opening < this.size) {
      this.opening++;
      try {
        const fresh = this.source.open();
        this.busy++;
        return Promise.resolve(fresh);
      } catch (err) {
        return Promise.reject(err as Error);
      } finally {
        this.opening--;
      }
    }
    return new Promise<Session>((resolve, reject) => {
      const w: Waiter = { resolve, reject, signal };
      if (signal) {
        w.onAbort = () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new AbortedError());
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.waiters.push(w);
    });
  }

  /** Returns a session; `broken` ones (e.g. left with an operation active) are retired, not reused. */
  release(s: Session, broken = false): void {
    this.busy--;
    if (broken || s.epoch !== this.source.epoch || this.closed) this.source.retire(s);
    else this.idle.push(s);
    this.serveWaiters();
    if (this.closed && this.busy === 0) this.drained?.();
  }

  /** Retires every idle session (after a recovery); busy ones are retired as they come back. */
  retireIdle(): void {
    for (const s of this.idle.splice(0)) this.source.retire(s);
  }

  /** Current counts (for metrics and tests). */
  stats(): PoolStats {
    return {
      size: this.size, open: this.idle.length + this.busy, idle: this.idle.length, busy: this.busy,
      waiting: this.waiters.length,
    };
  }

  /** Refuses new work, fails waiters, waits for operations in flight, then retires every session. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters.splice(0)) {
      if (w.onAbort) w.signal?.removeEventListener('abort', w.onAbort);
      w.reject(new ClosedError('the PKCS#11 backend'));
    }
    if (this.busy > 0) await new Promise<void>((resolve) => { this.drained = resolve; });
    this.retireIdle();
  }

  private takeIdle(): Session | undefined {
    while (this.idle.length) {
      const s = this.idle.pop()!;
      if (s.epoch === this.source.epoch) return s;
      this.source.retire(s);
    }
    return undefined;
  }

  // A released or retired session frees a slot: give it (or a fresh session) to the oldest waiter.
  private serveWaiters(): void {
    while (this.waiters.length && !this.closed) {
      let s = this.takeIdle();
      if (!s) {
        if (this.busy + this.opening >= this.size) return;
        try {
          s = this.source.open();
        } catch (err) {
          const w = this.waiters.shift()!;
          if (w.onAbort) w.signal?.removeEventListener('abort', w.onAbort);
          w.reject(err as Error);
          continue;
        }
      }
      const w = this.waiters.shift()!;
      if (w.onAbort) w.signal?.removeEventListener('abort', w.onAbort);
      this.busy++;
      w.resolve(s);
    }
  }
}
