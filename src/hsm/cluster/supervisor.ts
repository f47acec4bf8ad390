// The cluster supervisor: runs every HSM of the manifest as a child process, restarts a child
// that dies (exponential backoff, on the port it had), follows manifest changes (add-hsm /
// remove-hsm while running), and stops children cleanly (SIGTERM, then SIGKILL after a grace
// period). Children hold an IPC channel to us and exit when it closes, so none outlives a
// supervisor that is SIGKILLed.
import { fork, type ChildProcess } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NodeStartError } from './lifecycle-errors.js';
import { manifestPath, readManifest, type ManifestHsm } from './manifest.js';
import { recordPorts } from './membership.js';
import type { NodeProcessMessage } from './node-process.js';

/** Something the supervisor did, for the CLI's log. */
export type SupervisorEvent =
  | { event: 'started'; hsm: string; pid: number; port: number }
  | { event: 'exited'; hsm: string; pid: number; code: number | null; signal: string | null }
  | { event: 'restarting'; hsm: string; inMs: number }
  | { event: 'stopped'; hsm: string };

/** Options of the supervisor. */
export interface SupervisorOptions {
  dir: string;
  /** Listen on ephemeral ports, not the manifest's (embedded mode); the bound ports are written to the manifest. */
  ephemeralPorts?: boolean;
  /** scrypt cost for the devices (tests lower it). */
  scryptCost?: number;
  restartMinMs?: number;
  restartMaxMs?: number;
  /**
   * How long a child may take to report its port (default 30 s: a start that takes 5 s on a quiet
   * 2-core machine took over 15 s in a loaded full test run; a node that never reports still fails).
   */
  startTimeoutMs?: number;
  /** Follow manifest changes (default true). */
  watch?: boolean;
  onEvent?: (e: SupervisorEvent) => void;
}

interface Child {
  hsm: ManifestHsm;
  proc?: ChildProcess;
  port?: number;
  /** The current child reported its port (a restarted child has not yet, though `port` is known). */
  listening: boolean;
  restarts: number;
  startedAt: number;
  timer?: NodeJS.Timeout;
  removed: boolean;
}

