// `workers: N`: the primary forks N worker processes (node:cluster), each running its own Proxy
// with its own HSM client; node:cluster shares the listening sockets, so every worker serves the
// same ports. The primary hands each worker its settings over IPC (never the environment), waits
// until all are serving, restarts one that dies, and forwards reloads and graceful stops.
import cluster, { type Worker } from 'node:cluster';
import type { AddressInfo } from 'node:net';
import type { ReadinessReport } from '../../proxy/index.js';
import { WorkerReloadError, WorkerStartError } from '../errors.js';
import type { WorkerCommand, WorkerReport } from './protocol.js';

/** What the pool tells its owner (for logs). */
export type WorkerPoolEvent =
  | { event: 'ready'; worker: number; pid: number }
  | { event: 'exit'; worker: number; pid: number; code: number | null; signal: string | null; restartInMs: number }
  | { event: 'failed'; worker: number; pid: number; message: string };

/** How to run the workers. */
export interface WorkerPoolOptions<S> {
  count: number;
  /** The worker's entry file (keep the current extension: .ts under tsx, .js from dist/). */
  exec: string;
  execArgv?: string[];
  /** Sent to each worker as its first message; a function is asked afresh each time (ticket keys change). */
  settings: S | (() => S);
  /** How long a worker may take to report ready (default 60 s). */
  startTimeoutMs?: number;
  onEvent?: (e: WorkerPoolEvent) => void;
  /** Receives the event batches workers forward (see WorkerReport 'events'). */
  onWorkerEvents?: (events: Array<[string, unknown]>) => void;
}

const isReport = (m: unknown): m is WorkerReport => typeof m === 'object' && m !== null && typeof (m as { hsmproxy?: unknown }).hsmproxy === 'string';

/** The primary's side of `workers: N`. */
export class WorkerPool<S> {
  private readonly workers = new Map<number, Worker>();
  private readonly ready = new Set<number>();
  private listeners: Record<string, AddressInfo> = {};
  private stopping = false;
  private restarts = 0;
  private readinessAsks = 0;

  constructor(private readonly opts: WorkerPoolOptions<S>) {}

  /** Forks every worker; resolves when all serve, rejects (stopping the others) if one cannot start. */
  async start(): Promise<void> {
    cluster.setupPrimary({ exec: this.opts.exec, execArgv: this.opts.execArgv ?? process.execArgv });
    try {
      await Promise.all(Array.from({ length: this.opts.count }, (_, i) => this.fork(i + 1)));
    } catch (err) {
      await this.stop(0);
      throw err;
    }
  }

  /** Workers serving right now, and how many there should be. */
  get status(): { ready: number; count: number } {
    return { ready: this.ready.size, count: this.opts.count };
  }

  /** A listener's bound address, as the first worker reported it. */
  listenerAddress(name: string): AddressInfo | undefined {
    return this.listeners[name];
  }

  /** Sends the current settings to every connected worker (e.g. the next epoch's ticket keys). */
  refreshSettings(): void {
    const settings = this.settings();
    for (const w of this.workers.values()) {
      if (w.isConnected() && !w.isDead()) w.send({ hsmproxy: 'settings', settings } satisfies WorkerCommand<S>);
    }
  }

  /** Asks every worker to reload; rejects with the first refusal (that worker keeps its old config). */
  async reload(): Promise<void> {
    // A worker being replaced reads the config file afresh when it starts: nothing to ask it.
    const live = [...this.workers.values()].filter((w) => w.isConnected() && !w.isDead());
    const answers = live.map((w) => this.ask(w, { hsmproxy: 'reload' }, (m) => {
      if (m.hsmproxy === 'reloaded') return true;
      if (m.hsmproxy === 'reload-failed') throw new WorkerReloadError(w.id, m.message);
      return undefined;
    }));
    await Promise.all(answers);
  }

  /**
   * Each serving worker's own readiness (its Proxy: listeners open, not draining, an HSM holding its
   * keys in rotation). A worker that does not answer within `timeoutMs` is reported not ready.
   */
  async readiness(timeoutMs = 2_000): Promise<Array<{ worker: number; report: ReadinessReport }>> {
    const serving = [...this.workers].filter(([n, w]) => this.ready.has(n) && w.isConnected() && !w.isDead());
    return Promise.all(serving.map(async ([n, w]) => {
      const id = ++this.readinessAsks;
      let report: ReadinessReport = { ready: false, reasons: ['did not answer'] };
      try {
        await this.ask(w, { hsmproxy: 'readiness', id }, (m) => {
          if (m.hsmproxy !== 'readiness' || m.id !== id) return undefined;
          report = m.report;
          return true;
        }, timeoutMs);
      } catch {
        report = { ready: false, reasons: [`did not answer the readiness check within ${timeoutMs} ms`] };
      }
      return { worker: n, report };
    }));
  }

