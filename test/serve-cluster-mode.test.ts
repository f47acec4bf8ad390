// `hsm.mode: cluster` (config/cluster.yaml's setup): `hsmproxy serve` connects to HSM processes
// someone else runs, found through the manifest, with crypto-user credentials from HSMPROXY_PIN;
// missing or wrong credentials are one-line errors naming what to set.
import t from 'tap';
import { join } from 'node:path';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { startDemoUpstream } from '../src/proxy/index.js';
import { runCli } from './helpers/cli.js';
import { devCa, getOnce, prepareServeDir, serveYaml, startServe } from './helpers/serve-fixture.js';

const d = await prepareServeDir();
t.teardown(() => d.cleanup());
// The cluster's HSM processes, run by the test (as `hsmproxy cluster start` would); ports go to the manifest.
const cluster = await startEmbeddedCluster({ dir: d.data, scryptCost: 1024 });
t.teardown(() => cluster.stop());
const upstream = await startDemoUpstream();
t.teardown(() => upstream.close());
const ca = await devCa(d);
const cu = cluster.credentials.cu;
const yaml = (extra: string) => serveYaml(d, upstream.url, extra).replace(/hsm: \{[^}]*\}/, `hsm: { mode: cluster, manifest: ${join(d.data, 'cluster.json')} }`);
// The login comes from SHOP_HSM_PIN (hsm.credentials.env) in `custom`, from HSMPROXY_PIN in `yaml`.
const custom = (extra: string) => yaml(extra).replace('hsm: { mode: cluster,', 'hsm: { mode: cluster, credentials: { env: SHOP_HSM_PIN },');

t.test('serve with hsm.mode cluster and 2 workers logs in with the variable hsm.credentials.env names and signs in the running cluster', async (t) => {
  const s = await startServe(d, custom('workers: 2'), { HSMPROXY_PIN: '', SHOP_HSM_PIN: `${cu.user}:${cu.password}` });
  t.teardown(() => s.stop());
  t.match(s.stderr(), /keys in cluster in .*\(2 HSMs\)/);
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) statuses.push(await getOnce(s.port, ca));
  t.same(statuses, Array(6).fill(200));
  t.equal(await s.stop(), 0);
  t.equal(cluster.client.stats().filter((n) => n.inRotation).length, 2, 'the cluster keeps running after the proxy stops');
});

t.test('without credentials, serve says what to set in one line and exits non-zero', async (t) => {
  const { writeFile } = await import('node:fs/promises');
  const file = join(d.dir, 'nopin.yaml');
  await writeFile(file, yaml(''));
  const r = await runCli(['serve', '--config', file], { env: { HSMPROXY_PIN: '' }, timeoutMs: 30_000 });
  t.not(r.code, 0);
  t.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  t.match(r.stderr, /HSMPROXY_PIN/);
});

t.test('wrong credentials are one line saying the login was refused (not that the HSMs are down)', async (t) => {
  const { writeFile } = await import('node:fs/promises');
  const file = join(d.dir, 'badpin.yaml');
  await writeFile(file, yaml(''));
  const r = await runCli(['serve', '--config', file], { env: { HSMPROXY_PIN: `${cu.user}:wrong` }, timeoutMs: 30_000 });
  t.not(r.code, 0);
  t.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  t.match(r.stderr, /the HSM refused the crypto-user login .*check HSMPROXY_PIN/);
  t.notMatch(r.stderr, /no HSM of the cluster is available/);
});

t.test('a missing variable named by hsm.credentials.env is one line naming it (HSMPROXY_PIN is not used instead)', async (t) => {
  const { writeFile } = await import('node:fs/promises');
  const file = join(d.dir, 'custompin.yaml');
  await writeFile(file, custom(''));
  const r = await runCli(['serve', '--config', file], { env: { HSMPROXY_PIN: `${cu.user}:${cu.password}`, SHOP_HSM_PIN: '' }, timeoutMs: 30_000 });
  t.not(r.code, 0);
  t.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  t.match(r.stderr, /hsm\.credentials\.env names SHOP_HSM_PIN; set SHOP_HSM_PIN=user:password/);
});
