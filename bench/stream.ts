// Large bodies through hsmproxy (issue 15): BENCH_BYTES (default 1 GiB) uploaded and downloaded
// through the proxy (Proxy on the offloading TLS listener, key in a 1-HSM embedded cluster,
// default limits; bench/lib/flood-proxy.ts) to an upstream (bench/lib/stream-upstream.ts), each in
// its own child process. Four transfers, one at a time on a fresh TLS connection: upload with
// Content-Length and chunked, download with Content-Length and chunked. This process streams the
// body from a generator (bench/lib/stream-data.ts) and never holds it; the upstream counts and
// hashes what it gets, and the client hashes what it downloads, both checked against the sha256
// of the generated stream. Measures throughput each way and the proxy's RSS before, at peak
// (VmHWM, reset before each transfer, and sampled every 100 ms) and after. Writes
// bench/results/stream.json.
// Run: node --import=tsx bench/stream.ts
//   env BENCH_BYTES (default 1073741824), BENCH_TRANSFER_TIMEOUT_S (default 300, per transfer)
import https from 'node:https';
import os from 'node:os';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { makeTestCerts } from '../test/helpers/tls-certs.js';
import { memoryMb, resetPeak, startChild, startProxyChild, type BenchChild } from './lib/children.js';
import { cpuMsOf } from './lib/procs.js';
import { streamBlocks, streamSha256 } from './lib/stream-data.js';

const BYTES = Number(process.env.BENCH_BYTES ?? 2 ** 30);
const TRANSFER_TIMEOUT_MS = Number(process.env.BENCH_TRANSFER_TIMEOUT_S ?? 300) * 1000;
const SAMPLE_MS = 100;
// Whole-run bound: four transfers, start-up and the hash of the expected stream.
const RUN_LIMIT_MS = 4 * TRANSFER_TIMEOUT_MS + 180_000;

type Direction = 'upload' | 'download';
type Framing = 'length' | 'chunked';

/** What one transfer did. */
interface Transfer {
  direction: Direction;
  framing: Framing;
  ok: boolean;
  status: number;
  bytes: number;
  sha256: string;
  seconds: number;
  mbPerSec: number;
  /** How the proxy framed the body it sent on (download: to us; upload: to the upstream). */
  proxyFraming: string;
  error?: string;
  proxy: { rssBeforeMb: number; peakMb: number; rssAfterMb: number; peakFrom: 'VmHWM' | 'samples'; cpuPct: number };
  clientPeakRssMb: number;
}

const certs = makeTestCerts(['localhost']);
const children: Array<BenchChild<unknown>> = [];
const limit = setTimeout(() => {
  console.error(`bench/stream: over the ${RUN_LIMIT_MS / 1000} s run limit; killing children`);
  for (const c of children) c.child.kill('SIGKILL');
  certs.cleanup();
  process.exit(1);
}, RUN_LIMIT_MS);
limit.unref();

/** Runs one transfer; resolves with status, byte count, sha256 and framing seen, or an error. */
function transfer(port: number, ca: Buffer, direction: Direction, framing: Framing): Promise<Omit<Transfer, 'seconds' | 'mbPerSec' | 'proxy' | 'clientPeakRssMb' | 'direction' | 'framing'>> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: Omit<Transfer, 'seconds' | 'mbPerSec' | 'proxy' | 'clientPeakRssMb' | 'direction' | 'framing'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const fail = (error: string, status = 0) => done({ ok: false, status, bytes: 0, sha256: '', proxyFraming: '', error });
    const path = direction === 'upload' ? '/sink' : `/source?bytes=${BYTES}&framing=${framing}`;
    const headers: Record<string, string> = direction === 'upload' && framing === 'length' ? { 'content-length': String(BYTES) } : {};
    const req = https.request({ host: '127.0.0.1', port, servername: 'localhost', ca, agent: false, method: direction === 'upload' ? 'POST' : 'GET', path, headers }, (res) => {
      const status = res.statusCode ?? 0;
      if (direction === 'download') {
        const hash = createHash('sha256');
        let bytes = 0;
        const proxyFraming = res.headers['content-length'] !== undefined ? 'length' : res.headers['transfer-encoding'] ?? 'close';
        res.on('data', (c: Buffer) => { bytes += c.length; hash.update(c); });
        res.on('end', () => {
          const sha256 = hash.digest('hex');
          done({ ok: status === 200 && bytes === BYTES && sha256 === expected, status, bytes, sha256, proxyFraming, ...(status === 200 ? {} : { error: `status ${status}` }) });
        });
        res.on('error', (err) => fail(err.message, status));
        return;
      }
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { if (text.length < 4096) text += c; });
      res.on('end', () => {
        try {
          const r = JSON.parse(text) as { bytes: number; sha256: string; framing: string };
          done({ ok: status === 200 && r.bytes === BYTES && r.sha256 === expected, status, bytes: r.bytes, sha256: r.sha256, proxyFraming: r.framing });
        } catch {
          fail(`status ${status}: ${text.slice(0, 200)}`, status);
        }
      });
      res.on('error', (err) => fail(err.message, status));
    });
    req.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
    const timer = setTimeout(() => { req.destroy(); fail(`not done within ${TRANSFER_TIMEOUT_MS / 1000} s`); }, TRANSFER_TIMEOUT_MS);
    if (direction === 'upload') {
      const body = Readable.from(streamBlocks(BYTES), { objectMode: false });
      body.on('error', (err) => fail(err.message));
      body.pipe(req);
    } else req.end();
  });
}

