// RFC 8737 tls-alpn-01 in the TLS server: a hello offering acme-tls/1 for a name with a pending
// challenge gets the validation certificate and acme-tls/1 (TLS 1.3 and 1.2); every other hello
// is untouched; a server waiting for its first certificate answers only validations.
import t from 'tap';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createServer, type TlsServer, type TlsServerOptions } from '../src/tls/server.js';
import type { CertifiedKey } from '../src/tls/signer.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';

const site = makeTestCerts(['shop.example']);
const challengeCerts = makeTestCerts(['pending.example']);
t.teardown(() => { site.cleanup(); challengeCerts.cleanup(); });

const challenge: CertifiedKey = { chain: challengeCerts.ec.chain, signer: new SoftSigner(challengeCerts.ec.key) };
const pending = new Map<string, CertifiedKey>([['pending.example', challenge]]);

async function start(opts: Partial<TlsServerOptions>): Promise<{ server: TlsServer; port: number }> {
  const server = createServer({
    certificates: [{ chain: site.ec.chain, signer: new SoftSigner(site.ec.key) }],
    alpnProtocols: ['http/1.1'], acmeChallenge: (name) => pending.get(name), ...opts,
  }, (socket) => socket.destroy());
  server.on('tlsClientError', () => { /* the client sees the alert */ });
  server.listen({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { server, port: (server.address() as AddressInfo).port };
}

interface Outcome { alpn: string | false; serial?: string; error?: string }

function connect(port: number, opts: tls.ConnectionOptions): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts }, () => {
      resolve({ alpn: s.alpnProtocol ?? false, serial: s.getPeerX509Certificate()?.serialNumber });
      s.destroy();
    });
    s.on('error', (err) => resolve({ alpn: false, error: err.message }));
  });
}

const serial = (chain: Buffer[]): string => new X509Certificate(chain[0]!).serialNumber;

for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
  t.test(`${version}: acme-tls/1 with a pending name gets the validation certificate and acme-tls/1`, async (t) => {
    const { port } = await start({});
    const got = await connect(port, { servername: 'pending.example', ALPNProtocols: ['acme-tls/1'], minVersion: version, maxVersion: version });
    t.equal(got.error, undefined);
    t.equal(got.alpn, 'acme-tls/1');
    t.equal(got.serial, serial(challengeCerts.ec.chain));
  });
}

t.test('acme-tls/1 for a name with nothing pending is refused (no_application_protocol), not answered with the site certificate', async (t) => {
  const { port } = await start({});
  const got = await connect(port, { servername: 'shop.example', ALPNProtocols: ['acme-tls/1'] });
  t.match(got.error ?? '', /no application protocol/i);
});

t.test('an ordinary hello for the pending name is untouched: the site certificate and http/1.1', async (t) => {
  const { port } = await start({ certificates: [{ chain: challengeCerts.rsa.chain, signer: new SoftSigner(challengeCerts.rsa.key) }] });
  const got = await connect(port, { servername: 'pending.example', ALPNProtocols: ['http/1.1'] });
  t.equal(got.alpn, 'http/1.1');
  t.equal(got.serial, serial(challengeCerts.rsa.chain));
});

t.test('a validation hello never resumes a session and gets no ticket', async (t) => {
  const { port } = await start({});
  const first = await new Promise<Buffer | undefined>((resolve) => {
    let ticket: Buffer | undefined;
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: 'pending.example', ALPNProtocols: ['acme-tls/1'] });
    s.on('session', (sess: Buffer) => { ticket = sess; });
    s.on('secureConnect', () => setTimeout(() => { s.destroy(); resolve(ticket); }, 200));
    s.on('error', () => resolve(undefined));
  });
  t.equal(first, undefined, 'no NewSessionTicket after a validation handshake');
});

t.test('a server with no certificate of its own (waiting for its first ACME one) answers validations only', async (t) => {
  const { port } = await start({ certificates: [] });
  const ok = await connect(port, { servername: 'pending.example', ALPNProtocols: ['acme-tls/1'] });
  t.equal(ok.alpn, 'acme-tls/1');
  const plain = await connect(port, { servername: 'shop.example' });
  t.match(plain.error ?? '', /unrecognized name|handshake failure/i);
  t.throws(() => createServer({ certificates: [] }), /at least one certificate/);
});
