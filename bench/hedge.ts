// Hedged signs (issue 22): full TLS 1.3 handshakes at a steady rate against hsmproxy's TlsServer
// whose P-256 key is in a 2-HSM embedded cluster (`unlimited` profile), while hsm-2's process is
// frozen (SIGSTOP) for 200 ms out of every second, with hedging off and on.
// Open loop: a handshake starts every 1/RATE s whatever the others do, so a stalled signature
// shows in the latency it causes (no coordinated omission). Latency: connect() to secureConnect.
// The modes alternate in rounds (off, on, off, on, ...) so both see the same machine load.
// Two workloads, each with hedging off and on: full handshakes (BENCH_RATE/s; the TLS work of
// client and server in this process bounds the rate on a shared 2-core box), and signatures
// through the engine alone (BENCH_SIGN_RATE/s, the same Signer the handshakes use, no TLS).
// Reported per workload and mode: count, errors, p50/p99/p99.9/max, and the share of signs hedged.
// Run: npm run bench:hedge   (env BENCH_RATE=25, BENCH_SIGN_RATE=200, BENCH_SECONDS=20 per mode, BENCH_ROUNDS=4)
import { createPrivateKey } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import tls from 'node:tls';
import { Engine, SimBackend, simClientFrom } from '../src/engine/index.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { makeTestCerts } from '../test/helpers/tls-certs.js';
import { startHsmproxyTls } from './lib/servers.js';

const RATE = Number(process.env.BENCH_RATE ?? 25);
const SIGN_RATE = Number(process.env.BENCH_SIGN_RATE ?? 200);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 4));
const FREEZE_EVERY_MS = 1000;
const FREEZE_MS = 200;

interface ModeResult {
  workload: 'handshake' | 'sign';
  rate: number;
  mode: 'off' | 'on';
  count: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  signs: number;
  hedgesSent: number;
  hedgesWon: number;
  hedgesRefused: number;
  hedgedShare: number;
}

const certs = makeTestCerts(['localhost']);
const ca = readFileSync(certs.ec.caFile);
const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-bench-hedge-'));
const cluster = await startEmbeddedCluster({ dir, hsms: 2, profile: 'unlimited', scryptCost: 1024 });
const client = cluster.client;
const frozenPid = cluster.supervisor.pids().get('hsm-2');
if (frozenPid === undefined) throw new Error('hsm-2 runs no process');
let frozen = false;
let frozenAt = 0;
const thaw = (): void => {
  if (frozen) process.kill(frozenPid, 'SIGCONT');
  frozen = false;
};
// Whatever happens, the HSM process is not left stopped.
process.on('exit', thaw);

