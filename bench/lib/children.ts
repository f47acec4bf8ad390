// Child processes of bench/flood.ts and bench/stream.ts: start a bench/lib entry in its own
// process (so its RSS and CPU are its own), wait for the JSON line it prints when ready, read its
// memory from /proc, and stop it by PID with a bounded wait.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A running bench/lib entry. */
export interface BenchChild<T> {
  child: ChildProcess;
  pid: number;
  /** What the entry printed on its first stdout line. */
  ready: T;
  /** The last few KiB the entry wrote on stderr (evidence when it misbehaves). */
  stderrTail(): string;
  /** Exit code or signal once it has exited, null while it runs. */
  exited(): { code: number | null; signal: NodeJS.Signals | null } | null;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

const STDERR_TAIL = 8 * 1024;

/**
 * Spawns `bench/lib/<name>` (same extension and loader flags as this process, plus `nodeArgs`) and
 * waits up to `readyMs` (default 60 s) for its first stdout line, parsed as JSON. If this process dies, the entry sees its
 * stdin pipe close (or 'disconnect') and exits instead of lingering.
 */
export async function startChild<T>(name: string, args: string[], opts: { readyMs?: number; nodeArgs?: string[] } = {}): Promise<BenchChild<T>> {
  const readyMs = opts.readyMs ?? 60_000;
  const self = fileURLToPath(import.meta.url);
  const entry = join(dirname(self), `${name}${extname(self)}`);
  // The IPC channel is there for entries that exit on 'disconnect' (bench/lib/upstream.ts).
  const child = spawn(process.execPath, [...process.execArgv, ...(opts.nodeArgs ?? []), entry, ...args], { stdio: ['pipe', 'pipe', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-STDERR_TAIL); });
  let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const gone = new Promise<void>((resolve) => child.once('exit', (code, signal) => { exit = { code, signal }; resolve(); }));
  const ready = await new Promise<T>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`${name} printed no ready line within ${readyMs} ms`)), readyMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${err.message}\n${stderr.slice(-2000)}`));
    };
    const onData = (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.off('exit', onExit);
      try {
        resolve(JSON.parse(out.slice(0, nl)) as T);
      } catch {
        fail(new Error(`${name} printed ${JSON.stringify(out.slice(0, 200))}, not a JSON line`));
      }
    };
    const onExit = () => fail(new Error(`${name} exited before it was ready`));
    child.stdout!.on('data', onData);
    child.once('exit', onExit);
  });
  child.stdout!.resume(); // later output is not read; it must not fill the pipe
  return {
    child, pid: child.pid!, ready,
    stderrTail: () => stderr,
    exited: () => exit,
    stop: async (graceMs = 10_000) => {
      if (exit) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await gone;
      clearTimeout(killer);
    },
  };
}

/** What bench/lib/flood-proxy.ts prints when it is listening. */
export interface ProxyReady { port: number; adminPort: number; clusterDir: string }

/** Starts bench/lib/flood-proxy.ts; stopping it also removes its cluster's temp dir (left behind if the proxy crashed). */
export async function startProxyChild(certFile: string, keyFile: string, upstreamUrl: string, nodeArgs: string[] = []): Promise<BenchChild<ProxyReady>> {
  const c = await startChild<ProxyReady>('flood-proxy', [certFile, keyFile, upstreamUrl], { nodeArgs });
  const stop = c.stop;
  return {
    ...c,
    stop: async (graceMs) => {
      await stop(graceMs);
      // Only ever a cluster dir of ours, whatever the child printed.
      if (c.ready.clusterDir.startsWith(join(tmpdir(), 'hsmproxy-bench-cluster-'))) rmSync(c.ready.clusterDir, { recursive: true, force: true });
    },
  };
}

/** Resident memory of a process from /proc/<pid>/status, MiB: now (VmRSS) and peak (VmHWM). */
export function memoryMb(pid: number): { rss: number; peak: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? 0);
    return { rss: Math.round(kb('VmRSS') / 102.4) / 10, peak: Math.round(kb('VmHWM') / 102.4) / 10 };
  } catch {
    return null;
  }
}

/** Resets the process's peak RSS (VmHWM) to its current RSS (Linux clear_refs 5); false when not allowed. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** The q-quantile of ascending `sorted` (nearest rank), 0 when empty. */
export function quantile(sorted: number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]! : 0;
}

/**
 * The end of a bench/lib proxy entry: prints `ready` as its one stdout line, then, on SIGTERM or
 * when its stdin closes (the parent died), shuts `proxy` down and runs `close` (bounded: a wedged
 * shutdown must not keep the parent waiting; it SIGKILLs after its grace) and exits.
 */
export function serveUntilStopped(proxy: { shutdown(ms: number): Promise<unknown> }, close: () => Promise<void>, ready: object): void {
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    const hard = setTimeout(() => process.exit(1), 8_000);
    hard.unref();
    await proxy.shutdown(2_000);
    await close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.stdin.on('close', () => void stop());
  process.stdin.resume();
  process.stdout.write(`${JSON.stringify(ready)}\n`);
}
