// Keep-alive HTTPS requests per second and latency through hsmproxy (the Proxy over the
// offloading TLS listener, key in a 1-HSM embedded cluster) and through nginx as a reverse proxy
// (same certificate, key file, one worker), both to the same upstream process; plus the upstream
// over plain HTTP as the floor. Same C client for all: h2load --h1, CONNECTIONS connections, one
// request in flight each; HTTP/2 rows (hsmproxy on both listeners, nginx with `http2`) use
// h2load -c 16 -m 10. Writes bench/results/proxy.json.
// Run: npm run bench:proxy   (env BENCH_SECONDS, default 5; BENCH_CONNECTIONS, default 32;
// BENCH_WORKERS, default 2: a second round of `hsmproxy serve` with that many workers against nginx
// with as many worker processes)
import os from 'node:os';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { parseConfig } from '../src/config/index.js';
import { Proxy } from '../src/proxy/index.js';
import { offloadListenerFactory } from '../src/proxy/offload-listener.js';
import { nodeTlsListenerFactory } from '../src/proxy/node-tls-listener.js';
import type { ProxyBenchPoint, ProxyBenchResult } from '../src/bench/summary.js';
import { prepareServeDir, serveYaml, startServe } from '../test/helpers/serve-fixture.js';
import { makeTestCerts } from '../test/helpers/tls-certs.js';
import { findH2load, runH2load } from './lib/h2load.js';
import { findNginx, startNginx } from './lib/nginx.js';
import { clusterKey } from './lib/servers.js';
import { treeCpuMs } from './lib/procs.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
// A second round with this many worker processes on both sides (1 skips it).
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
// The HTTP/2 rows: h2load -c 16 -m 10 (160 requests in flight over 16 connections).
const H2_CONNECTIONS = 16;
const H2_STREAMS = 10;

