// Runs h2load (Debian's nghttp2-client, a C client) for keep-alive HTTP/1.1 load over a fixed
// number of connections for a duration, and reads requests/s and per-request latency
// percentiles from its --log-file.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** h2load's version, or why it cannot be used. */
export function findH2load(): { version: string } | { missing: string } {
  try {
    const v = execFileSync('h2load', ['--version'], { encoding: 'utf8' });
    return { version: v.trim() };
  } catch {
    return { missing: 'h2load is not installed (apt-get install nghttp2-client)' };
  }
}

/** What one h2load run measured. */
export interface H2loadResult {
  requests: number;
  errors: number;
  seconds: number;
  requestsPerSec: number;
  latencyMs: { p50: number; p95: number; p99: number; max: number; mean: number };
}

function pct(sorted: number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]! : 0;
}

/**
 * Keep-alive load on `url` with `connections` HTTP/1.1 connections (one request in flight each),
 * or HTTP/2 connections with `h2Streams` concurrent streams each.
 */
export async function runH2load(url: string, connections: number, seconds: number, warmupSeconds = 1, h2Streams = 0): Promise<H2loadResult> {
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-bench-h2load-'));
  try {
    const log = join(dir, 'requests.log');
    const protocol = h2Streams > 0 ? ['-m', String(h2Streams)] : ['--h1', '-m', '1'];
    const child = spawn('h2load', [...protocol, '-c', String(connections), `--warm-up-time=${warmupSeconds}`, '-D', String(seconds), `--log-file=${log}`, url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    await once(child, 'close');
    const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
    if (!m) throw new Error(`could not read h2load output:\n${out.slice(-800)}`);
    // Log lines: start time (µs since epoch), status, elapsed µs.
    const lat = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => Number(l.split('\t')[2]) / 1000).filter(Number.isFinite).sort((a, b) => a - b);
    const requests = lat.length;
    return {
      requests, errors: Number(m[5]) + Number(m[6]), seconds,
      requestsPerSec: Math.round(requests / seconds),
      latencyMs: { p50: pct(lat, 0.5), p95: pct(lat, 0.95), p99: pct(lat, 0.99), max: lat[lat.length - 1] ?? 0, mean: lat.reduce((a, b) => a + b, 0) / Math.max(1, requests) },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
