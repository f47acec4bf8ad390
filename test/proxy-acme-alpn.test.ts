// tls-alpn-01 validations on the HSM-backed listener (RFC 8737): the listener closes a validation
// connection itself after the handshake, and a validator that resets it instead of closing (as
// one that verified the certificate and moved on may) must not take the process down.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Engine, SimBackend, writeKeyReference } from '../src/engine/index.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';
import { offloadListenerFactory } from '../src/proxy/offload-listener.js';
import type { CertifiedKey } from '../src/tls/signer.js';
import { FakeHsm } from './helpers/fake-hsm.js';
import { startHarness } from './helpers/proxy-harness.js';
import { SoftSigner } from './helpers/soft-signer.js';
import { makeTestCerts } from './helpers/tls-certs.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-acme-alpn-'));
const validation = makeTestCerts(['pending.test']);
t.teardown(() => { validation.cleanup(); rmSync(dir, { recursive: true, force: true }); });
const pending: CertifiedKey = { chain: validation.ec.chain, signer: new SoftSigner(validation.ec.key) };

/**
 * One acme-tls/1 handshake for `servername`, then the client goes away without reading what the
 * listener sends after it (its close_notify): by RST at once or a moment later, or by a close whose
 * unread input makes the client's kernel answer the listener with RST. Resolves with the ALPN got.
 */
function validate(port: number, servername: string, i: number): Promise<string | false> {
  return new Promise((resolve) => {
    const raw = connect(port, '127.0.0.1');
    const s = tls.connect({ socket: raw, servername, ALPNProtocols: ['acme-tls/1'], rejectUnauthorized: false }, () => {
      const alpn = s.alpnProtocol ?? false;
      const go = [() => raw.resetAndDestroy(), () => s.destroy(), () => s.end()][i % 3]!;
      if (i % 2) go();
      else setTimeout(go, i % 7);
      resolve(alpn);
    });
    s.on('error', () => resolve(false));
    raw.on('error', () => undefined);
  });
}

t.test('validators that reset the connection right after the handshake leave the proxy serving', async (t) => {
  const backend = new SimBackend({ client: new FakeHsm(), clusterId: '5a'.repeat(32), credentials: { user: 'cu1', password: 'secret1' } });
  const engine = new Engine({ backends: { sim: backend } });
  t.teardown(() => engine.close());
  const handle = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'site' });
  const key = join(dir, 'site.key.pem');
  await writeKeyReference(handle, key);
  const cert = join(dir, 'site.pem');
  writeFileSync(cert, certPem(await selfSign(await signingKey(await engine.signer(key), engine.webcrypto()), { subject: 'CN=localhost', sans: ['DNS:localhost'], days: 1 })));
  const yaml = `
listeners: [{ name: web, address: 127.0.0.1, port: 0, certificates: [{ cert: "${cert}", key: "${key}" }] }]
routes: [{ host: localhost, upstream: [ "{{up0}}" ] }]
admin: { address: 127.0.0.1, port: 0 }
`;
  const h = await startHarness(t, yaml, {
    proxy: { tlsListenerFactory: offloadListenerFactory({ engine, acmeChallenge: (name) => (name === 'pending.test' ? pending : undefined) }) },
  });
  const answers: Array<string | false> = [];
  for (let i = 0; i < 60; i++) answers.push(await validate(h.port, 'pending.test', i));
  t.same(new Set(answers), new Set(['acme-tls/1']), 'every validation got acme-tls/1');
  await new Promise((r) => setTimeout(r, 200)); // the resets reach the server
  const res = await h.curl('/', ['--cacert', cert]);
  t.equal(res.status, 200, 'the proxy still serves requests');
});
