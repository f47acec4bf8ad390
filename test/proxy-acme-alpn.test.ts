// tls-alpn-01 validations on the HSM-backed listener (RFC 8737): the listener closes a validation
// connection itself after the handshake, and a validator that resets it instead of closing (as
// one that verified the certificate and moved on may) must not take the process down.
import t from 'tap';
import { connect } from 'node:net';
import tls from 'node:tls';
import type { CertifiedKey } from '../src/tls/signer.js';
import { startHsmBackedHarness } from './helpers/proxy-harness.js';
import { SoftSigner } from './helpers/soft-signer.js';
import { makeTestCerts } from './helpers/tls-certs.js';

const validation = makeTestCerts(['pending.test']);
t.teardown(() => validation.cleanup());
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
  const h = await startHsmBackedHarness(t, { acmeChallenge: (name) => (name === 'pending.test' ? pending : undefined) });
  const answers: Array<string | false> = [];
  for (let i = 0; i < 60; i++) answers.push(await validate(h.port, 'pending.test', i));
  t.same(new Set(answers), new Set(['acme-tls/1']), 'every validation got acme-tls/1');
  await new Promise((r) => setTimeout(r, 200)); // the resets reach the server
  const res = await h.curl('/', ['--cacert', h.cert]);
  t.equal(res.status, 200, 'the proxy still serves requests');
});
