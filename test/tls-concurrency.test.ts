// Asynchronous signing under load: 1,000 concurrent handshakes against a 50 ms signer overlap
// (total far below 1,000 × 50 ms) while the event loop stays responsive; a failing or slow
// signer fails only its own handshake; a client that leaves mid-signature leaks nothing.
import t from 'tap';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { extname } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createServer, type TlsServer, type TlsServerOptions } from '../src/tls/server.js';
import type { Signer } from '../src/tls/signer.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner, type SoftSignerOptions } from './helpers/soft-signer.js';

const certs = makeTestCerts(['localhost']);
t.teardown(() => certs.cleanup());

/** A SoftSigner that also records the peak number of signatures in flight. */
class PeakSigner extends SoftSigner {
  peak = 0;
  override async sign(scheme: number, data: Buffer, signal?: AbortSignal): Promise<Buffer> {
    const p = super.sign(scheme, data, signal);
    this.peak = Math.max(this.peak, this.inFlight);
    return p;
  }
}

async function startServer(signer: Signer, opts: Partial<TlsServerOptions> = {}): Promise<{ server: TlsServer; port: number }> {
  const server = createServer({ certificates: [{ chain: certs.ec.chain, signer }], ticketKeys: false, ...opts });
  server.on('tlsClientError', () => { /* counted through the clients */ });
  server.listen({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port };
}

const closeServer = (s: TlsServer): Promise<void> => new Promise((r) => s.close(() => r()));

async function openConnections(server: TlsServer): Promise<number> {
  const n = await new Promise<number>((r) => server.netServer.getConnections((_e, c) => r(c)));
  return n + server.handshakesInProgress;
}

/** Polls until the server holds no connection and no handshake (or the deadline passes). */
async function drained(server: TlsServer, ms = 5000): Promise<number> {
  const deadline = Date.now() + ms;
  for (;;) {
    const n = await openConnections(server);
    if (n === 0 || Date.now() > deadline) return n;
    await new Promise((r) => setTimeout(r, 25));
  }
}

const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

/** Runs `count` concurrent node:tls clients in a child process (see helpers/tls-load-client.ts). */
async function loadClients(port: number, count: number, wave = count, gapMs = 0): Promise<{ elapsedMs: number; tally: Record<string, number> }> {
  const here = fileURLToPath(import.meta.url);
  const entry = fileURLToPath(new URL(`./helpers/tls-load-client${extname(here)}`, import.meta.url));
  const child = spawn(process.execPath, [...process.execArgv, entry, String(port), String(count), certs.ec.caFile, String(wave), String(gapMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const [code] = await once(child, 'exit') as [number | null];
  if (code !== 0) throw new Error(`load client exited with ${code}`);
  return JSON.parse(out.trim()) as { elapsedMs: number; tally: Record<string, number> };
}

t.test('1,000 concurrent handshakes with a 50 ms signer overlap and keep the event loop responsive', async (t) => {
  const signer = new PeakSigner(certs.ec.key, { latencyMs: 50 });
  const { server, port } = await startServer(signer);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  // All 1,000 connections are opened within ~100 ms (waves of 200 every 20 ms), far inside one
  // handshake's lifetime, so they overlap; a single 1,000-connection SYN burst instead measures
  // how long one poll phase takes to parse 1,000 ClientHellos on a loaded 2-core box.
  const { elapsedMs, tally } = await loadClients(port, 1000, 200, 20);
  loop.disable();
  const maxDelayMs = loop.max / 1e6;
  t.comment(`1000 handshakes in ${elapsedMs.toFixed(0)} ms; peak signatures in flight ${signer.peak}; event loop delay max ${maxDelayMs.toFixed(1)} ms, p99 ${(loop.percentile(99) / 1e6).toFixed(1)} ms`);
  t.same(tally, { ok: 1000 }, 'every handshake completed');
  t.equal(signer.calls, 1000, 'one signature per full handshake');
  t.ok(elapsedMs < 25_000, `far less than 1,000 × 50 ms (took ${elapsedMs.toFixed(0)} ms)`);
  // Serial signing would show a peak of 1. How far above that it goes is set by how fast this
  // CPU parses ClientHellos during one 50 ms signature (~50-90 on a 2-core CI box): a floor, not a target.
  t.ok(signer.peak >= 20, `signatures overlapped (peak ${signer.peak} in flight)`);
  // 1 s on a machine with spare cores; when other processes oversubscribe the CPU, every batch of
  // work stretches with them, so the bound scales with the load average (capped at 5 s — a
  // signer that blocked the loop would cost 1,000 × 50 ms = 50 s).
  const overload = Math.max(1, os.loadavg()[0]! / os.cpus().length);
  const boundMs = Math.min(5000, 1000 * overload);
  t.ok(maxDelayMs < boundMs, `event loop stayed responsive (max delay ${maxDelayMs.toFixed(1)} ms, bound ${boundMs.toFixed(0)} ms at load ${os.loadavg()[0]!.toFixed(1)})`);
  t.equal(await drained(server), 0, 'server counters back to 0');
  await closeServer(server);
});

/** One in-process node:tls client: 'ok' or the error code it saw. */
function handshake(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: readFileSync(certs.ec.caFile), minVersion: 'TLSv1.3' });
    s.once('secureConnect', () => { s.destroy(); resolve('ok'); });
    s.once('error', (e: NodeJS.ErrnoException) => { s.destroy(); resolve(e.code ?? e.message); });
  });
}