  /** Graceful stop: each worker drains within `deadlineMs`; one that has not exited 5 s later is killed. */
  async stop(deadlineMs: number): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.workers.values()].map(async (w) => {
      const exited = new Promise<void>((resolve) => {
        if (w.isDead()) return resolve();
        w.once('exit', () => resolve());
      });
      if (w.isConnected()) w.send({ hsmproxy: 'stop', deadlineMs } satisfies WorkerCommand<S>);
      else w.process.kill('SIGTERM');
      const timer = setTimeout(() => w.process.kill('SIGKILL'), deadlineMs + 5_000);
      await exited;
      clearTimeout(timer);
    }));
    this.workers.clear();
    this.ready.clear();
  }

  /** Forks worker `n`; resolves once it reports ready. */
  private fork(n: number): Promise<void> {
    const w = cluster.fork({ HSMPROXY_WORKER: String(n) });
    this.workers.set(n, w);
    // Messages sent before the worker listens would be lost, so it asks first.
    w.on('message', (m: unknown) => {
      if (!isReport(m)) return;
      if (m.hsmproxy === 'hello') w.send({ hsmproxy: 'settings', settings: this.settings() } satisfies WorkerCommand<S>);
      else if (m.hsmproxy === 'events' && Array.isArray(m.events)) this.opts.onWorkerEvents?.(m.events);
    });
    w.on('exit', (code, signal) => this.onExit(n, w, code, signal));
    const pid = w.process.pid ?? 0;
    return this.ask(w, undefined, (m) => {
      if (m.hsmproxy === 'failed') {
        this.opts.onEvent?.({ event: 'failed', worker: n, pid, message: m.message });
        throw new WorkerStartError(n, m.message);
      }
      if (m.hsmproxy !== 'ready') return undefined;
      if (Object.keys(this.listeners).length === 0) this.listeners = m.listeners;
      this.ready.add(n);
      this.opts.onEvent?.({ event: 'ready', worker: n, pid });
      return true;
    }, this.opts.startTimeoutMs ?? 60_000);
  }

  private settings(): S {
    const s = this.opts.settings;
    // S itself is never a function (it crosses IPC as JSON), so a function here is the getter.
    return typeof s === 'function' ? (s as () => S)() : s;
  }

  private onExit(n: number, w: Worker, code: number | null, signal: string | null): void {
    if (this.workers.get(n) !== w) return;
    this.ready.delete(n);
    if (this.stopping) return;
    // Back off when workers keep dying (a bad key, an HSM that refuses the login).
    const restartInMs = Math.min(5_000, 100 * 2 ** Math.min(this.restarts++, 6));
    this.opts.onEvent?.({ event: 'exit', worker: n, pid: w.process.pid ?? 0, code, signal, restartInMs });
    setTimeout(() => {
      if (this.stopping) return;
      this.fork(n).then(
        () => { this.restarts = 0; }, () => { /* reported through onEvent; its exit schedules the next try */ },
      );
    }, restartInMs).unref();
  }

  /**
   * Sends `command` (if any) and waits for the first report `accept` returns true for (or throws on);
   * rejects if the worker exits first or `timeoutMs` passes.
   */
  private ask(
    w: Worker, command: WorkerCommand<S> | undefined, accept: (m: WorkerReport) => true | undefined, timeoutMs = 60_000,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        w.off('message', onMessage);
        w.off('exit', onExit);
        if (err) reject(err);
        else resolve();
      };
      const onMessage = (m: unknown) => {
        if (!isReport(m)) return; // prom-client's metrics requests share the channel
        try {
          if (accept(m)) done();
        } catch (err) {
          done(err as Error);
        }
      };
      const onExit = (code: number | null) => done(new WorkerStartError(w.id, `the worker process exited (code ${code ?? 'none'}) before answering`));
      const timer = setTimeout(() => done(new WorkerStartError(w.id, `no answer within ${timeoutMs} ms`)), timeoutMs);
      w.on('message', onMessage);
      w.once('exit', onExit);
      if (command) w.send(command);
    });
  }
}
