// The offloading listener serves the versions its config names: TLS 1.2 end to end through the
// proxy with HSM-held keys (ECDSA and RSA, PKCS#1 v1.5 and PSS from the engine's signers), and a
// listener left at the 1.3-only default refuses a TLS 1.2 client.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Engine, SimBackend, writeKeyReference } from '../src/engine/index.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';
import { offloadListenerFactory } from '../src/proxy/offload-listener.js';
import { FakeHsm } from './helpers/fake-hsm.js';
import { curl, startHarness } from './helpers/proxy-harness.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-tls12-proxy-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const backend = new SimBackend({ client: new FakeHsm(), clusterId: '5a'.repeat(32), credentials: { user: 'cu1', password: 'secret1' } });
const engine = new Engine({ backends: { sim: backend } });
t.teardown(() => engine.close());

const made: Record<'ec' | 'rsa', { cert: string; key: string }> = {} as never;
for (const type of ['ec', 'rsa'] as const) {
  const handle = await backend.generateKeyPair({ algorithm: type === 'ec' ? { type: 'ec', curve: 'P-256' } : { type: 'rsa', bits: 2048 }, label: `tls12-${type}` });
  const key = join(dir, `${type}.key.pem`);
  await writeKeyReference(handle, key);
  const cert = await selfSign(await signingKey(await engine.signer(key), engine.webcrypto()), { subject: 'CN=shop.test', sans: ['DNS:shop.test'], days: 1 });
  writeFileSync(join(dir, `${type}.pem`), certPem(cert));
  made[type] = { cert: join(dir, `${type}.pem`), key };
}
const trusted = Buffer.concat([readFileSync(made.ec.cert), readFileSync(made.rsa.cert)]);
writeFileSync(join(dir, 'trusted.pem'), trusted);

const yaml = (versions: string): string => `
listeners: [{ name: shop, address: 127.0.0.1, port: 0, ${versions} certificates: [ { cert: "${made.ec.cert}", key: "${made.ec.key}" }, { cert: "${made.rsa.cert}", key: "${made.rsa.key}" } ] }]
routes: [ { host: shop.test, upstream: [ "{{up0}}" ] } ]
admin: { address: 127.0.0.1, port: 0 }
`;

function handshake(port: number, opts: tls.ConnectionOptions): Promise<{ protocol: string | null; cipher: string; keyType?: string }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'shop.test', ca: trusted, ...opts }, () => {
      resolve({ protocol: s.getProtocol(), cipher: s.getCipher().name, keyType: s.getPeerX509Certificate()?.publicKey.asymmetricKeyType });
      s.end();
    });
    s.on('error', reject);
  });
}

t.test('minVersion 1.2: curl --tls-max 1.2 reaches the upstream through the HSM-backed listener', async (t) => {
  const h = await startHarness(t, yaml('minVersion: "1.2", maxVersion: "1.3",'), { proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } });
  const r = await curl(['--cacert', join(dir, 'trusted.pem'), '--resolve', `shop.test:${h.port}:127.0.0.1`, '--tlsv1.2', '--tls-max', '1.2', '-w', '%{ssl_verify_result}', `https://shop.test:${h.port}/hello`]);
  t.equal(r.status, 200, r.stderr);
  t.match(r.body, /up0/, 'answered by the upstream');
  t.equal((await handshake(h.port, { maxVersion: 'TLSv1.3' })).protocol, 'TLSv1.3', 'a TLS 1.3 client still gets TLS 1.3');
  const ec = await handshake(h.port, { maxVersion: 'TLSv1.2' });
  t.same(ec, { protocol: 'TLSv1.2', cipher: 'ECDHE-ECDSA-AES128-GCM-SHA256', keyType: 'ec' });
  for (const sigalgs of ['rsa_pkcs1_sha256', 'rsa_pkcs1_sha384', 'rsa_pss_rsae_sha256']) {
    const rsa = await handshake(h.port, { maxVersion: 'TLSv1.2', sigalgs });
    t.same(rsa, { protocol: 'TLSv1.2', cipher: 'ECDHE-RSA-AES128-GCM-SHA256', keyType: 'rsa' }, `the HSM's RSA key signs ${sigalgs}`);
  }
});

t.test('maxVersion 1.2: a TLS 1.3-capable client gets TLS 1.2 (and no downgrade alarm)', async (t) => {
  const h = await startHarness(t, yaml('minVersion: "1.2", maxVersion: "1.2",'), { proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } });
  t.equal((await handshake(h.port, {})).protocol, 'TLSv1.2');
});

t.test('the default serves TLS 1.2 and 1.3; minVersion 1.3 refuses a TLS 1.2 client with protocol_version', async (t) => {
  const d = await startHarness(t, yaml(''), { proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } });
  t.equal((await handshake(d.port, { maxVersion: 'TLSv1.2' })).protocol, 'TLSv1.2', 'TLS 1.2 by default');
  t.equal((await handshake(d.port, {})).protocol, 'TLSv1.3', 'TLS 1.3 preferred');
  const h = await startHarness(t, yaml('minVersion: "1.3",'), { proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } });
  await t.rejects(handshake(h.port, { maxVersion: 'TLSv1.2' }), /protocol version/);
});

// OpenSSL 3's SSL_OP_NO_EXTENDED_MASTER_SECRET (not in node's crypto.constants): a client without RFC 7627.
const NO_EMS = 0x1;

t.test('requireExtendedMasterSecret: false in the listener config admits a TLS 1.2 client without EMS; the default refuses it', async (t) => {
  const relaxed = await startHarness(t, yaml('minVersion: "1.2", requireExtendedMasterSecret: false,'), { proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } });
  t.equal((await handshake(relaxed.port, { maxVersion: 'TLSv1.2', secureOptions: NO_EMS })).protocol, 'TLSv1.2', 'OpenSSL agrees on the RFC 5246 master secret');
  const strict = await startHarness(t, yaml('minVersion: "1.2",'), { proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } });
  await t.rejects(handshake(strict.port, { maxVersion: 'TLSv1.2', secureOptions: NO_EMS }), /handshake failure/);
  t.equal((await handshake(strict.port, { maxVersion: 'TLSv1.2' })).protocol, 'TLSv1.2', 'a client with EMS is served');
});
