// `bench hsm` next to `openssl speed` in the same run: what one core of this machine signs with
// OpenSSL itself (ECDSA P-256, RSA-2048 PKCS#1 v1.5), against the simulated HSM's signs/s through
// the cluster client, so the ratio issue 16 targets is measured, not quoted.
import { execFile } from 'node:child_process';
import os from 'node:os';
import { promisify } from 'node:util';
import { planHsmBench, runHsmBench } from '../../src/bench/hsm.js';

/** The `openssl speed` algorithms compared, with the `bench hsm` operation that does the same signature. */
export const SPEED_PAIRS = [
  { openssl: 'ecdsap256', op: 'sign-ec-p256' },
  // openssl speed's rsa2048 signs PKCS#1 v1.5, so the HSM does too (PSS costs the same private operation).
  { openssl: 'rsa2048', op: 'sign-rsa2048-pkcs1' },
] as const;

/** One row: the HSM's signs/s at one concurrency against OpenSSL's on one core. */
export interface SpeedRow {
  op: string;
  openssl: string;
  opensslSignsPerSec: number;
  /** The same with `-elapsed` (divided by wall time): on a loaded machine, what one core got. */
  opensslElapsedSignsPerSec: number;
  concurrency: number;
  hsmSignsPerSec: number;
  ratio: number;
  /** hsmSignsPerSec / opensslElapsedSignsPerSec: both by wall time, under the same load. */
  ratioElapsed: number;
  p50Ms: number;
}

/** What bench/hsm.ts writes to bench/results/hsm-vs-openssl.json. */
export interface SpeedComparison {
  kind: 'hsm-vs-openssl';
  date: string;
  node: string;
  openssl: string;
  cpus: number;
  /** Load averages at the start and at the end: the machine is shared. */
  loadavg: { start: number[]; end: number[] };
  hsmSeconds: number;
  opensslSeconds: number;
  rows: SpeedRow[];
}

const run = promisify(execFile);

/**
 * Signs per second `openssl speed -seconds S ALG` reports (one process, one core). OpenSSL
 * divides by the CPU time it used, not the wall time, so its figure holds on a loaded machine
 * while the HSM's (wall time) falls: read the ratio with the load average.
 */
export async function opensslSpeed(alg: string, seconds: number, elapsed = false): Promise<number> {
  const { stdout } = await run('openssl', ['speed', ...(elapsed ? ['-elapsed'] : []), '-seconds', String(seconds), alg], { maxBuffer: 1 << 20 });
  const lines = stdout.split('\n');
  // The table: a header naming the columns ('sign verify sign/s verify/s', more columns in
  // OpenSSL 3.2+), then one line per key size ending in as many numbers.
  const header = lines.findIndex((l) => /\bsign\/s\b/.test(l));
  const columns = (lines[header] ?? '').trim().split(/\s+/);
  const row = lines.slice(header + 1).find((l) => l.trim() !== '');
  const at = columns.indexOf('sign/s');
  const numbers = (row ?? '').trim().split(/\s+/).slice(-columns.length).map((x) => Number(x.replace(/s$/, '')));
  const v = numbers[at];
  if (header < 0 || at < 0 || v === undefined || !(v > 0)) throw new Error(`cannot read sign/s from openssl speed ${alg}:\n${stdout}`);
  return v;
}

/**
 * Each pair: `openssl speed` on one core, `bench hsm` on 1 HSM (profile unlimited) at each
 * concurrency, then `openssl speed -elapsed` (the wall-time figure, for a loaded machine).
 */
export async function compareWithOpenssl(concurrencies: number[], hsmSeconds: number, opensslSeconds: number): Promise<SpeedComparison> {
  const start = os.loadavg();
  const rows: SpeedRow[] = [];
  for (const pair of SPEED_PAIRS) {
    const opensslSignsPerSec = await opensslSpeed(pair.openssl, opensslSeconds);
    const r = await runHsmBench(planHsmBench({ op: pair.op, hsms: '1', profile: 'unlimited', concurrency: concurrencies.join(','), duration: String(hsmSeconds) }));
    const opensslElapsedSignsPerSec = await opensslSpeed(pair.openssl, opensslSeconds, true);
    const ratio = (a: number, b: number): number => Math.round((a / b) * 100) / 100;
    for (const p of r.points) {
      rows.push({
        op: pair.op, openssl: pair.openssl, opensslSignsPerSec, opensslElapsedSignsPerSec, concurrency: p.concurrency, hsmSignsPerSec: Math.round(p.opsPerSec),
        ratio: ratio(p.opsPerSec, opensslSignsPerSec), ratioElapsed: ratio(p.opsPerSec, opensslElapsedSignsPerSec), p50Ms: p.latency.p50.totalMs,
      });
    }
  }
  const { stdout: version } = await run('openssl', ['version']);
  const round = (xs: number[]): number[] => xs.map((x) => Math.round(x * 100) / 100);
  return {
    kind: 'hsm-vs-openssl', date: new Date().toISOString(), node: process.version, openssl: version.trim(), cpus: os.cpus().length,
    loadavg: { start: round(start), end: round(os.loadavg()) }, hsmSeconds, opensslSeconds, rows,
  };
}

/** The comparison as a table for people. */
export function formatComparison(c: SpeedComparison): string {
  const head = `bench hsm (1 HSM, unlimited) against openssl speed (one core); load average ${c.loadavg.start.join(' ')} -> ${c.loadavg.end.join(' ')}\n`;
  const cols = ['operation', 'openssl speed', '(-elapsed)', 'in flight', 'bench hsm', 'ratio', '(-elapsed)', 'p50 ms'];
  const lines = c.rows.map((r) => [
    r.op, `${Math.round(r.opensslSignsPerSec)}/s`, `${Math.round(r.opensslElapsedSignsPerSec)}/s`, String(r.concurrency), `${r.hsmSignsPerSec}/s`,
    r.ratio.toFixed(2), r.ratioElapsed.toFixed(2), r.p50Ms.toFixed(2),
  ]);
  const width = cols.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const fmt = (l: string[]): string => l.map((x, i) => (i === 0 ? x.padEnd(width[i]!) : x.padStart(width[i]!))).join('  ');
  return `${head}${fmt(cols)}\n${lines.map(fmt).join('\n')}\n`;
}
