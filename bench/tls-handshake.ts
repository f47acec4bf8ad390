// Full and resumed TLS 1.3 handshakes per second: our TlsServer vs node:tls, same key and
// certificate (RSA-2048, ECDSA P-256), same client for both, in one run: full handshakes from
// `openssl s_time -new` (C, so the client's CPU is small and identical), resumed ones from a
// node:tls client (bench/tls-resume-client.ts; s_time cannot resume TLS 1.3). Writes
// bench/results/tls-handshake.json.
// Run: node --import=tsx bench/tls-handshake.ts   (env BENCH_SECONDS per point, default 10;
// BENCH_CLIENTS parallel s_time processes, default 2)
import tls from 'node:tls';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import type { AddressInfo, Socket } from 'node:net';
import { createServer as createTlsServer } from '../src/tls/server.js';
import { makeTestCerts, type TestCert } from '../test/helpers/tls-certs.js';
import { SoftSigner } from '../test/helpers/soft-signer.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 2);

interface Point { server: 'hsmproxy' | 'node:tls'; key: 'rsa2048' | 'p256'; mode: 'full' | 'resumed'; handshakes: number; seconds: number; perSecond: number; serverCpuMsPerHandshake: number }

/** A server is anything that listens and closes; both kinds answer a close with a close. */
interface Running { port: number; close(): Promise<void> }

/** Both servers get TCP_NODELAY: the async flight goes out in two writes, and Nagle + delayed ACK would add 40 ms. */
function noDelay(raw: Socket): void { raw.setNoDelay(true); }

function serveQuietly(socket: Socket | tls.TLSSocket | import('node:stream').Duplex): void {
  socket.on('error', () => { /* s_time hangs up abruptly */ });
  socket.on('end', () => socket.end());
  socket.resume();
}

async function startOurs(cert: TestCert): Promise<Running> {
  const server = createTlsServer({ certificates: [{ chain: cert.chain, signer: new SoftSigner(cert.key) }] }, serveQuietly);
  server.on('tlsClientError', () => { /* counted by the client */ });
  server.netServer.on('connection', noDelay);
  server.listen({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

async function startNode(cert: TestCert): Promise<Running> {
  const server = tls.createServer({ key: readFileSync(cert.keyFile), cert: readFileSync(cert.certFile), minVersion: 'TLSv1.3' }, serveQuietly);
  server.on('tlsClientError', () => { /* counted by the client */ });
  server.on('connection', noDelay);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

/** Runs the resumption client (one process, CLIENTS × 4 connections in parallel) for SECONDS. */
async function resumeClient(port: number, caFile: string): Promise<number> {
  const entry = join(dirname(fileURLToPath(import.meta.url)), `tls-resume-client${extname(fileURLToPath(import.meta.url))}`);
  const child = spawn(process.execPath, [...process.execArgv, entry, String(port), caFile, String(SECONDS), String(CLIENTS * 4)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  await once(child, 'close');
  const r = JSON.parse(out) as { handshakes: number; resumed: number };
  if (r.resumed < r.handshakes * 0.99) throw new Error(`only ${r.resumed} of ${r.handshakes} handshakes resumed`);
  return r.resumed;
}

/** Runs CLIENTS parallel `openssl s_time -new` processes for SECONDS; returns total connections. */
async function sTime(port: number, seconds = SECONDS): Promise<number> {
  const runs = Array.from({ length: CLIENTS }, async () => {
    const child = spawn('openssl', ['s_time', '-connect', `127.0.0.1:${port}`, '-tls1_3', '-new', '-time', String(seconds)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    await once(child, 'close');
    const m = /(\d+) connections in [\d.]+s/.exec(out);
    if (!m) throw new Error(`could not read s_time output:\n${out}`);
    return Number(m[1]);
  });
  return (await Promise.all(runs)).reduce((a, b) => a + b, 0);
}

async function measure(server: Point['server'], key: Point['key'], mode: Point['mode'], cert: TestCert): Promise<Point> {
  const running = server === 'hsmproxy' ? await startOurs(cert) : await startNode(cert);
  await sTime(running.port, 2); // warm-up (JIT, key pools), not measured
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const handshakes = mode === 'full' ? await sTime(running.port) : await resumeClient(running.port, cert.caFile);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await running.close();
  const p: Point = { server, key, mode, handshakes, seconds, perSecond: handshakes / seconds, serverCpuMsPerHandshake: (cpu.user + cpu.system) / 1000 / Math.max(1, handshakes) };
  console.log(`${server.padEnd(9)} ${key.padEnd(8)} ${mode.padEnd(8)} ${p.perSecond.toFixed(0).padStart(6)} handshakes/s  (${handshakes} in ${seconds.toFixed(1)} s, server CPU ${p.serverCpuMsPerHandshake.toFixed(2)} ms each)`);
  return p;
}

const certs = makeTestCerts(['localhost']);
try {
  const points: Point[] = [];
  for (const [key, cert] of [['rsa2048', certs.rsa], ['p256', certs.ec]] as const) {
    for (const mode of ['full', 'resumed'] as const) {
      for (const server of ['hsmproxy', 'node:tls'] as const) points.push(await measure(server, key, mode, cert));
    }
  }
  // perSecond: what the same client achieved (latency-bound when the box is busy);
  // cpu: node:tls server CPU per handshake ÷ ours, i.e. the ratio once the server is the bottleneck.
  const ratios: Record<string, { perSecond: number; cpu: number }> = {};
  for (const p of points.filter((x) => x.server === 'hsmproxy')) {
    const base = points.find((x) => x.server === 'node:tls' && x.key === p.key && x.mode === p.mode)!;
    const r = { perSecond: p.perSecond / base.perSecond, cpu: base.serverCpuMsPerHandshake / p.serverCpuMsPerHandshake };
    ratios[`${p.key}/${p.mode}`] = r;
    console.log(`ratio hsmproxy / node:tls  ${p.key.padEnd(8)} ${p.mode.padEnd(8)} handshakes/s ${r.perSecond.toFixed(2)}  CPU-bound ${r.cpu.toFixed(2)}`);
  }
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'tls-handshake.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify({
    date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadavg: os.loadavg(),
    client: { full: `openssl s_time -tls1_3 -new ×${CLIENTS}`, resumed: `node:tls (bench/tls-resume-client.ts), ${CLIENTS * 4} connections in parallel` }, secondsPerPoint: SECONDS, points, ratios,
  }, null, 2)}\n`);
  console.log(`wrote ${out}`);
} finally {
  certs.cleanup();
}
