// CPU time of other processes (nginx workers, HSM node processes) from /proc, so a benchmark
// can say where the CPU went, and free loopback ports for servers that cannot listen on port 0.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** user+system CPU milliseconds of a process (0 when it is gone or /proc is absent). */
export function cpuMsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
  } catch {
    return 0;
  }
}

/** The direct children of a process. */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** CPU milliseconds of a process and its direct children. */
export function treeCpuMs(pid: number): number {
  return cpuMsOf(pid) + childrenOf(pid).reduce((a, c) => a + cpuMsOf(c), 0);
}

/** A free TCP port on 127.0.0.1 (for nginx, whose config needs a number). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
