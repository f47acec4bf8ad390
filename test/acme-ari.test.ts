// ACME Renewal Information (RFC 9773): when the directory offers renewalInfo (a stub in front of
// Pebble, which has none), the proxy asks for the window of the certificate it serves, renews
// inside it (a window already open: at once, long before a third of the lifetime is left), and
// the renewal order names the certificate it replaces. A second proxy on the same cluster and
// store serves that certificate without ordering.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ariCertId, nextRenewal, readState } from '../src/acme/index.js';
import { freePorts, startAcmeStub, startPebble } from './helpers/pebble.js';
import { acmeOnlyYaml, prepareServeDir, startServe } from './helpers/serve-fixture.js';
import { servedOrNone } from './helpers/served.js';

t.test('a renewal window from renewalInfo is followed, and the order names the certificate it replaces', async (t) => {
  const d = await prepareServeDir();
  t.teardown(() => d.cleanup());
  const [port, httpPort] = await freePorts(2) as [number, number];
  const pebble = await startPebble({ tlsPort: port, httpPort });
  t.teardown(() => pebble.stop());
  // The first certificate the proxy asks about is due now; every later one in 30 days.
  let firstAsked: string | undefined;
  const stub = await startAcmeStub(pebble, {
    renewalInfo: (certId) => {
      firstAsked ??= certId;
      const now = Date.now();
      return certId === firstAsked
        ? { start: new Date(now - 3_600_000), end: new Date(now - 60_000) }
        : { start: new Date(now + 30 * 86_400_000), end: new Date(now + 31 * 86_400_000) };
    },
  });
  t.teardown(() => stub.close());
  const name = `ari-${randomBytes(4).toString('hex')}.acme.test`;
  const proc = await startServe(d, acmeOnlyYaml(d, port, name, { directory: stub.directory, directoryCa: pebble.caFile }));
  t.teardown(() => proc.stop());
  const root = await pebble.root();
  const dir = join(d.data, 'acme', name);

  // Wait for the second issue: the renewal ARI asked for.
  const deadline = Date.now() + 90_000;
  let state = await readState(dir);
  while (stub.orders.length < 2 || !state?.ari || state.ari.certId === firstAsked) {
    if (Date.now() > deadline) throw new Error(`no ARI renewal: orders ${JSON.stringify(stub.orders)}, state ${JSON.stringify(state)}\n${proc.stderr()}`);
    await new Promise((r) => setTimeout(r, 250));
    state = await readState(dir);
  }
  t.ok(firstAsked, 'renewalInfo was asked about the first certificate');
  t.notOk(stub.orders[0]!.replaces, 'the first order replaces nothing');
  t.equal(stub.orders[1]!.replaces, firstAsked, 'the renewal order names the replaced certificate (RFC 9773 §5)');

  const current = state.current!;
  const pem = await readFile(join(dir, current.chainFile), 'utf8');
  t.equal(state.ari.certId, ariCertId(pem), 'the new certificate has its own window');
  const due = nextRenewal(state)!;
  t.ok(due >= new Date(state.ari.start) && due <= new Date(state.ari.end), 'the next renewal is inside the CA window, not at 1/3 of the lifetime');
  let leaf = await servedOrNone(port, name, root);
  for (let i = 0; i < 100 && leaf?.serialNumber !== current.serial; i++) {
    await new Promise((r) => setTimeout(r, 100));
    leaf = await servedOrNone(port, name, root);
  }
  t.equal(leaf?.serialNumber, current.serial, 'the renewed certificate is served');

  // A second proxy on the same cluster and store serves the same certificate without ordering.
  const { cu } = JSON.parse(await readFile(join(d.data, 'embedded-credentials.json'), 'utf8')) as { cu: { user: string; password: string } };
  const credentials = join(d.dir, 'cu.credentials');
  await writeFile(credentials, `${cu.user}:${cu.password}\n`, { mode: 0o600 });
  const [port2] = await freePorts(1) as [number];
  const ordersBefore = stub.orders.length;
  const second = await startServe(d, `
listeners:
  - { name: second, address: 127.0.0.1, port: ${port2}, certificates: [{ acme: { names: [${name}] } }] }
routes: [{ upstream: [http://127.0.0.1:9] }]
hsm: { mode: cluster, manifest: ${join(d.data, 'cluster.json')}, credentials: { file: ${credentials} } }
admin: { address: 127.0.0.1, port: 0 }
acme: { directory: ${stub.directory}, directoryCa: ${pebble.caFile}, termsOfServiceAgreed: true, dir: ${d.data} }
`);
  try {
    t.equal((await servedOrNone(port2, name, root))?.serialNumber, current.serial, 'the second proxy serves the stored certificate at once');
    t.equal(stub.orders.length, ordersBefore, 'and placed no order');
  } finally {
    // Its own stop() would wait for the first proxy's HSM processes, which stay.
    second.child.kill('SIGTERM');
    await second.exited;
  }
});

t.test('the certificate id follows RFC 9773 §4.1 (its appendix A example)', async (t) => {
  // keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4, serial 00:87:65:43:21.
  const { execFileSync } = await import('node:child_process');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const tmp = mkdtempSync(join(tmpdir(), 'hsmproxy-ari-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(tmp, 'k.pem'), '-out', join(tmp, 'c.pem'), '-subj', '/CN=ari', '-days', '1', '-set_serial', '0x87654321', '-addext', 'subjectKeyIdentifier=69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4', '-addext', 'authorityKeyIdentifier=keyid:always'], { stdio: 'ignore' });
  t.equal(ariCertId(await readFile(join(tmp, 'c.pem'), 'utf8')), 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE');
});
