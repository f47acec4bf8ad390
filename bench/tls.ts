// Full and resumed TLS 1.3 handshakes per second, with handshake latency percentiles, for:
// hsmproxy (TlsServer) with a soft key; hsmproxy with the key in an embedded cluster of 1, 2 and
// 3 HSMs (profiles unlimited and hsm2m.medium); node:tls with the same key file; nginx with the
// same key file (skipped, and said so, when nginx is absent). RSA-2048 and ECDSA P-256. One client
// for all: bench/lib/tls-load.c (C, OpenSSL), THREADS connections in flight, each connection a
// handshake plus one tiny request. Writes bench/results/tls.json; `npm run bench:report` makes the
// summary and charts. Then the server flight in one write after the signature against split around
// it (same cluster key, alternated, with socket writes per connection). Then an offered-load sweep (connections in flight 1…64, ECDSA P-256):
// hsmproxy with a soft key next to hsmproxy with the key in one `hsm1.medium` HSM (250 signs/s),
// where the HSM, not the proxy, sets the limit and handshake latency climbs past it.
// Run: npm run bench:tls   (env BENCH_SECONDS per point, default 5; BENCH_THREADS, default 16;
// BENCH_HSMS, default 1,2,3; BENCH_PROFILES, default unlimited,hsm2m.medium; BENCH_SWEEP,
// default 1,4,16,64; BENCH_WARMUP, handshakes before each point is measured, default 3000 (at most
// 15 s); BENCH_PARTS, default matrix,flight,sweep: a subset re-runs those parts into the
// existing tls.json; BENCH_FLIGHT_ROUNDS, default 2: whole/split alternations of the flight part)
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTestCerts, type TestCert } from '../test/helpers/tls-certs.js';
import type { ManifestProfile } from '../src/hsm/cluster/manifest.js';
import type { TlsBenchPoint, TlsBenchResult } from '../src/bench/summary.js';
import { buildTlsLoad, type TlsLoadClient } from './lib/tls-load.js';
import { findNginx, startNginx } from './lib/nginx.js';
import { clusterSigner, softEngineSigner, startHsmproxyTls, startNodeTls, type RunningServer } from './lib/servers.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const THREADS = Number(process.env.BENCH_THREADS ?? 16);
const WARMUP_SECONDS = 1;
const WARMUP_HANDSHAKES = Number(process.env.BENCH_WARMUP ?? 3000);
const WARMUP_MAX_SECONDS = 15;
const HSMS = (process.env.BENCH_HSMS ?? '1,2,3').split(',').map(Number);
const PROFILES = (process.env.BENCH_PROFILES ?? 'unlimited,hsm2m.medium').split(',') as ManifestProfile[];
const SWEEP = (process.env.BENCH_SWEEP ?? '1,4,16,64').split(',').map(Number);
const PARTS = (process.env.BENCH_PARTS ?? 'matrix,flight,sweep').split(',');
const FLIGHT_ROUNDS = Number(process.env.BENCH_FLIGHT_ROUNDS ?? 2);

type Key = TlsBenchPoint['key'];

/** Runs the client against a started server; `cpu` reads the server's (and HSMs') CPU ms so far. */
async function measure(client: TlsLoadClient, base: Omit<TlsBenchPoint, 'perSecond' | 'connections' | 'errors' | 'latencyMs' | 'serverCpuMsPerHandshake'>, server: RunningServer, cpu: { server: () => number; hsm?: () => number }, threads = THREADS): Promise<TlsBenchPoint> {
  await warmUp(client, server, threads, base.mode);
  const s0 = cpu.server();
  const h0 = cpu.hsm?.() ?? 0;
  const w0 = server.writes?.() ?? 0;
  const r = await client.run(server.port, SECONDS, threads, base.mode);
  const n = Math.max(1, r.connections);
  const p: TlsBenchPoint = {
    ...base, ...(threads !== THREADS ? { threads } : {}), connections: r.connections, errors: r.errors, perSecond: r.perSecond, latencyMs: r.latencyMs,
    serverCpuMsPerHandshake: Math.round(((cpu.server() - s0) / n) * 1000) / 1000,
    ...(cpu.hsm ? { hsmCpuMsPerHandshake: Math.round(((cpu.hsm() - h0) / n) * 1000) / 1000 } : {}),
    ...(server.writes ? { writesPerConnection: Math.round(((server.writes() - w0) / n) * 100) / 100 } : {}),
  };
  if (base.mode === 'resumed') {
    p.resumed = r.resumed;
    // A "resumed" figure that is mostly full handshakes would be a wrong number, not a noisy one.
    if (r.resumed < r.connections * 0.95) throw new Error(`${base.server} ${base.key}: only ${r.resumed} of ${r.connections} handshakes resumed; the resumed figures would be full handshakes`);
  }
  const where = `${base.hsms ? ` ${base.hsms} HSM ${base.profile}` : ''}${threads !== THREADS ? ` x${threads}` : ''}${base.serverFlight ? ` ${base.serverFlight}` : ''}`;
  console.log(`${(base.server + where).padEnd(36)} ${base.key.padEnd(8)} ${base.mode.padEnd(8)} ${p.perSecond.toFixed(0).padStart(6)}/s  p50 ${r.latencyMs.p50.toFixed(2)} p99 ${r.latencyMs.p99.toFixed(2)} ms  server CPU ${p.serverCpuMsPerHandshake.toFixed(2)} ms${p.hsmCpuMsPerHandshake !== undefined ? ` + HSMs ${p.hsmCpuMsPerHandshake.toFixed(2)} ms` : ''}${p.writesPerConnection !== undefined ? `  ${p.writesPerConnection.toFixed(2)} writes` : ''}${r.errors ? `  ${r.errors} errors` : ''}`);
  return p;
}

