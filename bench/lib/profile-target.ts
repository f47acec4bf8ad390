// What bench/profile.ts runs under node --cpu-prof (the HSM node processes it starts inherit the
// flag): one hot path under load for SECONDS, then a JSON line with the measured window (µs on
// the monotonic clock the profiles use) so start-up is left out of the ranking.
//   handshake  full TLS 1.3 handshakes (P-256) on TlsServer, key in a 1-HSM embedded cluster, C client
//   hsm        HSM round trips: ECDSA P-256 signs through the cluster client, 64 in flight
//   proxy      keep-alive HTTPS requests through the Proxy (offloading listener), h2load
// Usage: profile-target.ts handshake|hsm|proxy SECONDS
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { parseConfig } from '../../src/config/index.js';
import { Proxy } from '../../src/proxy/index.js';
import { offloadListenerFactory } from '../../src/proxy/offload-listener.js';
import { planHsmBench, runHsmBench } from '../../src/bench/hsm.js';
import { makeTestCerts } from '../../test/helpers/tls-certs.js';
import { runH2load } from './h2load.js';
import { clusterKey, startHsmproxyTls } from './servers.js';
import { buildTlsLoad } from './tls-load.js';

const [mode, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg ?? 5);
const nowUs = (): number => Number(process.hrtime.bigint() / 1000n);
let window = { fromUs: 0, toUs: 0 };
let summary = '';

const certs = makeTestCerts(['localhost']);
try {
  if (mode === 'hsm') {
    const plan = planHsmBench({ op: 'sign-ec-p256', concurrency: '64', duration: String(seconds) });
    const fromUs = nowUs();
    const r = await runHsmBench(plan);
    window = { fromUs, toUs: nowUs() };
    summary = `${r.points[0]?.opsPerSec ?? 0} signs/s`;
  } else if (mode === 'handshake') {
    const key = await clusterKey(certs.ec.keyFile, 1, 'unlimited');
    const client = buildTlsLoad();
    try {
      const server = await startHsmproxyTls(certs.ec.chain, await key.engine.signer(key.handle));
      await client.run(server.port, 1, 16, 'full');
      const fromUs = nowUs();
      const r = await client.run(server.port, seconds, 16, 'full');
      window = { fromUs, toUs: nowUs() };
      summary = `${r.perSecond.toFixed(0)} handshakes/s`;
      await server.close();
    } finally {
      client.cleanup();
      await key.close();
    }
  } else if (mode === 'proxy') {
    // The upstream runs in its own process, so the profile holds the proxy's work only.
    const upstreamEntry = join(dirname(fileURLToPath(import.meta.url)), `upstream${extname(fileURLToPath(import.meta.url))}`);
    const child = spawn(process.execPath, [...process.execArgv.filter((a) => !a.startsWith('--cpu-prof')), upstreamEntry], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [portLine] = await once(child.stdout!, 'data') as [Buffer];
    const upstream = { port: Number(portLine.toString().trim()), close: () => child.kill('SIGTERM') };
    const key = await clusterKey(certs.ec.keyFile, 1, 'unlimited');
    try {
      const config = parseConfig(`
listeners: [{ name: bench, address: 127.0.0.1, port: 0, certificates: [{ cert: "${certs.ec.certFile}", key: "${key.refFile}" }] }]
routes: [{ upstream: [ "http://127.0.0.1:${upstream.port}" ] }]
admin: { address: 127.0.0.1, port: 0 }
`);
      const proxy = new Proxy({ config, tlsListenerFactory: offloadListenerFactory({ engine: key.engine }), logger: pino({ level: 'silent' }) });
      await proxy.start();
      const fromUs = nowUs();
      const r = await runH2load(`https://127.0.0.1:${proxy.listenerAddress('bench')!.port}/`, 32, seconds, 0);
      window = { fromUs, toUs: nowUs() };
      summary = `${r.requestsPerSec} requests/s`;
      await proxy.shutdown(1000);
    } finally {
      await key.close();
      upstream.close();
    }
  } else {
    throw new Error('usage: profile-target.ts handshake|hsm|proxy SECONDS');
  }
} finally {
  certs.cleanup();
}
process.stdout.write(`${JSON.stringify({ ...window, summary })}\n`);
