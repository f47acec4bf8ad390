// End to end with a real Prometheus: `hsmproxy serve` in cluster mode in front of one HSM with the
// hsm1.medium hardware profile (8 crypto units, 250 P-256 signs/s: 32 ms per sign when idle),
// scraped by Prometheus on loopback with the repository's scrape config and rules (test copy: 1 s
// intervals, `for` and rate windows shortened, and the SLO set for this hardware as alerts.yml
// says to). A bounded closed loop of full handshakes offers far more than 250 signs/s: signs queue
// for the units, the sign-latency alert fires (read from Prometheus's /api/v1/alerts), and it
// resolves once the load stops.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { parse, stringify } from 'yaml';
import { startNode, type RunningNode } from '../src/hsm/cluster/run-node.js';
import { startDemoUpstream } from '../src/proxy/index.js';
import { cliEntry, repoRoot } from './helpers/cli.js';
import { activate, cliInProcess, freePort, killChild, tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';
import { activeAlerts, skipWithout, startPrometheus, type ApiAlert, type RunningPrometheus } from './helpers/prometheus.js';

const ALERT = 'HsmproxyHsmSignLatencyOverSlo';
// hsm1.medium signs P-256 in 32 ms on each of its 8 units when idle (so the default 20 ms SLO,
// meant for hsm2m.medium, would always be exceeded): an SLO of 100 ms for this hardware. With 64
// handshakes in flight, each sign waits behind ~56 others for a unit (~224 ms), and the HSM
// serves its 250 signs/s while far more are asked of it.
const PROFILE = 'hsm1.medium';
const SLO_SECONDS = 0.1;
const CONCURRENCY = 64;
const MAX_HANDSHAKES = 6000;
const LOAD_MS = 60_000;

/** The repository's rules with every `for` at 1 s, rate windows at 5 s (scrapes every 1 s) and the SLO for this hardware. */
function testRules(text: string): string {
  const doc = parse(text) as { groups: Array<{ rules: Array<{ alert?: string; record?: string; expr: string; for?: string }> }> };
  let slo = false;
  for (const g of doc.groups) {
    for (const r of g.rules) {
      r.expr = r.expr.replace(/\[\d+[smh]\]/g, '[5s]');
      if (r.for) r.for = '1s';
      if (r.record === 'hsmproxy:hsm_sign_latency_slo_seconds') {
        r.expr = `vector(${SLO_SECONDS})`;
        slo = true;
      }
    }
  }
  if (!slo) throw new Error('alerts.yml has no hsmproxy:hsm_sign_latency_slo_seconds rule to set');
  return stringify(doc);
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

t.test('the sign-latency alert fires under an HSM overload and resolves when the load stops', { skip: skipWithout('prometheus') }, async (t) => {
  const cluster = await tempCluster({ hsms: 1, profile: PROFILE });
  const work = await mkdtemp(join(tmpdir(), 'hsmproxy-prom-e2e-'));
  // What the teardown stops, filled in as each piece starts.
  const live: { node?: RunningNode; serve?: ChildProcess; prometheus?: RunningPrometheus } = {};
  const upstream = await startDemoUpstream({});
  t.teardown(async () => {
    await live.prometheus?.stop();
    if (live.serve) await killChild(live.serve, 'SIGKILL');
    await live.node?.stop();
    await upstream.close();
    await cluster.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  // The node runs the profile its manifest entry names, as `hsmproxy hsm serve` would.
  const node = live.node = await startNode({ dir: cluster.dir, scryptCost: TEST_SCRYPT_COST, log: () => undefined });
  await activate(cluster, node.port, 'alice');
  const certs = join(work, 'certs');
  const pki = await cliInProcess(['demo-pki', '--dir', cluster.dir, '--out', certs], { HSMPROXY_PIN: 'alice:cu-password' });
  t.error(pki.error, 'demo-pki');
  const pin = join(work, 'crypto-user.pin');
  await writeFile(pin, 'alice:cu-password', { mode: 0o600 });

  const [port, adminPort] = [await freePort(), await freePort()];
  const config = join(work, 'hsmproxy.yaml');
  await writeFile(config, stringify({
    // The load comes from one address standing for many clients, and the point is an HSM that
    // queues: the per-client limits and the shedding of full handshakes would refuse it instead.
    listeners: [{
      name: 'default', address: '127.0.0.1', port, alpn: ['http/1.1'], certificates: [{ cert: join(certs, 'localhost-ecdsa.chain.pem'), key: join(certs, 'localhost-ecdsa.key.pem') }],
      limits: { maxHandshakes: 100_000, perClient: { maxConnections: 0, maxHandshakes: 0, handshakesPerSecond: 0 } },
    }],
    routes: [{ pathPrefix: '/', upstream: 'demo' }],
    upstreams: { demo: { targets: [upstream.url] } },
    hsm: { mode: 'cluster', manifest: join(cluster.dir, 'cluster.json'), credentials: { file: pin }, signing: { maxInFlight: 256, timeoutMs: 20_000, maxQueue: 100_000, shedFullHandshakesAt: 100_000 } },
    admin: { address: '127.0.0.1', port: adminPort },
    log: { level: 'warn' },
  }));
  const serve = live.serve = spawn(process.execPath, ['--import=tsx', cliEntry, 'serve', '--config', config], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
  let serveLog = '';
  serve.stderr.setEncoding('utf8').on('data', (d: string) => { serveLog = (serveLog + d).slice(-4000); });
  await waitFor('hsmproxy /readyz', async () => {
    if (serve.exitCode !== null) throw new Error(`hsmproxy serve exited: ${serveLog}`);
    return (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).ok ? true : undefined;
  }, 40_000).catch((err: Error) => { throw new Error(`${err.message}: ${serveLog}`); });

  // The repository's scrape config, pointed at this proxy, with fast intervals and the test rules.
  const promDir = join(repoRoot, 'deploy', 'prometheus');
  const scrape = parse(await readFile(join(promDir, 'prometheus.yml'), 'utf8')) as {
    global: Record<string, string>; rule_files: string[]; scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }>;
  };
  t.equal(scrape.scrape_configs[0]?.job_name, 'hsmproxy');
  scrape.global = { ...scrape.global, scrape_interval: '1s', evaluation_interval: '1s' };
  scrape.scrape_configs[0]!.static_configs = [{ targets: [`127.0.0.1:${adminPort}`] }];
  await writeFile(join(work, scrape.rule_files[0]!), testRules(await readFile(join(promDir, 'alerts.yml'), 'utf8')));
  const prometheus = live.prometheus = await startPrometheus(work, stringify(scrape));

  // A closed loop of full handshakes (no session reuse), bounded in count and stopped on demand.
  const ca = await readFile(join(certs, 'dev-ca.crt'));
  let running = true;
  let done = 0;
  let failed = 0;
  const handshake = () => new Promise<void>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, minVersion: 'TLSv1.3' }, () => { done++; s.destroy(); resolve(); });
    s.once('error', () => { failed++; s.destroy(); resolve(); });
    s.setTimeout(30_000, () => s.destroy(new Error('timeout')));
  });
  const loadUntil = Date.now() + LOAD_MS;
  const loops = Array.from({ length: CONCURRENCY }, async () => {
    while (running && done + failed < MAX_HANDSHAKES && Date.now() < loadUntil) await handshake();
  });

  let firing: ApiAlert | undefined;
  try {
    firing = await waitFor(`${ALERT} firing`, async () => (await activeAlerts(prometheus)).find((a) => a.labels.alertname === ALERT && a.state === 'firing'), 45_000);
  } finally {
    running = false;
    await Promise.all(loops);
  }
  t.equal(firing.labels.hsm, 'hsm-1', 'on the overloaded HSM');
  t.ok(Number(firing.value) > SLO_SECONDS, `p99 sign latency ${Number(firing.value).toFixed(3)} s is over the ${SLO_SECONDS * 1000} ms SLO`);
  t.ok(done > 0, `${done} handshakes completed under overload`);
  t.equal(failed, 0, 'none failed: the HSM queued them, slowly');
  // The latency is queueing for the profile's units (overload), on top of the profile's own service time.
  const metrics = await fetch(`http://127.0.0.1:${adminPort}/metrics`).then((r) => r.text());
  const mean = (name: string) => Number(new RegExp(`^${name}_sum\\{op="sign",[^}]*\\} (\\S+)$`, 'm').exec(metrics)?.[1]) / Number(new RegExp(`^${name}_count\\{op="sign",[^}]*\\} (\\S+)$`, 'm').exec(metrics)?.[1]);
  const service = mean('hsmproxy_hsm_service_seconds');
  const queue = mean('hsmproxy_hsm_queue_wait_seconds');
  t.ok(service >= 0.03, `HSM service time ${(service * 1000).toFixed(1)} ms: at least hsm1.medium's 32 ms per P-256 sign (more when the box is busy)`);
  t.ok(queue > 0.01, `signs waited ${(queue * 1000).toFixed(1)} ms on average for one of the 8 units: all of them were busy`);

  await waitFor(`${ALERT} resolved`, async () => ((await activeAlerts(prometheus)).some((a) => a.labels.alertname === ALERT) ? undefined : true), 30_000);
  t.pass('the alert resolved after the load stopped');
});