// The entry file next to this one, with this file's extension (.ts under tsx, .js from dist/).
const ENTRY = fileURLToPath(new URL(`./node-process${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

/** Runs and keeps running the HSM nodes of one cluster directory. */
export class Supervisor {
  private readonly children = new Map<string, Child>();
  private stopping = false;
  private watchTimer?: NodeJS.Timeout;
  private lastMtime = 0;

  constructor(private readonly opts: SupervisorOptions) {}

  /** Starts every HSM of the manifest; resolves once all report their ports. */
  async start(): Promise<void> {
    const m = await readManifest(this.opts.dir);
    try {
      await Promise.all(m.hsms.map((h) => this.add(h)));
    } catch (err) {
      await this.stop();
      throw err;
    }
    if (this.opts.watch !== false) void this.watch();
  }

  /** Bound port of each running HSM. */
  ports(): Map<string, number> {
    return new Map([...this.children].filter(([, c]) => c.port !== undefined).map(([id, c]) => [id, c.port as number]));
  }

  /** PIDs of the running children. */
  pids(): Map<string, number> {
    const live = [...this.children].filter(([, c]) => c.proc?.pid !== undefined && c.proc.exitCode === null);
    return new Map(live.map(([id, c]) => [id, c.proc!.pid!]));
  }

  /** Resolves once `hsm` runs again (after a crash) and returns its PID. */
  async waitRunning(hsm: string, timeoutMs = 15_000): Promise<number> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const c = this.children.get(hsm);
      if (c?.proc && c.proc.exitCode === null && c.listening && c.proc.pid !== undefined && !c.timer) return c.proc.pid;
      if (Date.now() > end) throw new NodeStartError(hsm, `not running again after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async add(h: ManifestHsm): Promise<void> {
    // After stop() nothing starts again: a manifest check that was in flight when stop() ran would
    // otherwise see every child gone and start them all anew, orphans holding the HSMs' locks.
    if (this.stopping || this.children.has(h.id)) return;
    const c: Child = { hsm: h, listening: false, restarts: 0, startedAt: 0, removed: false };
    this.children.set(h.id, c);
    await this.spawn(c);
  }

  private spawn(c: Child): Promise<void> {
    const port = c.port ?? (this.opts.ephemeralPorts ? 0 : c.hsm.port);
    const args = ['--dir', this.opts.dir, '--hsm', c.hsm.id, '--port', String(port)];
    if (this.opts.scryptCost) args.push('--scrypt-cost', String(this.opts.scryptCost));
    const proc = fork(ENTRY, args, { execArgv: process.execArgv, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    c.proc = proc;
    c.listening = false;
    c.startedAt = Date.now();
    return new Promise((resolve, reject) => {
      let settled = false;
      let listening = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        proc.kill('SIGKILL');
        reject(new NodeStartError(c.hsm.id, `no port reported within ${this.opts.startTimeoutMs ?? 30_000} ms`));
      }, this.opts.startTimeoutMs ?? 30_000);
      timer.unref();
      proc.on('message', (msg: NodeProcessMessage) => {
        if (msg.type === 'listening') {
          listening = true;
          c.listening = true;
          c.port = msg.port;
          this.opts.onEvent?.({ event: 'started', hsm: c.hsm.id, pid: proc.pid ?? 0, port: msg.port });
          // Clients find HSMs through the manifest: publish the port actually bound before reporting success.
          const published = this.opts.ephemeralPorts ? this.publishPort(c.hsm.id, msg.port) : Promise.resolve();
          void published.then(() => {
            if (!settled) {
              settled = true;
              clearTimeout(timer);
              resolve();
            }
          });
        } else if (msg.type === 'error' && !settled) {
          settled = true;
          clearTimeout(timer);
          reject(new NodeStartError(c.hsm.id, msg.message));
        }
      });
      proc.on('exit', (code, signal) => {
        this.opts.onEvent?.({ event: 'exited', hsm: c.hsm.id, pid: proc.pid ?? 0, code, signal });
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          reject(new NodeStartError(c.hsm.id, `exited with ${signal ?? `code ${code}`} before listening`));
          return;
        }
        // A child that never listened failed its start: whoever awaited this spawn schedules the
        // retry (once). Scheduling here too would start two children per failure.
        if (listening && !this.stopping && !c.removed && c.proc === proc) this.scheduleRestart(c);
      });
    });
  }

  // Manifest rewrites are serialised: two children reporting at once must not lose a port.
  private portWrites: Promise<unknown> = Promise.resolve();
  private publishPort(hsm: string, port: number): Promise<void> {
    const next = this.portWrites.then(() => recordPorts(this.opts.dir, new Map([[hsm, port]]))).catch(() => undefined);
    this.portWrites = next;
    return next.then(() => undefined);
  }

  private scheduleRestart(c: Child): void {
    // A child that served for a while starts over with the shortest delay; one that never came up
    // keeps backing off however slow its failed start was (a loaded machine took over 10 s).
    if (c.listening && Date.now() - c.startedAt > 10_000) c.restarts = 0;
    const delay = Math.min(this.opts.restartMaxMs ?? 5000, (this.opts.restartMinMs ?? 100) * 2 ** c.restarts);
    c.restarts++;
    clearTimeout(c.timer);
    this.opts.onEvent?.({ event: 'restarting', hsm: c.hsm.id, inMs: delay });
    c.timer = setTimeout(() => {
      c.timer = undefined;
      if (this.stopping || c.removed) return;
      this.spawn(c).catch(() => {
        if (!this.stopping && !c.removed) this.scheduleRestart(c);
      });
    }, delay);
  }

  private async watch(): Promise<void> {
    const file = manifestPath(this.opts.dir);
    const tick = async (): Promise<void> => {
      if (this.stopping) return;
      try {
        const st = await stat(file);
        if (this.lastMtime !== 0 && st.mtimeMs !== this.lastMtime) await this.reconcile();
        this.lastMtime = st.mtimeMs;
      } catch {
        // Being rewritten: next tick.
      }
      this.watchTimer = setTimeout(() => void tick(), 500);
      this.watchTimer.unref();
    };
    await tick();
  }

  /** Starts HSMs added to the manifest and stops removed ones. */
  async reconcile(): Promise<void> {
    if (this.stopping) return;
    const m = await readManifest(this.opts.dir);
    if (this.stopping) return;
    const want = new Set(m.hsms.map((h) => h.id));
    for (const [id, c] of this.children) if (!want.has(id)) await this.stopChild(c);
    for (const h of m.hsms) {
      if (this.children.has(h.id)) continue;
      // A new HSM that fails its first start is retried like a crashed one.
      await this.add(h).catch(() => {
        const c = this.children.get(h.id);
        if (c && !this.stopping && !c.removed) this.scheduleRestart(c);
      });
    }
  }

  private async stopChild(c: Child, graceMs = 5000): Promise<void> {
    c.removed = true;
    clearTimeout(c.timer);
    this.children.delete(c.hsm.id);
    const proc = c.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
    this.opts.onEvent?.({ event: 'stopped', hsm: c.hsm.id });
  }

  /** Stops every child cleanly (SIGTERM, SIGKILL after the grace period). */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    clearTimeout(this.watchTimer);
    await Promise.all([...this.children.values()].map((c) => this.stopChild(c, graceMs)));
  }
}
