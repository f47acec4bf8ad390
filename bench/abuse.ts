// What one abusive client does to everyone else's handshakes, with and without the listener
// limits. The proxy (bench/lib/abuse-proxy.ts: Proxy on the offloading TLS listener, the key in a
// 2-HSM embedded cluster, default signing admission) runs in a child process with the default
// limits (`on`) or none (`off`). For each, three phases of BENCH_SECONDS: the well-behaved client
// alone (baseline), then beside an attacker process from 127.0.0.2 (bench/lib/abuse-attack.ts)
// that opens full handshakes as fast as it can with 64 connections at a time (flood), then beside
// one holding 5,000 half-open handshakes (halfopen). The well-behaved client, in this process,
// starts a full TLS 1.3 handshake (no session) from 127.0.0.1 every 20 ms (50/s) and times it to
// its end; one not done within 10 s fails.
// Reported per phase: its success rate and p50/p99, the HSM signatures spent on the attacker (all
// signatures minus the well-behaved client's), and the proxy's CPU and peak RSS. Target from the
// issue, reported, not asserted: with the limits on, >= 99% success and p99 under 3x the baseline.
// Writes bench/results/abuse.json.
// The attacker runs at nice 19, standing in for a machine of its own (BENCH_ATTACKER_NICE to change).
// Run: npm run bench:abuse   (env BENCH_SECONDS, default 15; BENCH_MODES, default "off,on")
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTestCerts } from '../test/helpers/tls-certs.js';
import { memoryMb, quantile, resetPeak, startChild, type BenchChild } from './lib/children.js';
import { cpuMsOf } from './lib/procs.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
const MODES = (process.env.BENCH_MODES ?? 'off,on').split(',') as Array<'on' | 'off'>;
const RATE = 50;
const HANDSHAKE_LIMIT_MS = 10_000;
const GOOD = '127.0.0.1';
const ATTACKER = '127.0.0.2';
const HOLD = 5000;
const FLOOD_CONCURRENCY = 64;
const NICE = Number(process.env.BENCH_ATTACKER_NICE ?? 19);

type Phase = 'baseline' | 'flood' | 'halfopen';
interface ProxyReady { port: number; adminPort: number; clusterDir: string; hsmPids: number[] }
interface AttackStats { mode: string; connects: number; handshakes: number; failed: number; refusedAtAccept: number; peakOpen: number }
interface PhaseResult {
  mode: 'on' | 'off'; phase: Phase; attempts: number; successPct: number; p50Ms: number; p99Ms: number; maxMs: number;
  attackerSigns: number; goodSigns: number; proxyCpuPct: number; hsmCpuPct: number; proxyPeakRssMb: number;
  shed: Record<string, number>; refused: Record<string, number>; attacker?: AttackStats;
}

/** One full handshake from GOOD; resolves with its duration, or null when it failed. */
function goodHandshake(port: number, ca: Buffer): Promise<number | null> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port, localAddress: GOOD });
    const s = tls.connect({ socket: raw, servername: 'localhost', ca, minVersion: 'TLSv1.3' });
    let done = false;
    const finish = (ms: number | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(ms);
    };
    const timer = setTimeout(() => finish(null), HANDSHAKE_LIMIT_MS);
    s.once('secureConnect', () => finish(performance.now() - t0));
    s.once('error', () => finish(null));
    s.once('close', () => finish(null));
  });
}

/** Counter samples of /metrics summed by the label `by` (every other label summed over). */
async function counters(adminPort: number, name: string, by: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const key = new RegExp(`${by}="([^"]*)"`).exec(line)?.[1] ?? '';
    out[key] = (out[key] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return out;
}

const diff = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v - (a[k] ?? 0)]).filter(([, v]) => (v as number) > 0));

