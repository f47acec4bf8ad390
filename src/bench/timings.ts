// The HSM's own account of each request: hsm/client publishes `hsmproxy:hsm:request` (queue
// wait and service time reported in the response) on node:diagnostics_channel; this ties each
// message to the benchmark operation that caused it through AsyncLocalStorage, so every sample
// gets its own split even with hundreds of requests in flight.
import { AsyncLocalStorage } from 'node:async_hooks';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { HsmRequestEvent } from '../hsm/client/connection.js';

const CHANNEL = 'hsmproxy:hsm:request';

/** What the HSM reported for one operation (the last attempt's, if the client failed over). */
export interface HsmTimings {
  queueMs: number;
  serviceMs: number;
  reported: boolean;
}

/** Collects HSM timings per operation while open; close() unsubscribes. */
export class TimingCollector {
  private readonly store = new AsyncLocalStorage<HsmTimings>();
  private readonly onMessage = (msg: unknown): void => {
    const t = this.store.getStore();
    if (!t) return;
    const ev = msg as HsmRequestEvent;
    t.queueMs = ev.queueWaitMs;
    t.serviceMs = ev.serviceMs;
    t.reported = true;
  };

  constructor() {
    subscribe(CHANNEL, this.onMessage);
  }

  /** Runs one operation and returns the HSM's timings for it. */
  async measure(op: () => Promise<unknown>): Promise<HsmTimings> {
    const t: HsmTimings = { queueMs: 0, serviceMs: 0, reported: false };
    await this.store.run(t, op);
    return t;
  }

  /** Stops listening. */
  close(): void {
    unsubscribe(CHANNEL, this.onMessage);
  }
}
