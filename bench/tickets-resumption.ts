// Session resumption across two proxies behind a balancer without source affinity: how many
// returning clients resume (no HSM signature) with each proxy's own ticket keys (tickets.keys:
// local) and with keys derived per epoch in the HSM cluster (tickets.keys: hsm).
// Setup, all in this process on loopback: one embedded cluster (2 HSM node processes, `unlimited`),
// two proxies (Proxy on the offloading listener, each with its own cluster client and engine, as
// two machines have), the demo upstream. Each of BENCH_CLIENTS clients makes a full TLS 1.3
// handshake and one GET on proxy i % 2, then comes back BENCH_RETURNS times, each time to a proxy
// picked at random (what a balancer without affinity does), offering its latest ticket.
// Reported: resumed / returning connections; each return not resumed is a full handshake and an HSM signature.
// Run: npm run bench:tickets   (env BENCH_CLIENTS=200, BENCH_RETURNS=3)
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import pino from 'pino';
import { startTicketKeys } from '../src/app/ticket-keys.js';
import type { HsmSide } from '../src/app/hsm-side.js';
import { parseConfig, type TicketsConfig } from '../src/config/index.js';
import { Engine, SimBackend, simClientFrom } from '../src/engine/index.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { connectCluster } from '../src/hsm/cluster/membership.js';
import { ensureDemoPki } from '../src/pki/demo.js';
import { Proxy, startDemoUpstream } from '../src/proxy/index.js';
import { offloadListenerFactory } from '../src/proxy/offload-listener.js';

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 200);
const RETURNS = Number(process.env.BENCH_RETURNS ?? 3);
const quiet = pino({ level: 'silent' });

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-bench-tickets-'));
const cluster = await startEmbeddedCluster({ dir: join(dir, 'data'), hsms: 2, scryptCost: 1024 });
const { clusterId } = await readManifest(join(dir, 'data'));
const cu = cluster.credentials.cu;
const setupBackend = new SimBackend({ client: simClientFrom(cluster.client), clusterId, credentials: cu, ownsClient: false });
const setupEngine = new Engine({ backends: { sim: setupBackend } });
const { files } = await ensureDemoPki(setupEngine, setupBackend, join(dir, 'certs'));
await setupEngine.close();
const ca = readFileSync(files.caCert);
const upstream = await startDemoUpstream();

interface RunningProxy { port: number; close(): Promise<void> }

async function startProxy(tickets: TicketsConfig): Promise<RunningProxy> {
  const client = await connectCluster(join(dir, 'data'), { credentials: cu });
  const backend = new SimBackend({ client: simClientFrom(client), clusterId, credentials: cu, ownsClient: false });
  const engine = new Engine({ backends: { sim: backend } });
  const proxy = new Proxy({
    config: parseConfig(`
listeners: [{ name: main, address: 127.0.0.1, port: 0, certificates: [{ cert: ${files.ecdsaChain}, key: ${files.ecdsaKey} }] }]
routes: [{ upstream: [ "${upstream.url}" ] }]
admin: { address: 127.0.0.1, port: 0 }
`),
    logger: quiet, admin: false, subscribeEvents: false,
    tlsListenerFactory: offloadListenerFactory({
      engine,
      ticketKeys: (await startTicketKeys(tickets, { cluster: client, engine } as unknown as HsmSide, quiet)).keys,
    }),
  });
  await proxy.start();
  return {
    port: proxy.listenerAddress('main')!.port,
    close: async () => { await proxy.shutdown(500); await engine.close(); await client.close(); },
  };
}

function visit(port: number, session?: Buffer): Promise<{ resumed: boolean; session: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    let latest: Buffer | undefined;
    let resumed = false;
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, ...(session ? { session } : {}) }, () => {
      resumed = s.isSessionReused(); // read while the connection is open: after close it is always false
      s.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    });
    s.on('session', (b: Buffer) => { latest = b; });
    s.on('data', () => undefined);
    s.on('error', reject);
    s.on('close', () => resolve({ resumed, session: latest ?? session }));
    s.setTimeout(15_000, () => s.destroy(new Error('timed out')));
  });
}

async function run(keys: TicketsConfig['keys']): Promise<{ keys: string; returns: number; resumed: number }> {
  const tickets: TicketsConfig = { keys, rotateEveryMs: 3_600_000, hsmKeyLabel: 'hsmproxy-bench-tickets' };
  const proxies = [await startProxy(tickets), await startProxy(tickets)];
  const sessions: Array<Buffer | undefined> = [];
  for (let i = 0; i < CLIENTS; i++) sessions.push((await visit(proxies[i % 2]!.port)).session);
  let resumed = 0;
  let returns = 0;
  for (let r = 0; r < RETURNS; r++) {
    for (let i = 0; i < CLIENTS; i++) {
      const v = await visit(proxies[Math.random() < 0.5 ? 0 : 1]!.port, sessions[i]);
      returns++;
      if (v.resumed) resumed++;
      sessions[i] = v.session;
    }
  }
  for (const p of proxies) await p.close();
  return { keys, returns, resumed };
}

try {
  const rows = [await run('local'), await run('hsm')];
  console.log(`\n${CLIENTS} clients, ${RETURNS} returns each to a random one of 2 proxies (TLS 1.3, P-256 key in the HSM)\n`);
  console.log('| tickets.keys | returning connections | resumed | resumption rate | full handshakes (1 HSM signature each) |');
  console.log('|---|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(`| ${r.keys} | ${r.returns} | ${r.resumed} | ${(100 * r.resumed / r.returns).toFixed(1)}% | ${r.returns - r.resumed} |`);
  }
} finally {
  await upstream.close();
  await cluster.stop();
  rmSync(dir, { recursive: true, force: true });
}