/**
 * Handshakes before a point is measured (JIT, key pools, connections): at least WARMUP_SECONDS,
 * then on until WARMUP_HANDSHAKES were made or WARMUP_MAX_SECONDS passed. V8 optimises hsmproxy's
 * handshake path only after a few thousand handshakes (a fresh process spends 2-3x the CPU per
 * handshake of a warm one over its first 2,000); a proxy serves for days, so the steady state is
 * the figure that compares. Every server gets the same warm-up.
 */
async function warmUp(client: TlsLoadClient, server: RunningServer, threads: number, mode: 'full' | 'resumed'): Promise<void> {
  const t0 = Date.now();
  let done = (await client.run(server.port, WARMUP_SECONDS, threads, mode)).connections;
  if (warmed.has(server)) return; // a server measured again (the sweep): already warm
  while (done < WARMUP_HANDSHAKES && Date.now() - t0 < WARMUP_MAX_SECONDS * 1000) done += (await client.run(server.port, 1, threads, mode)).connections;
  warmed.add(server);
}
const warmed = new WeakSet<RunningServer>();

function processCpuMs(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

async function runKey(client: TlsLoadClient, key: Key, cert: TestCert, nginxBin: string | undefined): Promise<TlsBenchPoint[]> {
  const points: TlsBenchPoint[] = [];
  for (const mode of ['full', 'resumed'] as const) {
    const soft = await softEngineSigner(cert.keyFile);
    const ours = await startHsmproxyTls(cert.chain, soft.signer);
    points.push(await measure(client, { server: 'hsmproxy', keySource: 'soft', key, mode }, ours, { server: processCpuMs }));
    await ours.close();
    await soft.close();
    const node = await startNodeTls(cert.certFile, cert.keyFile);
    points.push(await measure(client, { server: 'node:tls', keySource: 'file', key, mode }, node, { server: processCpuMs }));
    await node.close();
    if (nginxBin) {
      const nginx = await startNginx(nginxBin, { certFile: cert.certFile, keyFile: cert.keyFile });
      points.push(await measure(client, { server: 'nginx', keySource: 'file', key, mode }, nginx, { server: nginx.cpuMs }));
      await nginx.close();
    }
  }
  // Resumed handshakes sign nothing: the cluster matters for full handshakes only.
  for (const profile of PROFILES) {
    for (const hsms of HSMS) {
      const cs = await clusterSigner(cert.keyFile, hsms, profile);
      try {
        const ours = await startHsmproxyTls(cert.chain, cs.signer);
        points.push(await measure(client, { server: 'hsmproxy', keySource: 'cluster', hsms, profile, key, mode: 'full' }, ours, { server: processCpuMs, hsm: cs.hsmCpuMs }));
        await ours.close();
      } finally {
        await cs.close();
      }
    }
  }
  return points;
}

/**
 * The server flight in one write after the signature ('whole') against ServerHello..Certificate
 * first ('split'), with the key in 2 HSMs (unlimited: the proxy's CPU is the limit) and in one
 * hsm2m.medium HSM (a slower signature the split could overlap), alternated ROUNDS times.
 */
async function runFlight(client: TlsLoadClient, certs: { rsa: TestCert; ec: TestCert }): Promise<TlsBenchPoint[]> {
  const points: TlsBenchPoint[] = [];
  for (const [key, cert] of [['p256', certs.ec], ['rsa2048', certs.rsa]] as const) {
    for (const [hsms, profile] of [[2, 'unlimited'], [1, 'hsm2m.medium']] as const) {
      const cs = await clusterSigner(cert.keyFile, hsms, profile);
      try {
        for (let round = 0; round < FLIGHT_ROUNDS; round++) {
          for (const serverFlight of ['whole', 'split'] as const) {
            const ours = await startHsmproxyTls(cert.chain, cs.signer, serverFlight);
            points.push(await measure(client, { server: 'hsmproxy', keySource: 'cluster', hsms, profile, key, mode: 'full', serverFlight }, ours, { server: processCpuMs, hsm: cs.hsmCpuMs }));
            await ours.close();
          }
        }
      } finally {
        await cs.close();
      }
    }
  }
  return points;
}

/** Handshake rate and latency against connections in flight: soft key vs one slow HSM. */
async function runSweep(client: TlsLoadClient, cert: TestCert): Promise<TlsBenchPoint[]> {
  const points: TlsBenchPoint[] = [];
  const soft = await softEngineSigner(cert.keyFile);
  const ours = await startHsmproxyTls(cert.chain, soft.signer);
  for (const threads of SWEEP) points.push(await measure(client, { server: 'hsmproxy', keySource: 'soft', key: 'p256', mode: 'full' }, ours, { server: processCpuMs }, threads));
  await ours.close();
  await soft.close();
  const cs = await clusterSigner(cert.keyFile, 1, 'hsm1.medium');
  try {
    const viaHsm = await startHsmproxyTls(cert.chain, cs.signer);
    for (const threads of SWEEP) points.push(await measure(client, { server: 'hsmproxy', keySource: 'cluster', hsms: 1, profile: 'hsm1.medium', key: 'p256', mode: 'full' }, viaHsm, { server: processCpuMs, hsm: cs.hsmCpuMs }, threads));
    await viaHsm.close();
  } finally {
    await cs.close();
  }
  return points;
}

/**
 * hsmproxy ÷ baseline, per key and mode: handshakes/s, and CPU per handshake (baseline ÷ ours, >1 = ours cheaper).
 * With the key in HSMs, "ours" is the proxy process plus the HSM processes: the signature's CPU moved, it did not vanish.
 */
function ratios(points: TlsBenchPoint[]): TlsBenchResult['ratios'] {
  const out: TlsBenchResult['ratios'] = [];
  for (const p of points.filter((x) => x.server === 'hsmproxy')) {
    const ours = p.keySource === 'soft' ? 'hsmproxy (soft key)' : `hsmproxy (key in ${p.hsms} HSM${p.hsms === 1 ? '' : 's'}, ${p.profile})`;
    const cpu = p.serverCpuMsPerHandshake + (p.hsmCpuMsPerHandshake ?? 0);
    for (const baseline of ['node:tls', 'nginx'] as const) {
      const b = points.find((x) => x.server === baseline && x.key === p.key && x.mode === p.mode);
      if (b) out.push({ ours, baseline, key: p.key, mode: p.mode, perSecond: round(p.perSecond / b.perSecond), cpuPerHandshake: round(b.serverCpuMsPerHandshake / cpu) });
    }
  }
  return out;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

const nginx = findNginx();
if ('missing' in nginx) console.log(nginx.missing);
const client = buildTlsLoad();
const certs = makeTestCerts(['localhost']);
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'tls.json');
try {
  const loadavg = os.loadavg();
  console.log(`bench/tls: ${SECONDS} s per point, ${THREADS} connections in flight, node ${process.version}, ${os.cpus().length} CPUs, load average ${loadavg.map((x) => x.toFixed(2)).join(' ')}`);
  let result: TlsBenchResult;
  if (PARTS.includes('matrix')) {
    const points = [
      ...await runKey(client, 'rsa2048', certs.rsa, 'bin' in nginx ? nginx.bin : undefined),
      ...await runKey(client, 'p256', certs.ec, 'bin' in nginx ? nginx.bin : undefined),
    ];
    result = {
      kind: 'tls', date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadavg, loadavgAfter: os.loadavg(),
      client: `bench/lib/tls-load.c (${execFileSync('openssl', ['version'], { encoding: 'utf8' }).trim().split(' (')[0]}), ${THREADS} threads, one handshake + one tiny HTTP/1.1 request per connection, each server measured after ${WARMUP_HANDSHAKES} handshakes of warm-up (at most ${WARMUP_MAX_SECONDS} s)`,
      nginx: 'bin' in nginx ? nginx.version : null, nginxSkipped: 'missing' in nginx ? nginx.missing : null,
      secondsPerPoint: SECONDS, threads: THREADS, points, ratios: ratios(points),
    };
    for (const r of result.ratios) console.log(`ratio ${r.ours} / ${r.baseline.padEnd(8)} ${r.key.padEnd(8)} ${r.mode.padEnd(8)} handshakes/s ${r.perSecond.toFixed(2)}  CPU per handshake (${r.baseline} ÷ ours) ${r.cpuPerHandshake.toFixed(2)}`);
  } else {
    result = JSON.parse(readFileSync(out, 'utf8')) as TlsBenchResult;
  }
  if (PARTS.includes('flight')) result.flight = { date: new Date().toISOString(), loadavg: os.loadavg(), points: await runFlight(client, certs) };
  if (PARTS.includes('sweep')) result.sweep = { date: new Date().toISOString(), loadavg: os.loadavg(), points: await runSweep(client, certs.ec) };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${out}`);
} finally {
  certs.cleanup();
  client.cleanup();
}
