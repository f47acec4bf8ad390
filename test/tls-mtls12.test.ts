// Client-certificate authentication on the TLS 1.2 server: openssl s_client -tls1_2 and node:tls
// (maxVersion TLSv1.2) over loopback, and a hand-built client (sans-IO) for a bad
// CertificateVerify and for the client flight in the wrong order.
import t, { type Test } from 'tap';
import { constants, createHash, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { AlertDescription, TlsAlertError, type AlertName } from '../src/tls/alert.js';
import { prepareCertEntry } from '../src/tls/certselect.js';
import { prepareClientAuth, type ClientAuthOptions } from '../src/tls/client-auth.js';
import { Writer } from '../src/tls/codec.js';
import { ServerConnection } from '../src/tls/connection.js';
import type { ServerHandshakeConfig } from '../src/tls/hello12.js';
import { finishedVerifyData12 } from '../src/tls/prf12.js';
import { ContentType, plaintextRecords } from '../src/tls/record.js';
import { SignatureScheme } from '../src/tls/signer.js';
import { TicketKeys } from '../src/tls/tickets.js';
import * as x509 from '../src/pki/x509.js';
import { ClientPki, type Issued } from './helpers/client-pki.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';
import { exchange, records } from './helpers/tls13-client.js';
import { CCS, clientFlight12, start12, type Flight12 } from './helpers/tls12-client.js';
import { runClient, startInteropServer, type InteropServer } from './helpers/tls-interop.js';

const DAY = 86_400_000;
const pki = new ClientPki();
t.teardown(() => pki.cleanup());
const ca = await pki.ca('Client Root', { rdn: 'O=Acme' });
const alice = await pki.issue(ca, { cn: 'alice', rdn: 'O=Acme', sans: [{ type: 'dns', value: 'alice.clients.example' }] });
const rsaBob = await pki.issue(ca, { cn: 'bob', keyType: 'rsa' });
const expired = await pki.issue(ca, { cn: 'old', notBefore: new Date(Date.now() - 9 * DAY), notAfter: new Date(Date.now() - DAY) });
const stranger = await pki.issue(await pki.ca('Other Root'), { cn: 'stranger' });
const serverOnly = await pki.issue(ca, { cn: 'server-only', eku: [x509.ExtendedKeyUsage.serverAuth] });
const caPem = readFileSync(ca.certFile);

async function server(t: Test, clientAuth: Partial<ClientAuthOptions> = {}): Promise<InteropServer> {
  const s = await startInteropServer({ clientAuth: { mode: 'require', ca: caPem, ...clientAuth } }, (sock) => {
    sock.on('error', () => undefined);
    sock.end(`${sock.getProtocol()} authorized=${sock.authorized} subject=${sock.peerIdentity?.subject ?? 'none'}\n`);
  });
  t.teardown(() => s.close());
  return s;
}

function sClient(s: InteropServer, cert?: Issued, extra: string[] = []) {
  const args = ['s_client', '-connect', `127.0.0.1:${s.port}`, '-CAfile', s.caFile, '-tls1_2', '-servername', 'localhost', ...extra];
  if (cert) args.push('-cert', cert.certFile, '-key', cert.keyFile);
  return runClient('openssl', args, { waitFor: /Verify return code|alert/, steps: [[400, 'ping\n']], timeoutMs: 10_000 });
}

const alertOf = (out: string): number | undefined => { const m = /alert number (\d+)/.exec(out); return m ? Number(m[1]) : undefined; };

t.test('openssl -tls1_2 with a valid ECDSA certificate is accepted with its identity', async (t) => {
  const s = await server(t);
  const r = await sClient(s, alice);
  t.match(r.stdout, /TLSv1\.2 authorized=true subject=CN=alice, O=Acme/);
  t.match(r.stdout, /Acceptable client certificate CA names\s+CN = Client Root, O = Acme/);
});

t.test('openssl -tls1_2 with an RSA certificate, PKCS#1 v1.5 and RSA-PSS CertificateVerify, is accepted', async (t) => {
  const s = await server(t);
  t.match((await sClient(s, rsaBob, ['-client_sigalgs', 'RSA+SHA256'])).stdout, /TLSv1\.2 authorized=true subject=CN=bob/);
  t.match((await sClient(s, rsaBob, ['-client_sigalgs', 'rsa_pss_rsae_sha256'])).stdout, /TLSv1\.2 authorized=true subject=CN=bob/);
});

t.test('no certificate under require: handshake_failure (40), TLS 1.2 having no certificate_required', async (t) => {
  const s = await server(t);
  const r = await sClient(s);
  t.equal(alertOf(r.stderr), AlertDescription.handshake_failure, r.stderr.slice(-300));
  t.notMatch(r.stdout, /authorized=/);
});

for (const [what, cert, alert] of [
  ['an expired certificate', expired, 'certificate_expired'],
  ['a certificate from another CA', stranger, 'unknown_ca'],
  ['a certificate without EKU clientAuth', serverOnly, 'unsupported_certificate'],
] as const) {
  t.test(`${what}: ${alert}`, async (t) => {
    const s = await server(t);
    t.equal(alertOf((await sClient(s, cert)).stderr), AlertDescription[alert]);
  });
}

t.test('optional mode over TLS 1.2: no certificate gets through unauthenticated', async (t) => {
  const s = await server(t, { mode: 'optional' });
  t.match((await sClient(s)).stdout, /TLSv1\.2 authorized=false subject=none/);
});

t.test('node:tls (maxVersion TLSv1.2) with a valid certificate is accepted; without one it is refused', async (t) => {
  const s = await server(t);
  const connect = (cert?: Issued) => new Promise<{ data: string; error?: NodeJS.ErrnoException }>((resolve) => {
    let data = '';
    const c = tls.connect({
      host: '127.0.0.1', port: s.port, servername: 'localhost', ca: readFileSync(s.caFile), maxVersion: 'TLSv1.2',
      ...(cert ? { cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) } : {}),
    });
    c.on('data', (d: Buffer) => { data += d.toString(); });
    c.on('end', () => resolve({ data }));
    c.on('error', (error: NodeJS.ErrnoException) => resolve({ data, error }));
  });
  t.match((await connect(alice)).data, /TLSv1\.2 authorized=true subject=CN=alice/);
  t.equal((await connect()).error?.code, 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE');
});

// ---- hand-built client ----

const serverCerts = makeTestCerts();
t.teardown(() => serverCerts.cleanup());

function config(over: Partial<ClientAuthOptions> = {}): ServerHandshakeConfig {
  return {
    certificates: [prepareCertEntry({ chain: serverCerts.ec.chain, signer: new SoftSigner(serverCerts.ec.key) })],
    ticketCount: 1, ticketLifetimeS: 3600, verifyAfterSign: () => false, now: Date.now, ticketKeys: new TicketKeys(),
    minVersion: '1.2', maxVersion: '1.2', clientAuth: prepareClientAuth({ mode: 'require', ca: [ca.der], ...over }),
  };
}

const msg = (type: number, f: (w: Writer) => void): Buffer => { const w = new Writer(); w.u8(type).lengthPrefixed(3, f); return Buffer.from(w.finish()); };
const certificate12 = (chain: Buffer[]) => msg(11, (w) => w.lengthPrefixed(3, (l) => chain.forEach((d) => l.vec24(d))));

interface Parts { cert: Buffer; cke: Buffer; cv?: Buffer; finished: Buffer; sealer: ReturnType<typeof clientFlight12>['sealer'] }

/** The client's mTLS flight pieces: Certificate, ClientKeyExchange, CertificateVerify, Finished. */
function mtlsFlight(f: Flight12, chain: Buffer[], key: KeyObject | null, o: { scheme?: number; corrupt?: boolean } = {}): Parts {
  const cert = certificate12(chain);
  f.transcript.push(cert); // before CKE: the extended master secret covers it
  const c = clientFlight12(f);
  const transcript = [...c.transcript];
  let cv: Buffer | undefined;
  if (key) {
    const scheme = o.scheme ?? SignatureScheme.ecdsa_secp256r1_sha256;
    const content = Buffer.concat(transcript);
    const sig = scheme === SignatureScheme.rsa_pss_rsae_sha256
      ? cryptoSign('sha256', content, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST })
      : cryptoSign('sha256', content, key);
    if (o.corrupt) sig[sig.length - 3]! ^= 0x40;
    cv = msg(15, (w) => w.u16(scheme).vec16(sig));
    transcript.push(cv);
  }
  const h = createHash(f.suite.hash);
  for (const m of transcript) h.update(m);
  const finished = Buffer.concat([Buffer.from([20, 0, 0, 12]), finishedVerifyData12(f.suite.hash, c.master, 'client', h.digest())]);
  return { cert, cke: c.cke, ...(cv ? { cv } : {}), finished, sealer: c.sealer };
}

