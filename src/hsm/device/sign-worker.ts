// A signing worker of one HSM (signing-threads.ts): a worker_thread of the HSM's own process, so key
// material never leaves the process. It is sent the private KeyObjects and signature plans it
// needs once (by number), then batches of jobs on its own MessagePort, and answers each batch
// with one message. A batch's data travel packed in one buffer, and so do the signatures.
import { parentPort, type MessagePort } from 'node:worker_threads';
import type { KeyObject } from 'node:crypto';
import { signRaw, type SignPlan } from './mechanisms.js';

/** Main thread → worker: keys and plans to hold, keys to drop, and a batch of jobs. */
export interface ToWorker {
  keys?: [number, KeyObject][];
  plans?: [number, SignPlan][];
  forget?: number[];
  /** Per job: its key's number and its plan's number. */
  slots?: number[];
  planOf?: number[];
  /** The jobs' data back to back; job i's ends at ends[i]. */
  bytes?: Uint8Array;
  ends?: number[];
}

/** Worker → main thread: one batch's signatures back to back (job i's ends at ends[i]); failures by job index. */
export interface FromWorker {
  bytes: Uint8Array;
  ends: number[];
  errors?: [number, string][];
  /** Milliseconds the batch took to sign, for the pool's pacing. */
  busyMs: number;
}

function serve(port: MessagePort): void {
  const keys = new Map<number, KeyObject>();
  const plans = new Map<number, SignPlan>();
  port.on('message', (m: ToWorker) => {
    for (const [n, key] of m.keys ?? []) keys.set(n, key);
    for (const [n, plan] of m.plans ?? []) plans.set(n, plan);
    for (const n of m.forget ?? []) keys.delete(n);
    const slots = m.slots;
    if (!slots || slots.length === 0) return;
    const input = Buffer.from(m.bytes!.buffer, m.bytes!.byteOffset, m.bytes!.byteLength);
    const sigs: Buffer[] = new Array(slots.length);
    const ends: number[] = new Array(slots.length);
    let errors: [number, string][] | undefined;
    const began = performance.now();
    let start = 0;
    let total = 0;
    for (let i = 0; i < slots.length; i++) {
      const end = m.ends![i]!;
      let sig: Buffer = EMPTY;
      try {
        const key = keys.get(slots[i]!);
        const plan = plans.get(m.planOf![i]!);
        if (!key || !plan) throw new Error(`signing worker: key ${slots[i]} or plan ${m.planOf![i]} was never sent`);
        sig = signRaw(key, plan, input.subarray(start, end));
      } catch (e) {
        (errors ??= []).push([i, e instanceof Error ? e.message : String(e)]);
      }
      sigs[i] = sig;
      total += sig.length;
      ends[i] = total;
      start = end;
    }
    // A buffer of its own (not a slice of Node's pool): postMessage copies a view's whole ArrayBuffer.
    const bytes = Buffer.allocUnsafeSlow(total);
    for (let i = 0, at = 0; i < sigs.length; at += sigs[i]!.length, i++) sigs[i]!.copy(bytes, at);
    const reply: FromWorker = { bytes, ends, busyMs: performance.now() - began, ...(errors ? { errors } : {}) };
    port.postMessage(reply);
  });
}

const EMPTY = Buffer.alloc(0);

// The port to answer on comes in the first message: a channel of its own, which the main thread
// can also read synchronously (receiveMessageOnPort) while it signs a share of a batch itself.
parentPort?.once('message', (m: { port: MessagePort }) => {
  serve(m.port);
  m.port.postMessage({ ready: true });
});