try {
  const { clusterId } = await readManifest(dir);
  const backend = new SimBackend({ client: simClientFrom(client), clusterId, credentials: cluster.credentials.cu, ownsClient: false });
  const handle = await backend.importKey(createPrivateKey(readFileSync(certs.ec.keyFile)), 'bench-hedge');
  const engine = new Engine({ backends: { sim: backend }, admission: { maxInFlight: 4096 } });
  engine.adopt(handle, backend);
  const signer = await engine.signer(handle, { verify: 'none' });
  const server = await startHsmproxyTls(certs.ec.chain, signer);

  const handshake = (): Promise<number> => new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = tls.connect({ host: '127.0.0.1', port: server.port, servername: 'localhost', ca, minVersion: 'TLSv1.3' }, () => {
      const ms = performance.now() - t0;
      s.destroy();
      resolve(ms);
    });
    s.on('error', reject);
    s.setTimeout(10_000, () => s.destroy(new Error('handshake timed out')));
  });

  const toSign = Buffer.alloc(130, 0x20);
  const sign = async (): Promise<number> => {
    const t0 = performance.now();
    await signer.sign(0x0403, toSign); // ecdsa_secp256r1_sha256
    return performance.now() - t0;
  };

  // One round of one mode: `rate` operations a second for `seconds`, hsm-2 frozen 200 ms a second.
  const round = async (
    op: () => Promise<number>, rate: number, seconds: number, into: { lat: number[]; errors: number },
  ): Promise<void> => {
    const freezer = setInterval(() => {
      if (frozen) return;
      process.kill(frozenPid, 'SIGSTOP');
      frozen = true;
      frozenAt = performance.now();
      setTimeout(thaw, FREEZE_MS);
    }, FREEZE_EVERY_MS);
    const pending: Array<Promise<void>> = [];
    const t0 = performance.now();
    const total = Math.round(seconds * rate);
    for (let i = 0; i < total; i++) {
      const due = t0 + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      const startedFrozen = frozen;
      const sinceFreeze = performance.now() - frozenAt;
      pending.push(op().then((ms) => {
        into.lat.push(ms);
        if (process.env.BENCH_DEBUG && ms > 100) console.error(`slow ${ms.toFixed(0)} ms, started ${startedFrozen ? 'frozen' : 'thawed'} ${sinceFreeze.toFixed(0)} ms after the last freeze`);
      }, () => { into.errors++; }));
    }
    await Promise.all(pending);
    clearInterval(freezer);
    thaw();
    // Let the late requests on hsm-2 finish before the next round.
    while (client.inFlight > 0) await new Promise((r) => setTimeout(r, 10));
  };

  const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * p) - 1)] ?? NaN;
  const r2 = (x: number): number => Math.round(x * 100) / 100;
  const loads: number[] = [];
  const started = Date.now();

  // Both modes of one workload, in alternating rounds.
  const workload = async (name: 'handshake' | 'sign', op: () => Promise<number>, rate: number): Promise<ModeResult[]> => {
    // Warm-up (connections, JIT, latency windows), not measured.
    client.setHedging({ enabled: true });
    await round(op, rate, 2, { lat: [], errors: 0 });
    const acc = { off: { lat: [] as number[], errors: 0 }, on: { lat: [] as number[], errors: 0 } };
    const hedge = { sent: 0, won: 0, refused: 0 };
    for (let r = 0; r < ROUNDS; r++) {
      for (const mode of ['off', 'on'] as const) {
        client.setHedging(mode === 'on' ? { enabled: true } : undefined);
        await round(op, rate, SECONDS / ROUNDS, acc[mode]);
        if (mode === 'on') {
          const st = client.hedgeStats()!;
          if (process.env.BENCH_DEBUG) console.error(JSON.stringify({ perHsm: [...st.perHsm], delays: [...st.delays] }));
          const t = st.totals;
          hedge.sent += t.sent;
          hedge.won += t.won;
          hedge.refused += t.refused;
        }
        loads.push(loadavg()[0]!);
        console.error(`${name} round ${r + 1}/${ROUNDS} hedging ${mode}: done (load ${loadavg()[0]!.toFixed(2)})`);
      }
    }
    return (['off', 'on'] as const).map((mode) => {
      const a = acc[mode];
      const s = a.lat.sort((x, y) => x - y);
      const h = mode === 'on' ? hedge : { sent: 0, won: 0, refused: 0 };
      // One HSM sign per operation attempted.
      const signs = a.lat.length + a.errors;
      return {
        workload: name, rate, mode, count: a.lat.length, errors: a.errors,
        p50Ms: r2(pct(s, 0.5)), p99Ms: r2(pct(s, 0.99)), p999Ms: r2(pct(s, 0.999)), maxMs: r2(s[s.length - 1] ?? NaN),
        signs, hedgesSent: h.sent, hedgesWon: h.won, hedgesRefused: h.refused,
        hedgedShare: Math.round((10_000 * h.sent) / Math.max(1, signs)) / 10_000,
      };
    });
  };

  const which = (process.env.BENCH_WORKLOADS ?? 'handshake,sign').split(',');
  const rows = [
    ...(which.includes('handshake') ? await workload('handshake', handshake, RATE) : []),
    ...(which.includes('sign') ? await workload('sign', sign, SIGN_RATE) : []),
  ];
  const result = {
    date: new Date().toISOString(), secondsPerMode: SECONDS, rounds: ROUNDS,
    freeze: `hsm-2 SIGSTOPped ${FREEZE_MS} ms every ${FREEZE_EVERY_MS} ms`, profile: 'unlimited', key: 'P-256', hsms: 2,
    hedge: { maxShare: 0.05, minDelayMs: 5 },
    loadAverage1m: { min: Math.min(...loads), max: Math.max(...loads) }, durationS: Math.round((Date.now() - started) / 1000),
    rows,
  };
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'hedge.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`\nhsm-2 frozen ${FREEZE_MS} ms every second (P-256 key in 2 HSMs, unlimited profile), ${SECONDS} s per mode in ${ROUNDS} alternating rounds; load average ${result.loadAverage1m.min.toFixed(1)}–${result.loadAverage1m.max.toFixed(1)}\n`);
  console.log('| workload | hedging | count | errors | p50 ms | p99 ms | p99.9 ms | max ms | hedged (sent / won / refused) |');
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---|');
  for (const r of rows) {
    const hedged = r.mode === 'on' ? `${(100 * r.hedgedShare).toFixed(2)}% (${r.hedgesSent} / ${r.hedgesWon} / ${r.hedgesRefused})` : '—';
    console.log(`| ${r.workload === 'handshake' ? 'full handshakes' : 'engine signs'} ${r.rate}/s | ${r.mode} | ${r.count} | ${r.errors} | ${r.p50Ms} | ${r.p99Ms} | ${r.p999Ms} | ${r.maxMs} | ${hedged} |`);
  }
  console.log(`\nwritten ${out}`);
  await server.close();
  await engine.close();
} finally {
  thaw();
  await cluster.stop();
  await rm(dir, { recursive: true, force: true });
  certs.cleanup();
}