let expected = '';
try {
  const t0 = performance.now();
  expected = streamSha256(BYTES);
  const hashSeconds = (performance.now() - t0) / 1000;
  const upstream = await startChild<number>('stream-upstream', []);
  children.push(upstream);
  const proxy = await startProxyChild(certs.ec.certFile, certs.ec.keyFile, `http://127.0.0.1:${upstream.ready}`);
  children.push(proxy);
  const ca = readFileSync(certs.ec.caFile);
  const loadavg = os.loadavg();
  const mib = BYTES / 2 ** 20;
  console.log(`bench/stream: ${mib} MiB each way through hsmproxy (offload listener), node ${process.version}, ${os.cpus().length} CPUs, load average ${loadavg.map((x) => x.toFixed(2)).join(' ')}; expected sha256 ${expected.slice(0, 16)}… (hashed in ${hashSeconds.toFixed(1)} s)`);
  const rssIdle = memoryMb(proxy.pid);

  const transfers: Transfer[] = [];
  for (const [direction, framing] of [['upload', 'length'], ['upload', 'chunked'], ['download', 'length'], ['download', 'chunked']] as Array<[Direction, Framing]>) {
    const before = memoryMb(proxy.pid);
    const peakReset = resetPeak(proxy.pid);
    let sampledPeak = before?.rss ?? 0;
    let clientPeak = process.memoryUsage.rss();
    const sampler = setInterval(() => {
      sampledPeak = Math.max(sampledPeak, memoryMb(proxy.pid)?.rss ?? 0);
      clientPeak = Math.max(clientPeak, process.memoryUsage.rss());
    }, SAMPLE_MS);
    const cpu0 = cpuMsOf(proxy.pid);
    const start = performance.now();
    const r = await transfer(proxy.ready.port, ca, direction, framing);
    const seconds = (performance.now() - start) / 1000;
    clearInterval(sampler);
    const after = memoryMb(proxy.pid);
    const peak = peakReset && after ? Math.max(after.peak, sampledPeak) : sampledPeak;
    transfers.push({
      direction, framing, ...r, seconds: Math.round(seconds * 100) / 100, mbPerSec: Math.round((r.bytes / 1e6 / seconds) * 10) / 10,
      proxy: {
        rssBeforeMb: before?.rss ?? 0, peakMb: peak, rssAfterMb: after?.rss ?? 0, peakFrom: peakReset ? 'VmHWM' : 'samples',
        cpuPct: Math.round(((cpuMsOf(proxy.pid) - cpu0) / (seconds * 1000)) * 1000) / 10,
      },
      clientPeakRssMb: Math.round(clientPeak / 2 ** 20),
    });
    const last = transfers[transfers.length - 1]!;
    console.log(`${direction} ${framing}: ${last.ok ? 'ok' : `FAILED (${last.error ?? `${last.bytes} bytes, sha256 ${last.sha256.slice(0, 16)}…`})`} in ${last.seconds} s`);
    if (proxy.exited()) {
      console.log(`PROXY EXITED: ${JSON.stringify(proxy.exited())}\n${proxy.stderrTail()}`);
      break;
    }
  }

  console.log(`\nproxy RSS idle before the transfers: ${rssIdle?.rss ?? '?'} MB (peak so far ${rssIdle?.peak ?? '?'} MB)`);
  console.log('direction  framing  proxy framing  verified     MiB   seconds      MB/s   proxy RSS before    peak   after (MB)   proxy CPU   client RSS peak');
  for (const t of transfers) {
    console.log(`${t.direction.padEnd(10)} ${t.framing.padEnd(8)} ${t.proxyFraming.padEnd(14)} ${(t.ok ? 'yes' : 'NO').padEnd(8)} ${(t.bytes / 2 ** 20).toFixed(0).padStart(7)} ${t.seconds.toFixed(2).padStart(9)} ${t.mbPerSec.toFixed(1).padStart(9)} ${t.proxy.rssBeforeMb.toFixed(1).padStart(18)} ${t.proxy.peakMb.toFixed(1).padStart(7)} ${t.proxy.rssAfterMb.toFixed(1).padStart(7)} ${`${t.proxy.cpuPct}%`.padStart(16)} ${String(t.clientPeakRssMb).padStart(14)} MB`);
  }
  console.log('(MB/s = 10^6 bytes per second; peak = VmHWM reset before each transfer, or the 100 ms samples where the reset is not allowed)');

  const result = {
    kind: 'stream', date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadavg,
    bytes: BYTES, expectedSha256: expected, proxyRssIdleMb: rssIdle?.rss, proxyExited: proxy.exited(), transfers,
  };
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'stream.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${out}`);
} finally {
  for (const c of children.reverse()) await c.stop();
  certs.cleanup();
  clearTimeout(limit);
}
