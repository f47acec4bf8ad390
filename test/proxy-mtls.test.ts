// mTLS through the proxy: the offloading TLS listener (tls/ TlsServer, keys behind the engine)
// with clientAuth, curl --cert as the client, the demo upstream echoing what it received. The
// verified identity must reach the upstream in headers; client-sent copies never do.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { Engine, type EngineSigner, type KeyHandle, type KeyRef, type SignerOptions } from '../src/engine/index.js';
import { offloadListenerFactory } from '../src/proxy/offload-listener.js';
import { ListenerError } from '../src/proxy/errors.js';
import { Proxy } from '../src/proxy/index.js';
import * as x509 from '../src/pki/x509.js';
import { ClientPki } from './helpers/client-pki.js';
import { startHarness, type Harness } from './helpers/proxy-harness.js';

/** An Engine whose key paths are ordinary key files (soft backend): the test keeps no HSM. */
class SoftFileEngine extends Engine {
  override async signer(key: string | KeyRef | KeyHandle, opts: SignerOptions = {}): Promise<EngineSigner> {
    return super.signer(typeof key === 'string' ? await this.loadSoftKey(key) : key, opts);
  }
}

const DAY = 86_400_000;
const pki = new ClientPki();
t.teardown(() => pki.cleanup());
const ca = await pki.ca('Client Root', { rdn: 'O=Acme' });
const alice = await pki.issue(ca, { cn: 'alice', rdn: 'O=Acme', sans: [{ type: 'email', value: 'alice@acme.example' }, { type: 'url', value: 'spiffe://acme/alice' }] });
const expired = await pki.issue(ca, { cn: 'old', notBefore: new Date(Date.now() - 9 * DAY), notAfter: new Date(Date.now() - DAY) });
const stranger = await pki.issue(await pki.ca('Other Root'), { cn: 'stranger' });
const serverOnly = await pki.issue(ca, { cn: 'server-only', eku: [x509.ExtendedKeyUsage.serverAuth] });
const aliceCurl = ['--cert', alice.certFile, '--key', alice.keyFile];

function yaml(clientAuth: string, versions = ''): string {
  return `
listeners:
  - name: main
    address: 127.0.0.1
    port: 0${versions}
    certificates: [{ cert: "{{cert}}", key: "{{key}}" }]
    clientAuth: ${clientAuth}
routes:
  - upstream: ["{{up0}}"]
admin: { address: 127.0.0.1, port: 0 }
log: { level: info }
`;
}

async function proxy(t: Test, clientAuth: string, versions = ''): Promise<Harness> {
  const engine = new SoftFileEngine();
  t.teardown(() => engine.close());
  return startHarness(t, yaml(clientAuth, versions), { proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } });
}

const requireMode = `{ mode: require, caFile: "${ca.certFile}" }`;
const accessLines = (h: Harness) => h.logs.filter((l) => l.type === 'access');
const upstreamHeaders = (body: string): Record<string, string> => (JSON.parse(body) as { headers: Record<string, string> }).headers;

t.test('a valid client certificate is accepted and its identity reaches the upstream', async (t) => {
  const h = await proxy(t, requireMode);
  const r = await h.curl('/who', aliceCurl);
  t.equal(r.status, 200, r.stderr);
  const hd = upstreamHeaders(r.body);
  t.equal(hd['x-client-cert-verify'], 'SUCCESS');
  t.equal(hd['x-client-cert-subject'], 'CN=alice, O=Acme');
  t.equal(hd['x-client-cert-san'], 'email:alice@acme.example, URI:spiffe://acme/alice');
  t.equal(hd['x-client-cert-fingerprint-sha256'], createHash('sha256').update(alice.der).digest('hex'));
  const line = accessLines(h)[0]!;
  t.equal(line.clientSubject, 'CN=alice, O=Acme', 'the access log names the client');
  t.equal(line.clientVerify, 'SUCCESS');
});

