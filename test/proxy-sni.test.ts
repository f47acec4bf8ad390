// Several certificates on one listener (node:tls front): SNI picks the site, and within a site
// the ECDSA certificate goes to clients that offer ECDSA, the RSA one to the others.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
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
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port, servername, ca, sigalgs }, () => {
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
// the same scenario is tls/ TlsServer's to pass once the proxy runs on it.
t.todo('an RSA-only client of the second site gets that site\'s RSA certificate (not on the node:tls front)', async (t) => {
  const h = await startHarness(t, yaml, { upstreamCount: 2 });
  const got = await handshake(h.port, 'api.test', RSA_ONLY).catch((err: Error) => err.message);
  t.same(got, { serial: certs.apiRsa.serial, keyType: 'rsa' });
});

t.test('each site routes to its own upstream over curl', async (t) => {
  const h = await startHarness(t, yaml, { upstreamCount: 2 });
  const caFile = join(dir, 'ca.pem');
  const { curl } = await import('./helpers/proxy-harness.js');
  const get = async (host: string) => JSON.parse((await curl(['--cacert', caFile, '--resolve', `${host}:${h.port}:127.0.0.1`, `https://${host}:${h.port}/`])).body).upstream;
  t.equal(await get('shop.test'), 'up0');
  t.equal(await get('api.test'), 'up1');
});
