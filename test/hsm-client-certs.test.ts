// One client certificate per proxy (issue 19 §5): `cluster client-cert` writes a client bundle
// holding only what a CloudHSM client has (customer CA certificate, cluster.json, its own
// certificate and key), a cluster client runs from that bundle alone, and `cluster
// revoke-client` makes a running HSM node refuse that certificate (new connections right after
// the handshake, before its login is read; open ones within the check interval) while other
// proxies carry on. Before, every client shared pki/client.crt and a proxy needed the whole
// cluster directory (CA key, masking key, HSM keys).
import t from 'tap';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HsmConnection } from '../src/hsm/client/connection.js';
import { CLIENT_REGISTER, issueClientCert, readClientRegister } from '../src/hsm/cluster/clients.js';
import { clusterPath, readClientManifest, readManifest } from '../src/hsm/cluster/manifest.js';
import { connectCluster, linkFactory, membersOf } from '../src/hsm/cluster/membership.js';
import { startNode } from '../src/hsm/cluster/run-node.js';
import { runCli } from './helpers/cli.js';
import { TEST_SCRYPT_COST, activate, tempCluster } from './helpers/hsm-cluster.js';

const cluster = await tempCluster();
const logs: Array<{ msg: string; fields: Record<string, unknown> }> = [];
const node = await startNode({
  dir: cluster.dir, scryptCost: TEST_SCRYPT_COST, revocationCheckMs: 100,
  log: (_level, msg, fields) => logs.push({ msg, fields: fields ?? {} }),
});
t.teardown(async () => {
  await node.stop();
  await cluster.cleanup();
});
await activate(cluster, node.port);
const cu = { user: 'alice', password: 'cu-password' };

/** `hsmproxy cluster ARGS --dir <the cluster>`. */
const cli = (...args: string[]) => runCli(['cluster', ...args, '--dir', cluster.dir], { env: { HSMPROXY_DIR: '' } });

const bundleA = join(cluster.dir, 'bundles', 'proxy-a');
const bundleB = join(cluster.dir, 'bundles', 'proxy-b');
const issuedA = await cli('client-cert', '--name', 'proxy-a', '--out-dir', bundleA, '--json');
const issuedB = await cli('client-cert', '--name', 'proxy-b', '--out-dir', bundleB, '--json');

