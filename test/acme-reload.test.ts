// SIGHUP adds and removes ACME certificates of a running `hsmproxy serve` (Pebble on loopback):
// the first ACME certificate of a proxy that started without any is ordered at the reload; a later
// reload that removes it and adds two others (one over http-01 on a port the reload opens) orders
// those, stops renewing the removed one, and drops it from the metrics, while connections opened
// before each reload keep working.
import t from 'tap';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { certificateDir, readState, writeRenewRequest } from '../src/acme/index.js';
import { freePorts, startPebble } from './helpers/pebble.js';
import { devCa, prepareServeDir, sample, startServe, type ServeProcess } from './helpers/serve-fixture.js';
import { keepAlive, servedOrNone } from './helpers/served.js';

/** Polls until `servername` gets a certificate verifying to `ca` (optionally other than `not`). */
async function waitServed(proc: ServeProcess, port: number, servername: string, ca: string, not?: string): Promise<X509Certificate> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    const cert = await servedOrNone(port, servername, ca);
    if (cert && cert.serialNumber !== not) return cert;
    if (Date.now() > deadline || proc.child.exitCode !== null) {
      throw new Error(`${servername} was never served a certificate from Pebble:\n${proc.stderr()}\n${JSON.stringify(proc.logs().filter((l) => l.component === 'acme' || l.level === 50))}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function metrics(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve(body));
    }).on('error', reject).end();
  });
}

t.test('SIGHUP orders added ACME certificates and stops renewing removed ones, without dropping connections', async (t) => {
  const d = await prepareServeDir();
  t.teardown(() => d.cleanup());
  const { createServer } = await import('node:http');
  const upstream = createServer((_req, res) => res.end('ok'));
  upstream.listen(0, '127.0.0.1');
  await new Promise((r) => upstream.once('listening', r));
  t.teardown(() => { upstream.closeAllConnections(); upstream.close(); });
  const upstreamPort = (upstream.address() as { port: number }).port;
  const [port, httpPort] = await freePorts(2) as [number, number];
  const pebble = await startPebble({ tlsPort: port, httpPort });
  t.teardown(() => pebble.stop());
  const tag = randomBytes(4).toString('hex');
  const first = `first-${tag}.acme.test`;
  const alpn = `added-${tag}.acme.test`;
  const http = `http-${tag}.acme.test`;
  const configFile = join(d.dir, 'hsmproxy.yaml');
  const yaml = (acmeCerts: string[], acmeBlock: string): string => `
listeners:
  - name: main
    address: 127.0.0.1
    port: ${port}
    certificates:
      - { cert: ${d.pki.ecdsaChain}, key: ${d.pki.ecdsaKey} }
${acmeCerts.map((c) => `      - acme: ${c}\n`).join('')}
routes: [{ upstream: [http://127.0.0.1:${upstreamPort}] }]
hsm: { mode: embedded, dir: ${d.data}, hsms: 2 }
admin: { address: 127.0.0.1, port: 0 }
${acmeBlock}
`;
  const acmeBlock = `acme: { directory: ${pebble.directory}, directoryCa: ${pebble.caFile}, termsOfServiceAgreed: true }`;

  // Started with no ACME at all.
  const proc = await startServe(d, yaml([], ''));
  t.teardown(() => proc.stop());
  const dev = await devCa(d);
  const root = await pebble.root();
  const before = await keepAlive(port, 'localhost', dev);
  t.equal(await before.get(), 200);

  // Reload 1: the first ACME certificate.
  await writeFile(configFile, yaml([`{ names: [${first}] }`], acmeBlock));
  proc.child.kill('SIGHUP');
  const firstLeaf = await waitServed(proc, port, first, root);
  t.pass(`the reload ordered ${first}`);
  t.equal(await before.get(), 200, 'a connection opened before the reload still works');

  // Reload 2: the first one removed, two added (http-01 on a port this reload opens).
  const onFirst = await keepAlive(port, first, root);
  t.equal(await onFirst.get(), 200);
  await writeFile(configFile, yaml(
    [`{ names: [${alpn}] }`, `{ names: [${http}], challenge: http-01 }`],
    acmeBlock.replace('termsOfServiceAgreed: true', `termsOfServiceAgreed: true, httpPort: ${httpPort}, httpAddress: 127.0.0.1`),
  ));
  proc.child.kill('SIGHUP');
  const alpnLeaf = await waitServed(proc, port, alpn, root);
  const httpLeaf = await waitServed(proc, port, http, root);
  t.ok(alpnLeaf.checkHost(alpn), 'the added tls-alpn-01 certificate is served');
  t.ok(httpLeaf.checkHost(http), 'the added http-01 certificate is served (its port opened by the reload)');
  t.equal(await onFirst.get(), 200, 'a connection on the removed certificate keeps working');
  t.equal(await before.get(), 200, 'and so does the one from before the first reload');
  onFirst.close();
  before.close();
  t.equal(await servedOrNone(port, first, root), undefined, 'the removed certificate is no longer offered to new handshakes');
  t.match((await servedOrNone(port, first, dev, { anyName: true }))?.subject ?? '', /CN=localhost/, 'its name gets the listener\'s file certificate');

  // The removed certificate is not renewed: a renewal request for it stays untouched, while one for
  // a certificate still in the config (taken in the same look at the store) is done.
  const firstDir = certificateDir(d.data, first);
  const firstSerial = (await readState(firstDir))!.current!.serial;
  t.equal(firstSerial, firstLeaf.serialNumber);
  await writeRenewRequest(firstDir, { force: true, at: new Date().toISOString() });
  await writeRenewRequest(certificateDir(d.data, alpn), { force: true, at: new Date().toISOString() });
  proc.child.kill('SIGHUP');
  await waitServed(proc, port, alpn, root, alpnLeaf.serialNumber);
  t.ok(existsSync(join(firstDir, 'renew.request')), 'the removed certificate\'s renewal request is not taken');
  t.equal((await readState(firstDir))!.current!.serial, firstSerial, 'and it is not renewed');

  const m = await metrics(proc.admin);
  t.equal(sample(m, 'hsmproxy_acme_certificate_expiry_seconds', { name: first }), undefined, 'the removed certificate leaves the expiry gauge');
  t.equal(sample(m, 'hsmproxy_acme_renewal_consecutive_failures', { name: first }), undefined);
  t.ok((sample(m, 'hsmproxy_acme_certificate_expiry_seconds', { name: http }) ?? 0) > 0, 'the added ones are in it');
  t.equal(proc.child.exitCode, null, 'the proxy kept running through the reloads');
  t.same(proc.logs().filter((l) => l.level === 50), [], 'no error logged');
});