/** A signer whose n-th call (1-based) follows `plan(n)`: succeed, reject, or never answer. */
class ScriptedSigner extends SoftSigner {
  private n = 0;
  constructor(key: ConstructorParameters<typeof SoftSigner>[0], private readonly plan: (n: number) => SoftSignerOptions['fault'] | undefined) { super(key); }
  override sign(scheme: number, data: Buffer, signal?: AbortSignal): Promise<Buffer> {
    this.opts = { fault: this.plan(++this.n) };
    return super.sign(scheme, data, signal);
  }
}

t.test('a signer that rejects or misses its deadline fails only its own handshake, with internal_error', async (t) => {
  // Calls 3, 6, 9, … reject; calls 5, 10, 15, … never answer (so the 300 ms deadline fires).
  const signer = new ScriptedSigner(certs.ec.key, (n) => (n % 3 === 0 ? 'reject' : n % 5 === 0 ? 'hang' : undefined));
  const { server, port } = await startServer(signer, { signTimeoutMs: 300 });
  const errors: string[] = [];
  server.on('tlsClientError', (e: { code: string }) => errors.push(e.code));
  const timersBefore = timers();
  const results = await Promise.all(Array.from({ length: 60 }, () => handshake(port)));
  const tally: Record<string, number> = {};
  for (const r of results) tally[r] = (tally[r] ?? 0) + 1;
  t.comment(JSON.stringify(tally));
  // 1..60: multiples of 3 → 20 rejects; multiples of 5 but not 3 → 8 hangs; the other 32 succeed.
  t.equal(tally.ok, 32, 'every handshake whose signature arrived completed');
  t.equal(tally.ERR_SSL_TLSV1_ALERT_INTERNAL_ERROR, 28, 'each failed signature cost only its own handshake, as internal_error');
  t.equal(signer.aborted, 8, 'the hung signatures were aborted at the deadline');
  t.equal(await drained(server), 0, 'server counters back to 0');
  t.equal(signer.inFlight, 0);
  t.ok(timers() <= timersBefore, 'no timers left behind');
  await closeServer(server);
});

t.test('a client that disconnects while its signature is pending leaks nothing', async (t) => {
  const signer = new SoftSigner(certs.ec.key, { fault: 'hang' });
  const { server, port } = await startServer(signer, { signTimeoutMs: 60_000, handshakeTimeoutMs: 60_000 });
  const timersBefore = timers();
  const clients: tls.TLSSocket[] = [];
  for (let i = 0; i < 20; i++) {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: readFileSync(certs.ec.caFile), minVersion: 'TLSv1.3' });
    s.on('error', () => { /* we hang up ourselves */ });
    clients.push(s);
  }
  const deadline = Date.now() + 5000;
  while (signer.inFlight < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(signer.inFlight, 20, 'all 20 handshakes are waiting for the signer');
  t.ok(timers() > timersBefore, 'the server holds deadline timers meanwhile');
  for (const s of clients) s.destroy();
  t.equal(await drained(server), 0, 'server counters back to 0');
  while (signer.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(signer.aborted, 20, 'the signer saw every AbortSignal fire');
  t.equal(signer.inFlight, 0);
  t.ok(timers() <= timersBefore, `no timers left behind (${timers()} now, ${timersBefore} before)`);
  await closeServer(server);
});