/** A logged-in connection to the node made from a bundle's files alone, as a proxy's client makes it. */
async function connectFrom(bundle: string): Promise<HsmConnection> {
  const m = await readClientManifest(bundle);
  return (await linkFactory(bundle, m))(membersOf(m)[0]!, cu);
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('client-cert issues a certificate per proxy: its name as CN, clientAuth, signed by the customer CA, recorded in the cluster', async (t) => {
  t.equal(issuedA.code, 0, issuedA.stderr);
  t.equal(issuedB.code, 0, issuedB.stderr);
  const a = JSON.parse(issuedA.stdout) as { serial: string; name: string };
  const b = JSON.parse(issuedB.stdout) as { serial: string; name: string };
  const ca = new X509Certificate(await readFile(clusterPath(cluster.dir, cluster.manifest.caCert)));
  const certA = new X509Certificate(await readFile(join(bundleA, 'client.crt')));
  t.match(certA.subject, /CN=proxy-a/);
  t.ok(certA.checkIssued(ca) && certA.verify(ca.publicKey), 'issued and signed by the customer CA');
  t.same(certA.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'extended key usage clientAuth only');
  t.equal(certA.serialNumber.toLowerCase().replace(/^0+/, ''), a.serial);
  t.not(a.serial, b.serial);
  const register = await readClientRegister(cluster.dir);
  t.same(register.clients.map((c) => [c.name, c.serial, c.revokedAt]), [['proxy-a', a.serial, undefined], ['proxy-b', b.serial, undefined]]);
  t.equal(register.clients[0]?.fingerprint256, certA.fingerprint256);

  const again = await cli('client-cert', '--name', 'proxy-a', '--out-dir', join(cluster.dir, 'bundles', 'other'));
  t.equal(again.code, 1);
  t.match(again.stderr, /"proxy-a" already has a client certificate .*revoke it first/);
});

t.test('a bundle holds the CA certificate, its manifest, and its own certificate and key (0600): no other private key, no cluster secret', async (t) => {
  for (const dir of [bundleA, bundleB]) {
    t.same((await readdir(dir)).sort(), ['client.crt', 'client.key', 'cluster.json', 'customer-ca.crt']);
    t.equal((await stat(join(dir, 'client.key'))).mode & 0o777, 0o600);
    const keyFiles = [];
    for (const f of await readdir(dir)) if ((await readFile(join(dir, f), 'utf8')).includes('PRIVATE KEY')) keyFiles.push(f);
    t.same(keyFiles, ['client.key'], 'the only private key is the client key');
    const key = createPrivateKey(await readFile(join(dir, 'client.key')));
    const cert = new X509Certificate(await readFile(join(dir, 'client.crt')));
    t.ok(cert.checkPrivateKey(key), "it is this bundle's certificate's key");
    t.notOk(createPublicKey(key).equals(createPublicKey(await readFile(clusterPath(cluster.dir, cluster.manifest.clientKey)))), "not the cluster's own client key");
    const m = JSON.parse(await readFile(join(dir, 'cluster.json'), 'utf8')) as Record<string, unknown>;
    t.same(Object.keys(m).sort(), ['caCert', 'client', 'clientCert', 'clientKey', 'clusterId', 'hsms', 'kind', 'version'], 'no caKey, clusterKey or maskingKey');
    t.same(m.hsms, cluster.manifest.hsms.map((h) => ({ id: h.id, address: h.address, port: h.port })), 'HSM addresses only');
    t.equal(await readFile(join(dir, 'customer-ca.crt'), 'utf8'), await readFile(clusterPath(cluster.dir, cluster.manifest.caCert), 'utf8'));
  }
  const keyA = await readFile(join(bundleA, 'client.key'), 'utf8');
  t.not(keyA, await readFile(join(bundleB, 'client.key'), 'utf8'), 'each proxy has its own key');
  await t.rejects(readManifest(bundleA), { code: 'HSM_ERR_MANIFEST', message: /client bundle of "proxy-a".*not a cluster directory/ }, 'cluster administration refuses a bundle');
  const serve = await runCli(['hsm', 'serve', '--dir', bundleA, '--hsm', 'hsm-1']);
  t.not(serve.code, 0, 'an HSM cannot be run from a bundle');
  t.match(serve.stderr, /not a cluster directory/);
});

t.test('revoking one proxy: its new connections are refused before its login is read, its open one is closed, the other proxy carries on', async (t) => {
  const openA = await connectFrom(bundleA);
  // No health checks in the window below: its frames are counted node-wide.
  const clientB = await connectCluster(bundleB, { credentials: cu, watch: false, node: { healthIntervalMs: 3_600_000 } });
  t.teardown(() => clientB.close());
  t.equal((await openA.info()).hsmId, 'hsm-1', 'proxy-a works before the revocation');
  t.equal((await clientB.info()).hsmId, 'hsm-1', 'proxy-b (a cluster client from its bundle alone) works');
  const openB = await connectFrom(bundleB);

  const r = await cli('revoke-client', '--name', 'proxy-a');
  t.equal(r.code, 0, r.stderr);
  const serial = (JSON.parse(issuedA.stdout) as { serial: string }).serial;
  t.match(r.stdout, new RegExp(`revoked "proxy-a" \\(serial ${serial}\\)`));

  // A new connection: the handshake completes on the client's side (TLS 1.3), then the node closes it.
  const frames = node.appliance.stats.frames;
  const refused = node.appliance.stats.refused;
  const from = logs.length;
  const attempt = HsmConnection.connect({
    hsmId: 'hsm-1', host: '127.0.0.1', port: node.port,
    ca: await readFile(join(bundleA, 'customer-ca.crt')), cert: await readFile(join(bundleA, 'client.crt')), key: await readFile(join(bundleA, 'client.key')),
  }).then((c) => c.login(cu.user, cu.password));
  await t.rejects(attempt, { code: /^HSM_ERR_(CONNECTION_CLOSED|TLS)$/ }, 'the login is not answered');
  await t.rejects(connectFrom(bundleA), 'nor through the link factory');
  t.equal(node.appliance.stats.refused, refused + 2);
  t.equal(node.appliance.stats.frames, frames, 'no byte of either login reached the protocol');
  const line = logs.slice(from).find((l) => l.msg === 'refused a connection');
  t.match(line?.fields, { peer: '127.0.0.1', code: 'CERT_REVOKED', client: 'proxy-a', serial, reason: /"proxy-a" \(serial [0-9a-f]+\) was revoked/ });

  await until("proxy-a's open connection closed", () => openA.isClosed);
  t.ok(logs.some((l) => l.msg === 'closed a connection whose client certificate was revoked' && l.fields.client === 'proxy-a'));
  t.equal((await openB.info()).hsmId, 'hsm-1', "proxy-b's open connection still serves");
  t.equal((await clientB.info()).hsmId, 'hsm-1', 'and its cluster client');
  const freshB = await connectFrom(bundleB);
  t.equal((await freshB.info()).hsmId, 'hsm-1', 'and it still makes new connections');
  freshB.destroy();
  openB.destroy();
});

t.test('revoke-client by serial; a revoked name can be issued again (a new serial that works); unknown names are errors', async (t) => {
  const bundleC = join(cluster.dir, 'bundles', 'proxy-c');
  const c = JSON.parse((await cli('client-cert', '--name', 'proxy-c', '--out-dir', bundleC, '--json')).stdout) as { serial: string };
  const conn = await connectFrom(bundleC);
  conn.destroy();
  const r = await cli('revoke-client', '--serial', c.serial.toUpperCase(), '--json');
  t.equal(r.code, 0, r.stderr);
  t.same((JSON.parse(r.stdout) as { revoked: Array<{ name: string }> }).revoked.map((x) => x.name), ['proxy-c']);
  await t.rejects(connectFrom(bundleC), 'refused once revoked by serial');
  const twice = await cli('revoke-client', '--name', 'proxy-c');
  t.equal(twice.code, 0);
  t.match(twice.stdout, /already revoked/);

  const reissued = join(cluster.dir, 'bundles', 'proxy-c-2');
  const again = await cli('client-cert', '--name', 'proxy-c', '--out-dir', reissued, '--json');
  t.equal(again.code, 0, again.stderr);
  t.not((JSON.parse(again.stdout) as { serial: string }).serial, c.serial);
  const fresh = await connectFrom(reissued);
  t.equal((await fresh.info()).hsmId, 'hsm-1', 'the new certificate is accepted');
  fresh.destroy();

  const unknown = await cli('revoke-client', '--name', 'nobody');
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /no client certificate named "nobody".*issued ones: proxy-a/);
  const neither = await cli('revoke-client');
  t.equal(neither.code, 2);
  t.match(neither.stderr, /--name NAME or --serial SERIAL/);
});

t.test('a bundle only goes into an empty directory, and names are checked', async (t) => {
  const r = await cli('client-cert', '--name', 'proxy-d', '--out-dir', bundleB);
  t.equal(r.code, 1);
  t.match(r.stderr, /is not empty/);
  const bad = await cli('client-cert', '--name', 'a,CN=admin', '--out-dir', join(cluster.dir, 'bundles', 'x'));
  t.equal(bad.code, 1);
  t.match(bad.stderr, /--name must be/);
  t.notOk((await readClientRegister(cluster.dir)).clients.some((c) => c.name === 'proxy-d' || c.name.includes(',')), 'nothing recorded');
});

t.test('a node refuses to start with a register it cannot read (it would not know what is revoked)', async (t) => {
  const other = await tempCluster();
  t.teardown(() => other.cleanup());
  await issueClientCert(other.dir, { name: 'p', outDir: join(other.dir, 'p') });
  await writeFile(clusterPath(other.dir, CLIENT_REGISTER), '{"version": 1, "clients": [');
  await t.rejects(startNode({ dir: other.dir, port: 0, scryptCost: TEST_SCRYPT_COST, log: () => undefined }), { code: 'HSM_ERR_REVOCATION_LIST', message: /cannot read the revoked client certificates/ });
});
