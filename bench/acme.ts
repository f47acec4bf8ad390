// ACME against Pebble on loopback: the time from spawning `hsmproxy serve` to its first ACME
// certificate being served, and the handshakes and requests lost while a forced renewal swaps the
// certificate under load: bench/lib/tls-load.c opening new full handshakes (SNI = the ACME name)
// next to h2load --h1 keep-alive traffic, both for BENCH_SECONDS (default 20), the renewal forced
// a third of the way in. Needs pebble, gcc + libssl-dev and h2load.
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { cliEntry } from '../test/helpers/cli.js';
import { freePorts, startPebble } from '../test/helpers/pebble.js';
import { prepareServeDir, startServe } from '../test/helpers/serve-fixture.js';
import { runH2load } from './lib/h2load.js';
import { buildTlsLoad } from './lib/tls-load.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 20);
const tsx = createRequire(import.meta.url).resolve('tsx');

function servedSerial(port: number, servername: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, ca }, () => {
      const serial = s.getPeerX509Certificate()?.serialNumber ?? '';
      s.destroy();
      resolve(serial);
    });
    s.on('error', reject);
  });
}

const d = await prepareServeDir();
const upstream = createServer((_req, res) => res.end('ok'));
upstream.listen(0, '127.0.0.1');
await once(upstream, 'listening');
const [port, httpPort] = await freePorts(2) as [number, number];
const pebble = await startPebble({ tlsPort: port, httpPort });
const name = `bench-${randomBytes(4).toString('hex')}.acme.test`;
const load = buildTlsLoad();
try {
  const yaml = `
listeners:
  # The load comes from one address: per-client limits off, so only the renewal could cost a handshake.
  - name: main
    address: 127.0.0.1
    port: ${port}
    certificates: [{ acme: { names: [${name}] } }]
    limits: { perClient: { maxConnections: 0, maxHandshakes: 0, handshakesPerSecond: 0 } }
routes: [{ upstream: [http://127.0.0.1:${(upstream.address() as AddressInfo).port}] }]
hsm: { mode: embedded, dir: ${d.data}, hsms: 2 }
admin: { address: 127.0.0.1, port: 0 }
acme: { directory: ${pebble.directory}, directoryCa: ${pebble.caFile}, termsOfServiceAgreed: true }
`;
  const t0 = performance.now();
  const proc = await startServe(d, yaml);
  const listening = performance.now() - t0;
  const root = await pebble.root();
  let first = '';
  while (!first) {
    first = await servedSerial(port, name, root).catch(() => '');
    if (!first) await new Promise((r) => setTimeout(r, 50));
    if (performance.now() - t0 > 120_000) throw new Error(`no certificate after 120 s:\n${proc.stderr()}`);
  }
  const firstCert = performance.now() - t0;

  const load1 = performance.now();
  const handshakes = load.run(port, seconds, 2, 'full', name);
  const keepAlive = runH2load(`https://127.0.0.1:${port}/`, 4, seconds, 0);
  await new Promise((r) => setTimeout(r, (seconds * 1000) / 3));
  const renewStart = performance.now();
  const renew = await new Promise<string>((resolve, reject) => execFile(process.execPath, [`--import=${tsx}`, cliEntry, 'acme', 'renew', '--config', join(d.dir, 'hsmproxy.yaml'), '--name', name, '--force', '--json'], (err, out, errText) => (err ? reject(new Error(errText)) : resolve(out))));
  const renewMs = performance.now() - renewStart;
  const [h, k] = await Promise.all([handshakes, keepAlive]);
  const after = await servedSerial(port, name, root);
  await proc.stop();
  const r = JSON.parse(renew) as { serial: string };
  const fmt = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
  process.stdout.write([
    `# ACME (Pebble on loopback), ${new Date().toISOString()}, load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    '',
    '| measure | value |',
    '|---|---|',
    `| serve spawned → listening (embedded cluster start included) | ${fmt(listening)} |`,
    `| serve spawned → first ACME certificate served | ${fmt(firstCert)} |`,
    `| first listening → first certificate (account, order, tls-alpn-01, HSM key + CSR, finalize) | ${fmt(firstCert - listening)} |`,
    `| forced renewal (acme renew --force → new serial in the store) | ${fmt(renewMs)} |`,
    `| serial before / returned by renew / served after | ${first} / ${r.serial} / ${after} |`,
    `| full handshakes during the ${seconds} s window (tls-load, 2 threads) | ${h.connections} (${h.perSecond.toFixed(0)}/s), errors ${h.errors} |`,
    `| keep-alive requests (h2load --h1, 4 connections) | ${k.requests} (${k.requestsPerSec.toFixed(0)}/s), errors ${k.errors} |`,
    `| load window started → renewal forced | ${fmt(renewStart - load1)} |`,
    '',
  ].join('\n'));
} finally {
  load.cleanup();
  await pebble.stop();
  upstream.close();
  await d.cleanup();
}