t.test('identity headers sent by the client are replaced by the verified ones', async (t) => {
  const h = await proxy(t, requireMode);
  const r = await h.curl('/', [...aliceCurl, '-H', 'X-Client-Cert-Subject: CN=admin', '-H', 'X-Client-Cert-Fingerprint-SHA256: 00', '-H', 'X-Client-Cert-San: DNS:admin']);
  const hd = upstreamHeaders(r.body);
  t.equal(hd['x-client-cert-subject'], 'CN=alice, O=Acme');
  t.equal(hd['x-client-cert-fingerprint-sha256'], createHash('sha256').update(alice.der).digest('hex'));
  t.equal(hd['x-client-cert-san'], 'email:alice@acme.example, URI:spiffe://acme/alice');
});

t.test('without a certificate under require the request never reaches the upstream', async (t) => {
  const h = await proxy(t, requireMode);
  const r = await h.curl('/');
  t.equal(r.status, 0);
  t.match(r.stderr, /certificate required/, 'curl reports the certificate_required alert');
  t.equal(accessLines(h).length, 0, 'no request was proxied');
});

for (const [what, cert, alert] of [
  ['an expired certificate', expired, /certificate expired/],
  ['a certificate from another CA', stranger, /unknown ca/],
  ['a certificate without EKU clientAuth', serverOnly, /unsupported certificate/],
] as const) {
  t.test(`${what} is refused with its alert and never reaches the upstream`, async (t) => {
    const h = await proxy(t, requireMode);
    const r = await h.curl('/', ['--cert', cert.certFile, '--key', cert.keyFile]);
    t.equal(r.status, 0);
    t.match(r.stderr, alert, r.stderr);
    t.equal(accessLines(h).length, 0);
  });
}

t.test('optional mode: a client without a certificate gets through with Verify NONE and no spoofed identity', async (t) => {
  const h = await proxy(t, `{ mode: optional, caFile: "${ca.certFile}" }`);
  const r = await h.curl('/', ['-H', 'X-Client-Cert-Subject: CN=admin', '-H', 'X-Client-Cert-Verify: SUCCESS']);
  t.equal(r.status, 200, r.stderr);
  const hd = upstreamHeaders(r.body);
  t.equal(hd['x-client-cert-verify'], 'NONE');
  t.notOk('x-client-cert-subject' in hd, 'the client-sent subject was stripped');
  const withCert = upstreamHeaders((await h.curl('/', aliceCurl)).body);
  t.equal(withCert['x-client-cert-subject'], 'CN=alice, O=Acme', 'a client with a certificate is identified');
});

t.test('a listener without clientAuth still strips client-sent identity headers', async (t) => {
  const h = await proxy(t, '{ mode: none }');
  const hd = upstreamHeaders((await h.curl('/', ['-H', 'X-Client-Cert-Subject: CN=admin', '-H', 'X-Client-Cert-Verify: SUCCESS'])).body);
  t.equal(hd['x-client-cert-verify'], 'NONE');
  t.notOk('x-client-cert-subject' in hd);
});

t.test('header names come from clientAuth.headers; the default names are stripped too', async (t) => {
  const h = await proxy(t, `{ mode: require, caFile: "${ca.certFile}", headers: { subject: X-SSL-Client-DN, verify: X-SSL-Client-Verify } }`);
  const hd = upstreamHeaders((await h.curl('/', [...aliceCurl, '-H', 'X-Client-Cert-Subject: CN=admin'])).body);
  t.equal(hd['x-ssl-client-dn'], 'CN=alice, O=Acme');
  t.equal(hd['x-ssl-client-verify'], 'SUCCESS');
  t.notOk('x-client-cert-subject' in hd, 'a client-sent default-name header does not survive');
});

t.test('allowedSans admits only the listed client identities', async (t) => {
  const h = await proxy(t, `{ mode: require, caFile: "${ca.certFile}", allowedSans: ["URI:spiffe://acme/bob"] }`);
  const r = await h.curl('/', aliceCurl);
  t.equal(r.status, 0);
  t.match(r.stderr, /access denied/);
});

