// Throughput and latency of the HTTP proxy layer on loopback: keep-alive HTTPS requests through
// the proxy (node:tls front, ECDSA P-256 key file) to the demo upstream, next to the same
// requests sent straight to the upstream over HTTP (the floor). Connections are reused, so this
// measures proxying, not handshakes. Latencies in ms; cpuUsPerRequest covers client, proxy and
// upstream together (all in this process), which stays meaningful on a loaded machine.
// Run: node --import=tsx bench/proxy-http.ts [seconds=3] [concurrency=16]
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { Pool } from 'undici';
import { parseConfig } from '../src/config/index.js';
import { nodeTlsListenerFactory, Proxy, startDemoUpstream } from '../src/proxy/index.js';
import { issue, makeCa } from '../test/helpers/proxy-certs.js';

const seconds = Number(process.argv[2] ?? 3);
const concurrency = Number(process.argv[3] ?? 16);

async function drive(pool: Pool, path: string): Promise<{ rps: number; p50: number; p99: number; cpuUsPerRequest: number; errors: number }> {
  const lat: number[] = [];
  const cpu0 = process.cpuUsage();
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      try {
        const r = await pool.request({ path, method: 'GET', headers: { host: 'localhost' } });
        await r.body.text();
        if (r.statusCode !== 200) errors++;
      } catch {
        errors++;
      }
      lat.push(performance.now() - t0);
    }
  }));
  const cpu = process.cpuUsage(cpu0);
  lat.sort((a, b) => a - b);
  const q = (p: number) => Number(lat[Math.min(lat.length - 1, Math.floor(lat.length * p))]!.toFixed(3));
  // CPU of this whole process (client, proxy and upstream): robust when the machine is shared.
  const cpuUsPerRequest = Math.round((cpu.user + cpu.system) / lat.length);
  return { rps: Math.round(lat.length / seconds), p50: q(0.5), p99: q(0.99), cpuUsPerRequest, errors };
}

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-bench-'));
const ca = makeCa(dir);
const leaf = issue(dir, 'localhost', ['localhost']);
const upstream = await startDemoUpstream();
const config = parseConfig(`
listeners: [{ name: bench, address: 127.0.0.1, port: 0, certificates: [{ cert: "${leaf.cert}", key: "${leaf.key}" }] }]
routes: [{ upstream: [ "${upstream.url}" ] }]
admin: { address: 127.0.0.1, port: 0 }
`);
const proxy = new Proxy({ config, tlsListenerFactory: nodeTlsListenerFactory, logger: pino({ level: 'silent' }) });
await proxy.start();
const port = proxy.listenerAddress('bench')!.port;

const direct = new Pool(upstream.url, { connections: concurrency });
const proxied = new Pool(`https://localhost:${port}`, { connections: concurrency, connect: { ca: readFileSync(ca), host: '127.0.0.1', servername: 'localhost' } });
await drive(direct, '/'); // warm-up
const results = {
  node: process.version, seconds, concurrency,
  direct: await drive(direct, '/'),
  proxied: await drive(proxied, '/'),
};
console.log(JSON.stringify(results, null, 2));
await direct.close();
await proxied.close();
await proxy.shutdown(1000);
await upstream.close();
rmSync(dir, { recursive: true, force: true });
