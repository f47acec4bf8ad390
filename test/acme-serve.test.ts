// ACME against a real CA (Debian's Pebble, on loopback): `hsmproxy serve` orders one certificate
// over tls-alpn-01 (answered by its HTTPS listener) and one over http-01 (answered on
// acme.httpPort), each key generated in the HSM; the served chains verify to Pebble's root, the
// served key is the HSM key `acme status` names, file certificates on the same listener keep
// serving, and the http port redirects everything else with 308.
import t from 'tap';
import { execFile } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { createServer as createHttpServer, request } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine, SimBackend, simClientFrom } from '../src/engine/index.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { connectCluster } from '../src/hsm/cluster/membership.js';
import { cliEntry } from './helpers/cli.js';
import { freePorts, startPebble } from './helpers/pebble.js';
import { devCa, prepareServeDir, sample, startServe, type ServeProcess } from './helpers/serve-fixture.js';
import { createRequire } from 'node:module';
import { keepAlive, servedCertificate } from './helpers/served.js';

const tsxLoader = createRequire(import.meta.url).resolve('tsx');

/** The leaf a TLS client trusting only `ca` is served for `servername`, or the error. */
/** Polls until `servername` is served a certificate that verifies to `ca`; returns it and when. */
async function waitServed(port: number, servername: string, ca: string, proc: ServeProcess, ms = 90_000): Promise<X509Certificate> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      return await servedCertificate(port, servername, ca);
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline || proc.child.exitCode !== null) {
      throw new Error(`${servername} was never served a certificate verifying to Pebble's root (${(last as Error).message}); serve log:\n${proc.stderr()}\n${JSON.stringify(proc.logs().filter((l) => l.component === 'acme'))}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [`--import=${tsxLoader}`, cliEntry, ...args], (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

function httpGet(port: number, path: string, host: string): Promise<{ status: number; location?: string }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, headers: { host } }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, ...(res.headers.location ? { location: res.headers.location } : {}) });
    }).on('error', reject).end();
  });
}

t.test('serve orders over tls-alpn-01 and http-01 from Pebble and serves the HSM-key certificates', async (t) => {
  const d = await prepareServeDir();
  t.teardown(() => d.cleanup());
  const [port, httpPort] = await freePorts(2) as [number, number];
  const upstream = createHttpServer((_req, res) => res.end('ok'));
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  t.teardown(() => { upstream.closeAllConnections(); upstream.close(); });
  const upstreamPort = (upstream.address() as AddressInfo).port;
  const pebble = await startPebble({ tlsPort: port, httpPort });
  t.teardown(() => pebble.stop());
  // Names of their own: Pebble reuses half of its valid authorizations.
  const tag = randomBytes(4).toString('hex');
  const alpnName = `alpn-${tag}.acme.test`;
  const httpNames = [`http-${tag}.acme.test`, `www.http-${tag}.acme.test`];
  const yaml = `
listeners:
  - name: main
    address: 127.0.0.1
    port: ${port}
    certificates:
      - { cert: ${d.pki.ecdsaChain}, key: ${d.pki.ecdsaKey} }
      - acme: { names: [${alpnName}], keyType: ec:p256, challenge: tls-alpn-01 }
      - acme: { names: [${httpNames.join(', ')}], keyType: rsa:2048, challenge: http-01 }
routes: [{ upstream: [http://127.0.0.1:${upstreamPort}] }]
hsm: { mode: embedded, dir: ${d.data}, hsms: 2 }
admin: { address: 127.0.0.1, port: 0 }
acme: { directory: ${pebble.directory}, directoryCa: ${pebble.caFile}, email: ops@example.com, termsOfServiceAgreed: true, httpPort: ${httpPort}, httpAddress: 127.0.0.1, redirect: true }
`;
  const started = Date.now();
  const proc = await startServe(d, yaml);
  t.teardown(() => proc.stop());
  const root = await pebble.root();

  const alpnLeaf = await waitServed(port, alpnName, root, proc);
  t.comment(`first ACME certificate served ${Date.now() - started} ms after serve was spawned`);
  const httpLeaf = await waitServed(port, httpNames[1]!, root, proc);
  t.equal(httpLeaf.publicKey.asymmetricKeyType, 'rsa', 'keyType rsa:2048 gives an RSA key');
  t.equal(alpnLeaf.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1', 'keyType ec:p256 gives a P-256 key');

  // The file certificate on the same listener is untouched.
  const localhost = await servedCertificate(port, 'localhost', await devCa(d));
  t.match(localhost.subject, /CN=localhost/);

  // acme status names the HSM key; the served certificate's key is that key, held by the cluster.
  const status = await cli(['acme', 'status', '--config', join(d.dir, 'hsmproxy.yaml'), '--json']);
  t.equal(status.code, 0, status.stderr);
  const rows = JSON.parse(status.stdout) as Array<{ name: string; keyId: string; keyLabel: string; serial: string; account: string; nextRenewal: string }>;
  const alpnRow = rows.find((r) => r.name === alpnName)!;
  t.equal(alpnRow.serial, alpnLeaf.serialNumber, 'acme status shows the served serial');
  t.match(alpnRow.account, /^https:\/\/127\.0\.0\.1:\d+\//, 'the ordering account is recorded');
  t.ok(Date.parse(alpnRow.nextRenewal) < Date.parse(alpnLeaf.validTo), 'a renewal is scheduled before expiry');
  const { cu } = JSON.parse(await readFile(join(d.data, 'embedded-credentials.json'), 'utf8')) as { cu: { user: string; password: string } };
  const client = await connectCluster(d.data, { credentials: cu, watch: false });
  const { clusterId } = await readManifest(d.data);
  const engine = new Engine({ backends: { sim: new SimBackend({ client: simClientFrom(client), clusterId, credentials: cu, ownsClient: false }) } });
  try {
    const keyFile = join(d.data, 'acme', alpnName, `key-${alpnRow.keyId}.pem`);
    const hsmKey = await engine.loadKey(keyFile);
    t.equal(hsmKey.label, alpnRow.keyLabel, 'the key reference names the HSM key acme status shows');
    t.ok(hsmKey.publicKey.equals(alpnLeaf.publicKey), 'the served certificate certifies the HSM key');
    const keyText = await readFile(keyFile, 'utf8');
    t.match(keyText, /HSMPROXY KEY REFERENCE|EC PRIVATE KEY/, 'a key reference, not key material, is on disk');
  } finally {
    await engine.close();
    await client.close();
  }

  // http-01 port: unknown tokens 404, everything else redirects to https with 308.
  t.equal((await httpGet(httpPort, '/.well-known/acme-challenge/nope', httpNames[0]!)).status, 404);
  t.same(await httpGet(httpPort, '/shop?x=1', httpNames[0]!), { status: 308, location: `https://${httpNames[0]}:${port}/shop?x=1` });

  // A forced renewal: a new serial (and HSM key) is served, a connection opened before keeps working.
  const before = await keepAlive(port, alpnName, root);
  t.equal(await before.get(), 200, 'a request on the connection opened before the renewal');
  const renew = await cli(['acme', 'renew', '--config', join(d.dir, 'hsmproxy.yaml'), '--name', alpnName, '--force', '--json']);
  t.equal(renew.code, 0, renew.stderr);
  const renewed = JSON.parse(renew.stdout) as { serial: string; keyLabel: string };
  t.not(renewed.serial, alpnLeaf.serialNumber, 'a new serial');
  t.not(renewed.keyLabel, alpnRow.keyLabel, 'a fresh HSM key (reuseKey is off)');
  let now = await servedCertificate(port, alpnName, root);
  for (let i = 0; i < 100 && now.serialNumber !== renewed.serial; i++) {
    await new Promise((r) => setTimeout(r, 100));
    now = await servedCertificate(port, alpnName, root);
  }
  t.equal(now.serialNumber, renewed.serial, 'new connections get the renewed certificate');
  t.equal(await before.get(), 200, 'the connection opened before the renewal still works');
  before.close();

  const metrics = await new Promise<string>((resolve, reject) => {
    request({ host: '127.0.0.1', port: proc.admin, path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve(body));
    }).on('error', reject).end();
  });
  t.ok((sample(metrics, 'hsmproxy_acme_orders_total', { result: 'issued', challenge: 'tls-alpn-01' }) ?? 0) >= 2, 'orders counted by result and challenge');
  t.ok((sample(metrics, 'hsmproxy_acme_orders_total', { result: 'issued', challenge: 'http-01' }) ?? 0) >= 1);
  const left = sample(metrics, 'hsmproxy_acme_certificate_expiry_seconds', { name: alpnName }) ?? 0;
  t.ok(Math.abs(left - (Date.parse(now.validTo) - Date.now()) / 1000) < 120, 'seconds left until the served certificate expires');
  t.equal(sample(metrics, 'hsmproxy_acme_renewal_consecutive_failures', { name: alpnName }), 0);
  t.same(proc.logs().filter((l) => l.level === 50 && l.component === 'acme'), [], 'no ACME error logged');

  // Revoke: refused from another account (naming the one that ordered), done with the ordering one,
  // and the running proxy orders a replacement.
  const otherConfig = join(d.dir, 'other-account.yaml');
  await writeFile(otherConfig, yaml.replace('termsOfServiceAgreed: true,', `termsOfServiceAgreed: true, accountKey: ${join(d.dir, 'other-account.key')},`));
  const refused = await cli(['acme', 'revoke', '--config', otherConfig, '--name', alpnName]);
  t.equal(refused.code, 1);
  t.match(refused.stderr, new RegExp(`serial ${renewed.serial} was ordered by account ${alpnRow.account.replace(/[.]/g, '\\.')}.*revoke with the key of`));
  const revoked = await cli(['acme', 'revoke', '--config', join(d.dir, 'hsmproxy.yaml'), '--name', alpnName]);
  t.equal(revoked.code, 0, revoked.stderr);
  t.match(revoked.stdout, `revoked serial ${renewed.serial}`);
  let replacement = await servedCertificate(port, alpnName, root);
  const until = Date.now() + 60_000;
  while (replacement.serialNumber === renewed.serial && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 250));
    replacement = await servedCertificate(port, alpnName, root);
  }
  t.not(replacement.serialNumber, renewed.serial, 'a revoked certificate is replaced by the running proxy');
});