const hs = (...m: Buffer[]) => plaintextRecords(ContentType.handshake, Buffer.concat(m));

function expectAlert(t: Test, conn: ServerConnection, alert: AlertName): void {
  const err = conn.error;
  t.ok(err instanceof TlsAlertError, `failed with an alert (${err?.message})`);
  t.equal(err instanceof TlsAlertError ? err.alert : -1, AlertDescription[alert], `${alert}: ${err?.message}`);
  t.notOk(conn.negotiated.peer, 'no identity recorded');
}

t.test('the TLS 1.2 flight carries CertificateRequest between ServerKeyExchange and ServerHelloDone', async (t) => {
  const { f } = await start12(new ServerConnection(config()));
  t.same(f.transcript.slice(1).map((m) => m[0]), [2, 11, 12, 13, 14]);
});

t.test('a correct client flight establishes the connection with the identity, and no ticket is issued', async (t) => {
  const conn = new ServerConnection(config());
  const { f } = await start12(conn, { ticket: Buffer.alloc(0) });
  t.notOk(f.extensions.has(35), 'no session_ticket extension in ServerHello under mTLS');
  const p = mtlsFlight(f, [alice.der], alice.key);
  const out = await exchange(conn, Buffer.concat([hs(p.cert, p.cke, p.cv!), CCS, p.sealer.seal(ContentType.handshake, p.finished)]));
  t.ok(conn.established, conn.error?.message ?? 'established');
  t.equal(conn.negotiated.peer?.subject, 'CN=alice, O=Acme');
  t.equal(records(out)[0]?.type, ContentType.change_cipher_spec, 'the server answers with CCS, no NewSessionTicket');
});

