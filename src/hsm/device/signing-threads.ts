// The HSM's crypto units as threads: asymmetric signatures run on the main thread and on a small
// pool of worker_threads of the same process (sign-worker.ts), so one HSM uses more than one
// core, as an appliance uses several crypto units. Keys go to a worker as KeyObjects inside the
// process; they never leave it.
// Signatures asked for in one turn are dispatched together (a microtask later). A few are signed
// on the spot (no thread hop: the common case at low load). Of a large batch, workers with room
// take chunks off the back (one message each, at most two out per worker) and the main thread
// signs from the front, reading workers' answers between its signatures so one that finished
// gets the next chunk at once. The main thread never waits for a worker; a worker's chunk
// adapts to how promptly it answers. A worker that dies hands its jobs back to the main thread;
// a pool whose workers cannot start signs everything on the main thread.
import { type KeyObject } from 'node:crypto';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { signRaw, type SignPlan } from './mechanisms.js';
import type { FromWorker, ToWorker } from './sign-worker.js';

// The worker entry next to this file, with this file's extension (.ts under tsx, .js from dist/).
const EXT = extname(fileURLToPath(import.meta.url));
const WORKER_URL = new URL(`./sign-worker${EXT}`, import.meta.url);

// A worker of a process run under tsx does not get tsx's loader on Node 20 (its --import is not
// applied to workers): the entry is then imported after registering tsx in the worker itself.
function newWorker(): Worker {
  if (EXT !== '.ts') return new Worker(WORKER_URL);
  const tsx = import.meta.resolve('tsx/esm/api');
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(WORKER_URL.href)}); })`;
  return new Worker(boot, { eval: true });
}

// Batches a worker may have at once: the second waits in its port while it signs the first.
const MAX_BATCHES = 2;
const NO_JOBS: Job[] = [];

/** Tuning of SigningThreads. */
export interface SigningThreadsOptions {
  /** Worker threads (0: every signature on the main thread). */
  workers: number;
  /**
   * Most jobs in one message to a worker (default 32). Each worker's chunk starts at 8 (or this,
   * if less) and adapts: one more per batch answered promptly, halved (not below the start) when
   * a batch came back late (the worker was not scheduled: more runnable threads than cores), so
   * less waits on a worker that runs late and one that keeps up takes more.
   */
  chunk?: number;
  /**
   * Jobs that must be waiting before workers get any (default 16). Below it the main thread
   * signs them all: a message to a worker and back costs ~10-15 us of CPU on each side, which
   * only pays when the main thread is behind (measured on 2 cores: with smaller batches a worker
   * added CPU per signature and lowered signs/s at 16 in flight).
   */
  minBatch?: number;
}

/** Counters for tests and benchmarks. */
export interface SigningThreadStats {
  /** Signatures made on the main thread / on workers. */
  mainSigns: number;
  workerSigns: number;
  /** Messages carrying jobs to workers (each a batch). */
  batches: number;
  /** Workers started, and those that died (their jobs went back to the main thread). */
  started: number;
  died: number;
}

interface Job {
  key: KeyObject;
  plan: SignPlan;
  data: Buffer;
  resolve: (sig: Buffer) => void;
  reject: (err: Error) => void;
}

interface WorkerThread {
  worker: Worker;
  port: MessagePort;
  ready: boolean;
  dead: boolean;
  /** Batches sent and not answered yet, oldest first (answers come back in order). */
  batches: Job[][];
  /** When the oldest batch out was sent, or when the one before it came back (whichever is later). */
  since: number;
  /** Jobs in its next message. */
  chunk: number;
  keys: Set<number>;
  plans: Set<number>;
  /** Settles when the worker is ready or dead. */
  started: Promise<void>;
  onStarted: () => void;
}

/** A failure inside a signing worker (OpenSSL refused the key or the data). */
export class SigningThreadError extends Error {
  readonly code = 'HSM_ERR_INTERNAL';
}

/** Where one HSM computes its asymmetric signatures. */
export class SigningThreads {
  readonly stats: SigningThreadStats = { mainSigns: 0, workerSigns: 0, batches: 0, started: 0, died: 0 };
  private readonly workers: number;
  private readonly threads: WorkerThread[] = [];
  private pending: Job[] = [];
  // The batch being signed (dispatch): the main thread takes from head, workers from tail.
  private queue: Job[] = NO_JOBS;
  private head = 0;
  private tail = 0;
  private readonly chunk: number;
  private readonly minBatch: number;
  private readonly minChunk: number;
  private scheduled = false;
  // Workers are started once, at the first batch (or warm()); if they cannot be, never again.
  private startTried = false;
  private closed = false;
  private readonly keyNumbers = new WeakMap<KeyObject, number>();
  private readonly planNumbers = new Map<SignPlan, number>();
  private nextKey = 1;
  // A key object the HSM dropped (deleted, session ended) is dropped by the workers too.
  private readonly forgetting = new FinalizationRegistry<number>((n) => this.forget(n));
  private readonly dispatchNow = (): void => this.dispatch();

  constructor(opts: SigningThreadsOptions) {
    this.workers = Math.max(0, Math.floor(opts.workers));
    this.chunk = Math.max(1, Math.floor(opts.chunk ?? 32));
    this.minBatch = Math.max(2, Math.floor(opts.minBatch ?? 16));
    this.minChunk = Math.min(this.chunk, 8);
  }

  /** Signs `data` under `plan` with a private key; settles once a thread has. */
  sign(key: KeyObject, plan: SignPlan, data: Buffer): Promise<Buffer> {
    if (this.workers === 0 || this.closed) return new Promise((resolve) => resolve(this.signHere(key, plan, data)));
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.push({ key, plan, data, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(this.dispatchNow);
      }
    });
  }

  /** Starts the workers now rather than at the first batch; resolves once each is ready (or failed). */
  async warm(): Promise<void> {
    if (!this.startTried && !this.closed) this.start();
    await Promise.all(this.threads.map((s) => s.started));
  }

  /** Workers ready to sign. */
  get readyWorkers(): number {
    return this.threads.filter((s) => s.ready && !s.dead).length;
  }

  /** Stops the workers; what they were signing is signed on the main thread. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.threads.map((s) => s.worker.terminate()));
  }

  private signHere(key: KeyObject, plan: SignPlan, data: Buffer): Buffer {
    this.stats.mainSigns++;
    return signRaw(key, plan, data);
  }

  private run(j: Job): void {
    try {
      j.resolve(this.signHere(j.key, j.plan, j.data));
    } catch (e) {
      j.reject(e as Error);
    }
  }

  // Signs what was asked for this turn: workers with room take chunks off the back, the main
  // thread signs from the front until none is left, reading workers' answers between signatures
  // so a worker that finished gets the next chunk at once. The main thread never waits for a
  // worker: on a machine with more runnable threads than cores a woken worker may run late, and
  // then the main thread simply signs more itself.
  private dispatch(): void {
    this.scheduled = false;
    const q = this.pending;
    if (q.length === 0) return;
    this.pending = [];
    if (!this.startTried && q.length > 1 && !this.closed) this.start();
    this.queue = q;
    this.head = 0;
    this.tail = q.length;
    this.feed();
    while (this.head < this.tail) {
      this.run(q[this.head++] as Job);
      this.poll();
    }
    this.queue = NO_JOBS;
    this.head = 0;
    this.tail = 0;
  }

  // Hands chunks off the back of a large enough queue to workers with room (at most half of what is left).
  private feed(): void {
    if (this.closed) return;
    for (const s of this.threads) {
      const left = this.tail - this.head;
      if (left < this.minBatch) return;
      if (!s.ready || s.dead || s.batches.length >= MAX_BATCHES) continue;
      const k = Math.min(s.chunk, left >> 1);
      this.send(s, this.queue.slice(this.tail - k, this.tail));
      this.tail -= k;
    }
  }

  // Reads the answers workers sent while the main thread was signing, without a turn of the loop.
  private poll(): void {
    for (const s of this.threads) {
      if (s.batches.length === 0 || s.dead) continue;
      const m = receiveMessageOnPort(s.port) as { message: FromWorker } | undefined;
      if (m) this.answered(s, m.message);
    }
  }

  private send(s: WorkerThread, batch: Job[]): void {
    const msg: ToWorker = {};
    const slots: number[] = new Array(batch.length);
    const planOf: number[] = new Array(batch.length);
    const ends: number[] = new Array(batch.length);
    let total = 0;
    for (let i = 0; i < batch.length; i++) {
      const j = batch[i] as Job;
      slots[i] = this.keyNumber(s, j.key, msg);
      planOf[i] = this.planNumber(s, j.plan, msg);
      total += j.data.length;
      ends[i] = total;
    }
    // Its own ArrayBuffer: postMessage would copy the whole of a pooled one.
    const bytes = Buffer.allocUnsafeSlow(total);
    for (let i = 0, at = 0; i < batch.length; i++) at += (batch[i] as Job).data.copy(bytes, at);
    msg.slots = slots;
    msg.planOf = planOf;
    msg.bytes = bytes;
    msg.ends = ends;
    if (s.batches.length === 0) s.since = performance.now();
    s.batches.push(batch);
    this.stats.batches++;
    // Held while a batch is out: a caller awaiting a signature keeps the process alive.
    s.port.ref();
    s.port.postMessage(msg);
  }

  private keyNumber(s: WorkerThread, key: KeyObject, msg: ToWorker): number {
    let n = this.keyNumbers.get(key);
    if (n === undefined) {
      n = this.nextKey++;
      this.keyNumbers.set(key, n);
      this.forgetting.register(key, n);
    }
    if (!s.keys.has(n)) {
      s.keys.add(n);
      (msg.keys ??= []).push([n, key]);
    }
    return n;
  }

  private planNumber(s: WorkerThread, plan: SignPlan, msg: ToWorker): number {
    let n = this.planNumbers.get(plan);
    if (n === undefined) {
      n = this.planNumbers.size + 1;
      this.planNumbers.set(plan, n);
    }
    if (!s.plans.has(n)) {
      s.plans.add(n);
      (msg.plans ??= []).push([n, plan]);
    }
    return n;
  }

  private forget(n: number): void {
    for (const s of this.threads) {
      if (!s.keys.delete(n) || s.dead) continue;
      const msg: ToWorker = { forget: [n] };
      s.port.postMessage(msg);
    }
  }

  // A batch came back: settle its jobs, and hand the worker what waits meanwhile.
  private answered(s: WorkerThread, m: FromWorker): void {
    const batch = s.batches.shift() ?? [];
    if (s.batches.length === 0) s.port.unref();
    // Late: more than twice its signing time and a millisecond over it.
    const now = performance.now();
    const took = now - s.since;
    s.since = now;
    if (took > 2 * m.busyMs && took - m.busyMs > 1) s.chunk = Math.max(this.minChunk, s.chunk >> 1);
    else if (s.chunk < this.chunk) s.chunk++;
    const bytes = Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength);
    let failed = -1;
    let at = 0;
    let errorAt = 0;
    if (m.errors && m.errors.length > 0) failed = m.errors[0]![0];
    for (let i = 0; i < batch.length; i++) {
      const j = batch[i] as Job;
      const end = m.ends[i]!;
      if (i === failed) {
        j.reject(new SigningThreadError(m.errors![errorAt]![1]));
        errorAt++;
        failed = m.errors![errorAt]?.[0] ?? -1;
      } else {
        this.stats.workerSigns++;
        j.resolve(bytes.subarray(at, end));
      }
      at = end;
    }
    // More may wait in the queue the main thread is working through.
    this.feed();
  }

  private start(): void {
    this.startTried = true;
    for (let i = 0; i < this.workers; i++) {
      let worker: Worker;
      try {
        worker = newWorker();
      } catch {
        return; // no workers here: the main thread signs everything
      }
      const { port1, port2 } = new MessageChannel();
      let onStarted = (): void => undefined;
      const started = new Promise<void>((resolve) => { onStarted = resolve; });
      const s: WorkerThread = {
        worker, port: port1, ready: false, dead: false, batches: [], since: 0, chunk: this.minChunk,
        keys: new Set(), plans: new Set(), started, onStarted,
      };
      this.threads.push(s);
      this.stats.started++;
      worker.unref();
      port1.unref();
      port1.on('message', (m: FromWorker | { ready: true }) => {
        if ('ready' in m) {
          s.ready = true;
          s.onStarted();
          return;
        }
        if (s.batches.length > 0) this.answered(s, m);
      });
      worker.on('error', () => this.lost(s));
      worker.on('exit', () => this.lost(s));
      worker.postMessage({ port: port2 }, [port2]);
    }
  }

  // A worker died (or the pool closed): its batch is signed here, it gets no more.
  private lost(s: WorkerThread): void {
    if (s.dead) return;
    s.dead = true;
    s.onStarted();
    if (!this.closed) this.stats.died++;
    const batches = s.batches;
    s.batches = [];
    s.port.close();
    for (const b of batches) for (const j of b) this.run(j);
    if (this.threads.every((x) => x.dead)) {
      const left = this.pending;
      this.pending = [];
      for (const j of left) this.run(j);
    }
  }
}