function processCpuMs(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

async function startUpstream(): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const self = fileURLToPath(import.meta.url);
  const entry = join(dirname(self), 'lib', `upstream${extname(self)}`);
  const child = spawn(process.execPath, [...process.execArgv, entry], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = await once(child.stdout, 'data') as [Buffer];
  return {
    url: `http://127.0.0.1:${line.toString().trim()}`, pid: child.pid!,
    stop: async () => {
      if (child.exitCode === null) { child.kill('SIGTERM'); await once(child, 'exit'); }
    },
  };
}

async function measure(server: ProxyBenchPoint['server'], url: string, cpu: () => number, upstreamPid: number, h2Streams = 0): Promise<ProxyBenchPoint> {
  const c0 = cpu();
  const u0 = treeCpuMs(upstreamPid);
  const r = await runH2load(url, h2Streams > 0 ? H2_CONNECTIONS : CONNECTIONS, SECONDS, 1, h2Streams);
  // h2load's warm-up is included in the CPU delta; scale by measured share of the run.
  const share = SECONDS / (SECONDS + 1);
  const n = Math.max(1, r.requests);
  const p: ProxyBenchPoint = {
    server, requestsPerSec: r.requestsPerSec, requests: r.requests, errors: r.errors, latencyMs: r.latencyMs,
    serverCpuMsPerRequest: Math.round((((cpu() - c0) * share) / n) * 1000) / 1000,
  };
  const upstreamCpu = ((treeCpuMs(upstreamPid) - u0) * share) / n;
  console.log(`${server.padEnd(28)} ${String(p.requestsPerSec).padStart(7)} req/s  p50 ${r.latencyMs.p50.toFixed(2)} p99 ${r.latencyMs.p99.toFixed(2)} ms  server CPU ${p.serverCpuMsPerRequest.toFixed(3)} ms/req (upstream ${upstreamCpu.toFixed(3)})${r.errors ? `  ${r.errors} errors` : ''}`);
  return p;
}

const h2 = findH2load();
if ('missing' in h2) {
  console.log(`${h2.missing}: cannot run the proxy benchmark`);
  process.exit(1);
}
const nginx = findNginx();
if ('missing' in nginx) console.log(nginx.missing);
const certs = makeTestCerts(['localhost']);
const upstream = await startUpstream();
const key = await clusterKey(certs.ec.keyFile, 1, 'unlimited');
try {
  const loadavg = os.loadavg();
  console.log(`bench/proxy: ${SECONDS} s per server, ${CONNECTIONS} keep-alive connections, node ${process.version}, load average ${loadavg.map((x) => x.toFixed(2)).join(' ')}`);
  const points: ProxyBenchPoint[] = [];
  points.push(await measure('upstream (direct)', `${upstream.url}/`, () => treeCpuMs(upstream.pid), upstream.pid));

  const config = parseConfig(`
listeners: [{ name: bench, address: 127.0.0.1, port: 0, certificates: [{ cert: "${certs.ec.certFile}", key: "${key.refFile}" }] }]
routes: [{ upstream: [ "${upstream.url}" ] }]
admin: { address: 127.0.0.1, port: 0 }
`);
  const proxy = new Proxy({ config, tlsListenerFactory: offloadListenerFactory({ engine: key.engine }), logger: pino({ level: 'silent' }) });
  await proxy.start();
  points.push(await measure('hsmproxy', `https://127.0.0.1:${proxy.listenerAddress('bench')!.port}/`, processCpuMs, upstream.pid));
  points.push(await measure('hsmproxy, h2', `https://127.0.0.1:${proxy.listenerAddress('bench')!.port}/`, processCpuMs, upstream.pid, H2_STREAMS));
  await proxy.shutdown(1000);

  // The same Proxy over node:tls (key file): separates the TLS record layer's cost from HTTP proxying's.
  const nodeConfig = parseConfig(`
listeners: [{ name: bench, address: 127.0.0.1, port: 0, certificates: [{ cert: "${certs.ec.certFile}", key: "${certs.ec.keyFile}" }] }]
routes: [{ upstream: [ "${upstream.url}" ] }]
admin: { address: 127.0.0.1, port: 0 }
`);
  const viaNode = new Proxy({ config: nodeConfig, tlsListenerFactory: nodeTlsListenerFactory, logger: pino({ level: 'silent' }) });
  await viaNode.start();
  points.push(await measure('hsmproxy (node:tls listener)', `https://127.0.0.1:${viaNode.listenerAddress('bench')!.port}/`, processCpuMs, upstream.pid));
  points.push(await measure('hsmproxy (node:tls listener), h2', `https://127.0.0.1:${viaNode.listenerAddress('bench')!.port}/`, processCpuMs, upstream.pid, H2_STREAMS));
  await viaNode.shutdown(1000);

  if ('bin' in nginx) {
    const n = await startNginx(nginx.bin, { certFile: certs.ec.certFile, keyFile: certs.ec.keyFile, upstream: upstream.url });
    points.push(await measure('nginx', `https://127.0.0.1:${n.port}/`, n.cpuMs, upstream.pid));
    await n.close();
    // nginx 1.22 (Debian 12) spells `http2 on` as `listen … ssl http2`.
    const n2 = await startNginx(nginx.bin, { certFile: certs.ec.certFile, keyFile: certs.ec.keyFile, upstream: upstream.url, http2: true });
    points.push(await measure('nginx, h2', `https://127.0.0.1:${n2.port}/`, n2.cpuMs, upstream.pid, H2_STREAMS));
    await n2.close();
  }

  if (WORKERS > 1) {
    // `hsmproxy serve` with workers (node:cluster, each with its own cluster client) against nginx
    // with as many worker processes; the access log is off on both sides.
    const d = await prepareServeDir();
    try {
      const s = await startServe(d, serveYaml(d, upstream.url, `workers: ${WORKERS}\nlog: { level: warn }`));
      try {
        points.push(await measure(`hsmproxy, ${WORKERS} workers`, `https://127.0.0.1:${s.port}/`, () => treeCpuMs(s.child.pid!), upstream.pid));
      } finally {
        await s.stop();
      }
    } finally {
      await d.cleanup();
    }
    if ('bin' in nginx) {
      const n = await startNginx(nginx.bin, { certFile: certs.ec.certFile, keyFile: certs.ec.keyFile, upstream: upstream.url, workers: WORKERS });
      points.push(await measure(`nginx, ${WORKERS} workers`, `https://127.0.0.1:${n.port}/`, n.cpuMs, upstream.pid));
      await n.close();
    }
  }
  const ratioOf = (ours: ProxyBenchPoint, b: ProxyBenchPoint) => ({
    baseline: b.server, requestsPerSec: Math.round((ours.requestsPerSec / b.requestsPerSec) * 100) / 100,
    cpuPerRequest: Math.round((b.serverCpuMsPerRequest / ours.serverCpuMsPerRequest) * 100) / 100,
  });
  const ratios = points.filter((p) => p.server === 'nginx').map((b) => ratioOf(points.find((p) => p.server === 'hsmproxy')!, b));
  const oursN = points.find((p) => p.server === `hsmproxy, ${WORKERS} workers`);
  const nginxN = points.find((p) => p.server === `nginx, ${WORKERS} workers`);
  if (oursN && nginxN) ratios.push(ratioOf(oursN, nginxN));
  const oursH2 = points.find((p) => p.server === 'hsmproxy, h2');
  const nginxH2 = points.find((p) => p.server === 'nginx, h2');
  if (oursH2 && nginxH2) ratios.push(ratioOf(oursH2, nginxH2));
  for (const r of ratios) console.log(`ratio hsmproxy/${r.baseline}: requests/s ${r.requestsPerSec.toFixed(2)}, CPU per request (${r.baseline} ÷ ours) ${r.cpuPerRequest.toFixed(2)}`);
  const result: ProxyBenchResult = {
    kind: 'proxy', date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadavg,
    client: `${h2.version} --h1, ${CONNECTIONS} connections, 1 request in flight each; h2 rows: -c ${H2_CONNECTIONS} -m ${H2_STREAMS}`,
    nginx: 'bin' in nginx ? nginx.version : null, nginxSkipped: 'missing' in nginx ? nginx.missing : null,
    seconds: SECONDS, connections: CONNECTIONS, points, ratios,
  };
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'proxy.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${out}`);
} finally {
  await key.close();
  await upstream.stop();
  certs.cleanup();
}