async function runPhase(mode: 'on' | 'off', phase: Phase, proxy: BenchChild<ProxyReady>, ca: Buffer): Promise<PhaseResult> {
  const { port, adminPort, hsmPids } = proxy.ready;
  let attack: BenchChild<{ ready: boolean }> | undefined;
  let attackStats: AttackStats | undefined;
  if (phase !== 'baseline') {
    attack = await startChild<{ ready: boolean }>('abuse-attack', [phase, String(port), String(SECONDS + 2), ATTACKER, String(phase === 'flood' ? FLOOD_CONCURRENCY : HOLD)]);
    // The attacker stands for a machine of its own: on this 2-core box it would otherwise take a
    // core from the proxy that no remote attacker could (BENCH_ATTACKER_NICE=0 to compare).
    os.setPriority(attack.pid, NICE);
    attack.child.stdout!.on('data', (d: Buffer) => {
      for (const line of d.toString().split('\n')) if (line.startsWith('{"mode"')) attackStats = JSON.parse(line) as AttackStats;
    });
    await new Promise((r) => setTimeout(r, 1000)); // the attack reaches its pace before we measure
  }
  resetPeak(proxy.pid);
  const signsBefore = await counters(adminPort, 'hsmproxy_engine_signs_total', 'outcome');
  const shedBefore = await counters(adminPort, 'hsmproxy_tls_handshakes_shed_total', 'reason');
  const refusedBefore = await counters(adminPort, 'hsmproxy_tls_connections_refused_total', 'reason');
  const cpu0 = { proxy: cpuMsOf(proxy.pid), hsm: hsmPids.reduce((a, p) => a + cpuMsOf(p), 0), t: performance.now() };
  let peakRss = 0;
  const sampler = setInterval(() => { peakRss = Math.max(peakRss, memoryMb(proxy.pid)?.peak ?? 0); }, 250);
  const runs: Array<Promise<number | null>> = [];
  const end = performance.now() + SECONDS * 1000;
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      if (performance.now() >= end) { clearInterval(tick); resolve(); return; }
      runs.push(goodHandshake(port, ca));
    }, 1000 / RATE);
  });
  const results = await Promise.all(runs);
  clearInterval(sampler);
  peakRss = Math.max(peakRss, memoryMb(proxy.pid)?.peak ?? 0);
  const cpu1 = { proxy: cpuMsOf(proxy.pid), hsm: hsmPids.reduce((a, p) => a + cpuMsOf(p), 0), t: performance.now() };
  const signs = diff(signsBefore, await counters(adminPort, 'hsmproxy_engine_signs_total', 'outcome'));
  const shed = diff(shedBefore, await counters(adminPort, 'hsmproxy_tls_handshakes_shed_total', 'reason'));
  const refused = diff(refusedBefore, await counters(adminPort, 'hsmproxy_tls_connections_refused_total', 'reason'));
  if (attack) {
    const exited = new Promise((r) => attack!.child.once('exit', r));
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    await attack.stop(2000);
  }
  const ok = results.filter((r): r is number => r !== null).sort((a, b) => a - b);
  const wall = cpu1.t - cpu0.t;
  const goodSigns = ok.length;
  return {
    mode, phase, attempts: results.length, successPct: Math.round((1000 * ok.length) / Math.max(1, results.length)) / 10,
    p50Ms: round(quantile(ok, 0.5)), p99Ms: round(quantile(ok, 0.99)), maxMs: round(ok.at(-1) ?? 0),
    attackerSigns: Math.max(0, (signs.ok ?? 0) - goodSigns), goodSigns,
    proxyCpuPct: Math.round((100 * (cpu1.proxy - cpu0.proxy)) / wall), hsmCpuPct: Math.round((100 * (cpu1.hsm - cpu0.hsm)) / wall),
    proxyPeakRssMb: peakRss, shed, refused, ...(attackStats ? { attacker: attackStats } : {}),
  };
}

const round = (n: number): number => Math.round(n * 10) / 10;

async function main(): Promise<void> {
  const certs = makeTestCerts(['localhost']);
  const ca = readFileSync(certs.ec.caFile);
  const rows: PhaseResult[] = [];
  const killAll: Array<() => Promise<void>> = [];
  const bound = setTimeout(() => { console.error('abuse bench: run limit passed'); void Promise.all(killAll.map((k) => k())).then(() => process.exit(1)); },
    (MODES.length * (3 * SECONDS + 60) + 120) * 1000);
  bound.unref();
  try {
    for (const mode of MODES) {
      const proxy = await startChild<ProxyReady>('abuse-proxy', [certs.ec.certFile, certs.ec.keyFile, mode], { readyMs: 120_000 });
      killAll.push(() => proxy.stop(1000));
      try {
        for (const phase of ['baseline', 'flood', 'halfopen'] as const) {
          const r = await runPhase(mode, phase, proxy, ca);
          rows.push(r);
          console.log(JSON.stringify(r));
        }
      } finally {
        await proxy.stop(10_000);
      }
    }
  } finally {
    certs.cleanup();
  }
  console.log('\n| limits | phase | well-behaved success | p50 ms | p99 ms | p99 ÷ baseline | attacker handshakes | HSM signs on attacker | proxy CPU | HSM CPU | proxy peak RSS |');
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const base = rows.find((x) => x.mode === r.mode && x.phase === 'baseline')!;
    const a = r.attacker ? `${r.attacker.handshakes} of ${r.attacker.connects}` : '—';
    console.log(`| ${r.mode} | ${r.phase} | ${r.successPct}% of ${r.attempts} | ${r.p50Ms} | ${r.p99Ms} | ${round(r.p99Ms / Math.max(0.1, base.p99Ms))}x | ${a} | ${r.attackerSigns} | ${r.proxyCpuPct}% | ${r.hsmCpuPct}% | ${r.proxyPeakRssMb} MB |`);
  }
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'abuse.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), seconds: SECONDS, rate: RATE, rows }, null, 2)}\n`);
  console.log(`\nwrote ${out}`);
}

await main();