t.test('a CertificateVerify whose signature does not verify: decrypt_error', async (t) => {
  const conn = new ServerConnection(config());
  const { f } = await start12(conn);
  const p = mtlsFlight(f, [alice.der], alice.key, { corrupt: true });
  await exchange(conn, Buffer.concat([hs(p.cert, p.cke, p.cv!), CCS, p.sealer.seal(ContentType.handshake, p.finished)]));
  expectAlert(t, conn, 'decrypt_error');
});

t.test('a CertificateVerify made with another key: decrypt_error', async (t) => {
  const conn = new ServerConnection(config());
  const { f } = await start12(conn);
  const p = mtlsFlight(f, [alice.der], stranger.key);
  await exchange(conn, hs(p.cert, p.cke, p.cv!));
  expectAlert(t, conn, 'decrypt_error');
});

t.test('a CertificateVerify scheme we did not offer (ecdsa_sha1): illegal_parameter', async (t) => {
  const conn = new ServerConnection(config());
  const { f } = await start12(conn);
  const p = mtlsFlight(f, [alice.der], alice.key, { scheme: 0x0203 /* ecdsa_sha1 */ });
  await exchange(conn, hs(p.cert, p.cke, p.cv!));
  expectAlert(t, conn, 'illegal_parameter');
});

t.test('ChangeCipherSpec right after ClientKeyExchange, skipping CertificateVerify: unexpected_message', async (t) => {
  const conn = new ServerConnection(config());
  const { f } = await start12(conn);
  const p = mtlsFlight(f, [alice.der], alice.key);
  await exchange(conn, Buffer.concat([hs(p.cert, p.cke), CCS]));
  expectAlert(t, conn, 'unexpected_message');
});

t.test('ClientKeyExchange without the client Certificate first: unexpected_message', async (t) => {
  const conn = new ServerConnection(config({ mode: 'optional' }));
  const { f } = await start12(conn);
  const c = clientFlight12(f);
  await exchange(conn, hs(c.cke));
  expectAlert(t, conn, 'unexpected_message');
});

t.test('optional mode: an empty client Certificate goes on without CertificateVerify', async (t) => {
  const conn = new ServerConnection(config({ mode: 'optional' }));
  const { f } = await start12(conn);
  const p = mtlsFlight(f, [], null);
  await exchange(conn, Buffer.concat([hs(p.cert, p.cke), CCS, p.sealer.seal(ContentType.handshake, p.finished)]));
  t.ok(conn.established, conn.error?.message ?? 'established');
  t.equal(conn.negotiated.peer, undefined);
});

t.test('require mode: an empty client Certificate is handshake_failure', async (t) => {
  const conn = new ServerConnection(config());
  await start12(conn);
  await exchange(conn, hs(certificate12([])));
  expectAlert(t, conn, 'handshake_failure');
});
