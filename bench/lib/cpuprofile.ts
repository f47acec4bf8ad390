// Reads V8 .cpuprofile files (node --cpu-prof) and ranks functions by self time, merging the
// same function seen in several call paths and several processes.
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProfileEntry } from '../../src/bench/summary.js';

interface CpuProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }
interface CpuProfile { nodes: CpuProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

const root = fileURLToPath(new URL('../..', import.meta.url));

function where(url: string, line: number): string {
  if (!url) return '(native)';
  const path = url.startsWith('file://') ? relative(root, fileURLToPath(url)) : url;
  return `${path.replace(/^node_modules\//, '')}:${line + 1}`;
}

/**
 * Top `n` functions by self time over the profiles (idle time left out; only samples inside
 * `window`, µs on the profiles' monotonic clock, when given); totalMs is the busy time.
 */
export function topSelfTime(files: string[], n = 12, window?: { fromUs: number; toUs: number }): { totalMs: number; top: ProfileEntry[] } {
  const self = new Map<string, { functionName: string; location: string; us: number }>();
  let busyUs = 0;
  for (const file of files) {
    const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
    const byId = new Map(p.nodes.map((node) => [node.id, node]));
    let t = p.startTime;
    p.samples.forEach((id, i) => {
      const node = byId.get(id);
      const dt = p.timeDeltas[i] ?? 0;
      t += dt;
      if (window && (t < window.fromUs || t > window.toUs)) return;
      if (!node || node.callFrame.functionName === '(idle)') return;
      busyUs += dt;
      const { functionName, url, lineNumber } = node.callFrame;
      const location = where(url, lineNumber);
      const k = `${functionName}@${location}`;
      const e = self.get(k) ?? { functionName, location, us: 0 };
      e.us += dt;
      self.set(k, e);
    });
  }
  const top = [...self.values()].sort((a, b) => b.us - a.us).slice(0, n)
    .map((e) => ({ functionName: e.functionName, location: e.location, selfMs: Math.round(e.us / 100) / 10, selfPct: Math.round((e.us / Math.max(1, busyUs)) * 1000) / 10 }));
  return { totalMs: Math.round(busyUs / 1000), top };
}
