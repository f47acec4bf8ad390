// `serve` on the simulated cluster runs the scaling advisor: GET /scaling on the admin port
// answers its recommendation (with hsm.autoscale's knobs), /metrics carries its gauges, and
// `cluster advise --admin` reads it. Loopback, ephemeral ports, a temp directory.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import t from 'tap';
import { startServing } from '../src/app/serve.js';
import { Engine, SimBackend, simClientFrom } from '../src/engine/index.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { ensureDemoPki } from '../src/pki/demo.js';
import { cliInProcess, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

t.test('serve exposes the advisor at /scaling and as gauges, with the configured minimum', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hsmproxy-advisor-serve-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const data = join(root, 'data');
  const certs = join(root, 'certs');
  // A cluster with a certificate whose key lives in it (as `serve` with the default makes).
  const cluster = await startEmbeddedCluster({ dir: data, hsms: 2, scryptCost: TEST_SCRYPT_COST });
  const backend = new SimBackend({ client: simClientFrom(cluster.client), clusterId: (await readManifest(data)).clusterId, credentials: cluster.credentials.cu, ownsClient: false });
  const engine = new Engine({ backends: { sim: backend } });
  const { files } = await ensureDemoPki(engine, backend, certs);
  await engine.close();
  await cluster.stop();

  const configFile = join(root, 'hsmproxy.yaml');
  await writeFile(configFile, [
    'listeners:',
    '  - name: web',
    '    address: 127.0.0.1',
    '    port: 0',
    `    certificates: [{ cert: ${files.ecdsaChain}, key: ${files.ecdsaKey} }]`,
    'routes:',
    '  - upstream: [http://127.0.0.1:9]',
    'hsm:',
    '  mode: embedded',
    `  dir: ${data}`,
    '  autoscale: { enabled: false, min: 2, max: 3, sloP99Ms: 50, cooldown: 1m }',
    'admin: { address: 127.0.0.1, port: 0 }',
    '',
  ].join('\n'));
  const serving = await startServing({ configFile, log: pino({ level: 'silent' }) });
  t.teardown(() => serving.stop(1000));
  // serve's handle exposes the admin address directly or through its Proxy, depending on the worker wiring.
  const s = serving as unknown as { adminAddress?: () => AddressInfo | undefined; proxy?: { adminAddress(): AddressInfo | undefined } };
  const admin = s.adminAddress?.() ?? s.proxy?.adminAddress();
  t.ok(admin, 'the admin server listens');
  const base = `http://127.0.0.1:${admin!.port}`;

  const res = await fetch(`${base}/scaling`);
  t.equal(res.status, 200);
  const doc = await res.json() as { recommendation: { action: string; currentHsms: number; targetHsms: number; reason: string }; config: { min: number; max: number; sloP99Ms: number }; autoscale: boolean };
  t.equal(doc.recommendation.action, 'hold');
  t.equal(doc.recommendation.currentHsms, 2);
  t.match(doc.recommendation.reason, /^hold at 2 HSMs: /);
  t.match(doc.config, { min: 2, max: 3, sloP99Ms: 50 }, 'hsm.autoscale configures the advisor');
  t.equal(doc.autoscale, false, 'enabled: false advises without acting');

  const metrics = await (await fetch(`${base}/metrics`)).text();
  t.match(metrics, /^hsmproxy_cluster_recommended_hsms 2$/m);
  t.match(metrics, /^hsmproxy_cluster_hsms 2$/m);
  t.match(metrics, /^hsmproxy_cluster_utilisation\{hsm="hsm-1"\} /m);

  const advice = await cliInProcess(['cluster', 'advise', '--admin', base]);
  t.match(advice.stdout, /^HOLD: hold at 2 HSMs/);
});
