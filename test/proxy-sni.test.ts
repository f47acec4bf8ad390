// Several certificates on one listener: SNI picks the site, and within a site the ECDSA
// certificate goes to clients that offer ECDSA, the RSA one to the others — on the node:tls front
// (key files) and on the HSM-backed listener hsmproxy serves with (tls/ TlsServer + engine).
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Engine, SimBackend, writeKeyReference } from '../src/engine/index.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';
import { offloadListenerFactory } from '../src/proxy/offload-listener.js';
import { FakeHsm } from './helpers/fake-hsm.js';
import { startHarness } from './helpers/proxy-harness.js';
import { issue, makeCa } from './helpers/proxy-certs.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-sni-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ca = readFileSync(makeCa(dir));
const certs = {
  shopEc: issue(dir, 'shop-ec', ['shop.test'], 'ec'),
  shopRsa: issue(dir, 'shop-rsa', ['shop.test'], 'rsa'),
  apiEc: issue(dir, 'api-ec', ['api.test'], 'ec'),
  apiRsa: issue(dir, 'api-rsa', ['api.test'], 'rsa'),
};
const list = Object.values(certs).map((c) => `{ cert: "${c.cert}", key: "${c.key}" }`).join(', ');
const yaml = `
listeners: [{ name: sites, address: 127.0.0.1, port: 0, certificates: [ ${list} ] }]
routes:
  - { host: shop.test, upstream: [ "{{up0}}" ] }
  - { host: api.test, upstream: [ "{{up1}}" ] }
admin: { address: 127.0.0.1, port: 0 }
`;

/** Connects with SNI `servername`, offering only `sigalgs`; returns the certificate serial and key type. */
function handshake(port: number, servername: string, sigalgs: string): Promise<{ serial: string; keyType: string | undefined }> {
  return handshakeTrusting(port, servername, sigalgs, ca);
}

function handshakeTrusting(port: number, servername: string, sigalgs: string, trusted: Buffer): Promise<{ serial: string; keyType: string | undefined }> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port, servername, ca: trusted, sigalgs }, () => {
      const cert = sock.getPeerX509Certificate()!;
      resolve({ serial: cert.serialNumber, keyType: cert.publicKey.asymmetricKeyType });
      sock.end();
    });
    sock.on('error', reject);
  });
}

const ECDSA_FIRST = 'ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256:rsa_pkcs1_sha256';
const RSA_ONLY = 'rsa_pss_rsae_sha256:rsa_pkcs1_sha256';

t.test('on the first site, ECDSA goes to clients that offer it and RSA to the others', async (t) => {
  const h = await startHarness(t, yaml, { upstreamCount: 2 });
  t.same(await handshake(h.port, 'shop.test', ECDSA_FIRST), { serial: certs.shopEc.serial, keyType: 'ec' });
  t.same(await handshake(h.port, 'shop.test', RSA_ONLY), { serial: certs.shopRsa.serial, keyType: 'rsa' });
});

t.test('SNI picks the second site\'s certificate for a client that offers ECDSA', async (t) => {
  const h = await startHarness(t, yaml, { upstreamCount: 2 });
  t.same(await handshake(h.port, 'api.test', ECDSA_FIRST), { serial: certs.apiEc.serial, keyType: 'ec' });
});

// node:tls cannot do this (after an SNI switch OpenSSL keeps the default context's RSA slot);
// hsmproxy serves through tls/ TlsServer with HSM-held keys, which picks per site and per client.
t.test('on the HSM-backed listener, each site gets its own ECDSA or RSA certificate by what the client offers', async (t) => {
  const backend = new SimBackend({ client: new FakeHsm(), clusterId: '5a'.repeat(32), credentials: { user: 'cu1', password: 'secret1' } });
  const engine = new Engine({ backends: { sim: backend } });
  t.teardown(() => engine.close());
  const made: Record<string, { cert: string; key: string; serial: string }> = {};
  for (const [site, type] of [['shop', 'ec'], ['shop', 'rsa'], ['api', 'ec'], ['api', 'rsa']] as const) {
    const handle = await backend.generateKeyPair({ algorithm: type === 'ec' ? { type: 'ec', curve: 'P-256' } : { type: 'rsa', bits: 2048 }, label: `${site}-${type}` });
    const key = join(dir, `hsm-${site}-${type}.key.pem`);
    await writeKeyReference(handle, key);
    const cert = await selfSign(await signingKey(await engine.signer(key), engine.webcrypto()), { subject: `CN=${site}.test`, sans: [`DNS:${site}.test`], days: 1 });
    writeFileSync(join(dir, `hsm-${site}-${type}.pem`), certPem(cert));
    made[`${site}-${type}`] = { cert: join(dir, `hsm-${site}-${type}.pem`), key, serial: new X509Certificate(certPem(cert)).serialNumber };
  }
  const hsmList = Object.values(made).map((c) => `{ cert: "${c.cert}", key: "${c.key}" }`).join(', ');
  const h = await startHarness(t, yaml.replace(list, hsmList), { upstreamCount: 2, proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } });
  const trusting = Buffer.concat(Object.values(made).map((c) => readFileSync(c.cert)));
  const shake = (name: string, sigalgs: string) => handshakeTrusting(h.port, name, sigalgs, trusting);
  t.same(await shake('shop.test', ECDSA_FIRST), { serial: made['shop-ec']!.serial, keyType: 'ec' });
  t.same(await shake('shop.test', RSA_ONLY), { serial: made['shop-rsa']!.serial, keyType: 'rsa' });
  t.same(await shake('api.test', ECDSA_FIRST), { serial: made['api-ec']!.serial, keyType: 'ec' });
  t.same(await shake('api.test', RSA_ONLY), { serial: made['api-rsa']!.serial, keyType: 'rsa' }, 'an RSA-only client of the second site gets that site\'s RSA certificate');
});

t.test('each site routes to its own upstream over curl', async (t) => {
  const h = await startHarness(t, yaml, { upstreamCount: 2 });
  const caFile = join(dir, 'ca.pem');
  const { curl } = await import('./helpers/proxy-harness.js');
  const get = async (host: string) => JSON.parse((await curl(['--cacert', caFile, '--resolve', `${host}:${h.port}:127.0.0.1`, `https://${host}:${h.port}/`])).body).upstream;
  t.equal(await get('shop.test'), 'up0');
  t.equal(await get('api.test'), 'up1');
});