t.test('a CA file without certificates stops the listener from opening, naming the field', async (t) => {
  const bad = pki.bundle('empty.pem', []);
  const engine = new SoftFileEngine();
  t.teardown(() => engine.close());
  const h = await startHarness(t, yaml('{ mode: none }'));
  const config = h.config(yaml(`{ mode: require, caFile: "${bad}" }`));
  const p = new Proxy({ config, tlsListenerFactory: offloadListenerFactory({ engine }), admin: false, subscribeEvents: false });
  const err = await p.start().then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof ListenerError, 'a ListenerError');
  t.match((err as Error).message, /clientAuth\.caFile: .*holds no PEM certificate/);
});

t.test('the node:tls listener forwards a verified identity the same way', async (t) => {
  const h = await startHarness(t, yaml(requireMode));
  const hd = upstreamHeaders((await h.curl('/', [...aliceCurl, '-H', 'X-Client-Cert-Subject: CN=admin'])).body);
  t.equal(hd['x-client-cert-verify'], 'SUCCESS');
  t.equal(hd['x-client-cert-subject'], 'CN=alice, O=Acme');
  t.equal(hd['x-client-cert-fingerprint-sha256'], createHash('sha256').update(alice.der).digest('hex'));
});

t.test('reload swaps the client CA bundle for new connections; a bundle that does not parse is refused', async (t) => {
  const h = await proxy(t, requireMode);
  t.equal((await h.curl('/', aliceCurl)).status, 200, 'alice (old CA) before the reload');
  const newCa = await pki.ca('New Client Root');
  const carol = await pki.issue(newCa, { cn: 'carol' });
  await h.proxy.reload(h.config(yaml(`{ mode: require, caFile: "${newCa.certFile}" }`)));
  const r = await h.curl('/', aliceCurl);
  t.equal(r.status, 0);
  t.match(r.stderr, /unknown ca/, 'alice is no longer trusted');
  t.equal(upstreamHeaders((await h.curl('/', ['--cert', carol.certFile, '--key', carol.keyFile])).body)['x-client-cert-subject'], 'CN=carol');
  const bad = pki.bundle('not-a-bundle.pem', []);
  const err = await h.proxy.reload(h.config(yaml(`{ mode: require, caFile: "${bad}" }`))).then(() => undefined, (e: unknown) => e);
  t.match((err as Error | undefined)?.message, /clientAuth\.caFile/, 'the reload is refused, naming the field');
  t.equal((await h.curl('/', ['--cert', carol.certFile, '--key', carol.keyFile])).status, 200, 'the previous bundle keeps serving');
});

t.test('over TLS 1.2 (curl --tls-max 1.2): identity forwarded; no certificate, expired or wrong CA refused', async (t) => {
  const h = await proxy(t, requireMode, "\n    minVersion: '1.2'\n    maxVersion: '1.2'");
  const ok = await h.curl('/', ['--tls-max', '1.2', ...aliceCurl, '-H', 'X-Client-Cert-Subject: CN=admin']);
  t.equal(ok.status, 200, ok.stderr);
  t.equal(upstreamHeaders(ok.body)['x-client-cert-subject'], 'CN=alice, O=Acme');
  t.equal(accessLines(h)[0]?.tlsVersion, 'TLSv1.2');
  const none = await h.curl('/', ['--tls-max', '1.2']);
  t.equal(none.status, 0);
  t.match(none.stderr, /handshake failure/);
  // curl 7.88 reports this alert as its own verification failure; -v shows the alert itself.
  t.match((await h.curl('/', ['-v', '--tls-max', '1.2', '--cert', expired.certFile, '--key', expired.keyFile])).stderr, /alert.*certificate expired/i);
  t.match((await h.curl('/', ['--tls-max', '1.2', '--cert', stranger.certFile, '--key', stranger.keyFile])).stderr, /unknown ca/);
  t.equal(accessLines(h).length, 1, 'only the authenticated request reached the upstream');
});
