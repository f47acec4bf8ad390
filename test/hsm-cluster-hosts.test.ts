// Simulated HSM nodes on their own hosts: `cluster init --host H` and `cluster add-hsm --host H`
// put H in the manifest (where the node listens and clients connect) and in the node certificate's
// SAN (IP or DNS), so clients that verify the node's identity reach it at H. Tested on 127.0.0.2,
// a loopback address that is not 127.0.0.1; a DNS name only by its certificate.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HsmConnection } from '../src/hsm/client/connection.js';
import { initCluster } from '../src/hsm/cluster/init.js';
import { clusterPath, readManifest } from '../src/hsm/cluster/manifest.js';
import { startNode, type RunningNode } from '../src/hsm/cluster/run-node.js';
import { cliInProcess, freePort, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

const HOST = '127.0.0.2';

async function sanOf(dir: string, certFile: string): Promise<string> {
  return new X509Certificate(await readFile(clusterPath(dir, certFile))).subjectAltName ?? '';
}

t.test('cluster init --host and add-hsm --host: the manifest address and the node certificate name the host; clients verify and reach it there', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-hosts-'));
  const nodes: RunningNode[] = [];
  t.teardown(async () => {
    for (const n of nodes) await n.stop();
    await rm(dir, { recursive: true, force: true });
  });
  // The library call behind `cluster init --host` (with fast password hashing); the CLI flag is in the next test.
  const made = await initCluster({ dir, hsms: 1, host: HOST, basePort: await freePort(), scryptCost: TEST_SCRYPT_COST });
  t.equal(made.manifest.hsms[0]?.address, HOST, 'init reports the host');
  let m = await readManifest(dir);
  t.equal(m.hsms[0]?.address, HOST, 'the manifest names it');
  t.match(await sanOf(dir, m.hsms[0]!.cert), new RegExp(`IP Address:${HOST.replace(/\./g, '\\.')}`), 'the node certificate names it');

  nodes.push(await startNode({ dir, hsmId: 'hsm-1', scryptCost: TEST_SCRYPT_COST, log: () => undefined }));
  const [ca, cert, key] = await Promise.all([m.caCert, m.clientCert, m.clientKey].map((p) => readFile(clusterPath(dir, p))));
  // The client checks the node's certificate against the address it connects to (node:tls default).
  const c = await HsmConnection.connect({ hsmId: 'hsm-1', host: HOST, port: m.hsms[0]!.port, ca: ca!, cert: cert!, key: key! });
  try {
    await c.login(made.precoUser, made.precoPassword);
    await c.changePassword('co-password');
    await c.createUser('alice', 'CU', 'cu-password');
  } finally {
    c.destroy();
  }

  const co = { HSMPROXY_PIN: 'admin:co-password' };
  const adding = cliInProcess(['cluster', 'add-hsm', '--dir', dir, '--from', 'live', '--host', HOST, '--json'], co);
  // add-hsm waits for the new HSM to come up and join: start it (as `hsm serve` on that host would) once it is listed.
  for (const until = Date.now() + 20_000; !(await readManifest(dir)).hsms.some((h) => h.id === 'hsm-2') && Date.now() < until;) await new Promise((r) => setTimeout(r, 100));
  nodes.push(await startNode({ dir, hsmId: 'hsm-2', scryptCost: TEST_SCRYPT_COST, log: () => undefined }));
  const add = await adding;
  t.error(add.error, 'add-hsm --host');
  t.equal((JSON.parse(add.stdout) as { inSync: boolean }).inSync, true, 'the new HSM joined in sync');
  m = await readManifest(dir);
  const added = m.hsms.find((h) => h.id === 'hsm-2');
  t.equal(added?.address, HOST, 'the new HSM is listed at the host');
  t.match(await sanOf(dir, added!.cert), new RegExp(`IP Address:${HOST.replace(/\./g, '\\.')}`), 'its certificate names it');

  const status = await cliInProcess(['cluster', 'status', '--dir', dir, '--json']);
  t.error(status.error);
  const s = JSON.parse(status.stdout) as { hsms: Array<{ id: string; address: string; up: boolean }> };
  t.same(s.hsms.map((h) => [h.id, h.address.split(':')[0], h.up]), [['hsm-1', HOST, true], ['hsm-2', HOST, true]], 'the cluster client reaches both at the host, certificates verified');
});

t.test('--host takes a DNS name (a DNS SAN) and refuses anything else in one line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-hosts-dns-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const r = await cliInProcess(['cluster', 'init', '--dir', dir, '--host', 'hsm1.example.internal', '--base-port', String(await freePort()), '--json']);
  t.error(r.error);
  t.equal((JSON.parse(r.stdout) as { hsms: Array<{ address: string }> }).hsms[0]?.address, 'hsm1.example.internal', 'init --host reports the host');
  const m = await readManifest(dir);
  t.equal(m.hsms[0]?.address, 'hsm1.example.internal');
  t.match(await sanOf(dir, m.hsms[0]!.cert), /DNS:hsm1\.example\.internal/);
  t.match(await sanOf(dir, m.hsms[0]!.cert), /IP Address:127\.0\.0\.1/, 'loopback names stay for tools on the node\'s own host');

  const bad = await cliInProcess(['cluster', 'init', '--dir', join(dir, 'other'), '--host', 'not a host!']);
  t.match(bad.error, { message: /^--host takes an IP address or a DNS name, got "not a host!"$/ });
  const badAdd = await cliInProcess(['cluster', 'add-hsm', '--dir', dir, '--host', '-x-']);
  t.match(badAdd.error, { message: /^--host takes an IP address or a DNS name, got "-x-"$/ });
});

t.test('--host with one name per HSM (a StatefulSet\'s pods): each HSM gets its own address and certificate name', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-hosts-list-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const names = ['hsm-0.hsm.hsmproxy.svc.cluster.local', 'hsm-1.hsm.hsmproxy.svc.cluster.local', 'hsm-2.hsm.hsmproxy.svc.cluster.local'];
  const r = await cliInProcess(['cluster', 'init', '--dir', dir, '--hsms', '3', '--host', names.join(','), '--base-port', String(await freePort()), '--json']);
  t.error(r.error);
  const m = await readManifest(dir);
  t.same(m.hsms.map((h) => h.address), names);
  for (const [i, h] of m.hsms.entries()) {
    const san = await sanOf(dir, h.cert);
    t.match(san, `DNS:${names[i]}`, `${h.id}'s certificate names its own host`);
    for (const other of names.filter((_n, j) => j !== i)) t.notMatch(san, `DNS:${other},`, `and not ${other}`);
  }
  const bad = await cliInProcess(['cluster', 'init', '--dir', join(dir, 'two'), '--hsms', '3', '--host', 'a.example,b.example']);
  t.match(bad.error, { message: /^--host names 2 addresses for 3 HSMs: give one for all, or one per HSM$/ });
});
