// TLS 1.2 interop on loopback: openssl s_client (every suite × group with ECDSA and RSA
// certificates, each ServerKeyExchange scheme, ticket resumption, refusals), curl --tls-max 1.2
// through http.Server over TlsSocket, gnutls-cli, Python ssl and node:tls.
import t from 'tap';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { once } from 'node:events';
import type { HandshakeObservation } from '../src/tls/observe.js';
import { startInteropServer, runClient } from './helpers/tls-interop.js';
import { Pkcs1SoftSigner } from './helpers/tls12-client.js';
import { softCertifiedKey } from './helpers/soft-signer.js';

const SUITES: Array<[string, 'ECDSA' | 'RSA']> = [
  ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDSA'], ['ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDSA'], ['ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDSA'],
  ['ECDHE-RSA-AES128-GCM-SHA256', 'RSA'], ['ECDHE-RSA-AES256-GCM-SHA384', 'RSA'], ['ECDHE-RSA-CHACHA20-POLY1305', 'RSA'],
];
// In TLS 1.2 supported_groups also limits the ECDSA certificate's curve (RFC 8422 §5.1): X25519
// alone leaves no certificate, so P-256 rides along (our preference still picks X25519 for ECDHE).
const GROUPS: Array<[string, RegExp]> = [['X25519:P-256', /X25519/], ['P-256', /prime256v1/], ['P-384', /secp384r1/]];

const srv = await startInteropServer();
t.teardown(() => srv.close());
// RSA with PKCS#1 v1.5 as well as PSS, as the engine's RSA signers offer (TLS 1.2 clients may ask for either).
srv.server.setCertificates([
  softCertifiedKey(srv.certs.ec.chain, srv.certs.ec.key),
  softCertifiedKey(srv.certs.ec384.chain, srv.certs.ec384.key),
  { chain: srv.certs.rsa.chain, signer: new Pkcs1SoftSigner(srv.certs.rsa.key) },
]);
const banner = { waitFor: /hello \S+ resumed=\w+\n/ };
const base = ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-servername', 'localhost', '-CAfile', srv.caFile, '-tls1_2'];

t.test('openssl s_client -tls1_2: every suite × group with ECDSA and RSA certificates', async (t) => {
  for (const [suite, sigType] of SUITES) {
    for (const [group, groupRe] of GROUPS) {
      const r = await runClient('openssl', [...base, '-brief', '-cipher', suite, '-groups', group], banner);
      t.match(r.stderr, 'Protocol version: TLSv1.2', `${suite} ${group}`);
      t.match(r.stderr, `Ciphersuite: ${suite}`);
      t.match(r.stderr, groupRe, `${group} used`);
      t.match(r.stderr, new RegExp(`Signature type: ${sigType}`));
      t.match(r.stderr, 'Verification: OK', 'chain verifies');
      t.match(r.stdout, `hello ${suite} resumed=false`, 'application data arrives');
    }
  }
});

t.test('-sigalgs forces each ServerKeyExchange scheme, PKCS#1 v1.5 included', async (t) => {
  const cases: Array<[string, string, string, string]> = [
    ['RSA+SHA256', 'RSA', 'SHA256', 'ECDHE-RSA-AES128-GCM-SHA256'], ['RSA+SHA384', 'RSA', 'SHA384', 'ECDHE-RSA-AES128-GCM-SHA256'],
    ['RSA+SHA512', 'RSA', 'SHA512', 'ECDHE-RSA-AES128-GCM-SHA256'], ['rsa_pss_rsae_sha256', 'RSA-PSS', 'SHA256', 'ECDHE-RSA-AES128-GCM-SHA256'],
    ['rsa_pss_rsae_sha384', 'RSA-PSS', 'SHA384', 'ECDHE-RSA-AES128-GCM-SHA256'], ['rsa_pss_rsae_sha512', 'RSA-PSS', 'SHA512', 'ECDHE-RSA-AES128-GCM-SHA256'],
    ['ECDSA+SHA256', 'ECDSA', 'SHA256', 'ECDHE-ECDSA-AES128-GCM-SHA256'],
    // Any ECDSA hash with the P-256 key: TLS 1.2 does not bind the hash to the curve.
    ['ECDSA+SHA384', 'ECDSA', 'SHA384', 'ECDHE-ECDSA-AES128-GCM-SHA256'], ['ECDSA+SHA512', 'ECDSA', 'SHA512', 'ECDHE-ECDSA-AES128-GCM-SHA256'],
  ];
  for (const [sigalg, type, hash, cipher] of cases) {
    const r = await runClient('openssl', [...base, '-brief', '-sigalgs', sigalg, '-cipher', cipher], banner);
    t.match(r.stderr, `Signature type: ${type}`, sigalg);
    t.match(r.stderr, `Hash used: ${hash}`, sigalg);
    t.match(r.stderr, 'Verification: OK');
  }
});

t.test('session resumption with -sess_out / -sess_in reports Reused, TLSv1.2', async (t) => {
  const sess = `${srv.certs.dir}/session12.pem`;
  const first = await runClient('openssl', [...base, '-sess_out', sess], banner);
  t.match(first.stdout, /New, TLSv1.2/);
  t.match(first.stdout, /TLS session ticket lifetime hint/);
  const second = await runClient('openssl', [...base, '-sess_in', sess], banner);
  t.match(second.stdout, /Reused, TLSv1.2/);
  t.match(second.stdout, /resumed=true/, 'server isSessionReused() is true');
});

t.test('-reconnect: five resumptions on one ticket', async (t) => {
  const r = await runClient('openssl', [...base, '-reconnect']);
  t.equal(r.stdout.match(/^New, TLSv1\.2/gm)?.length, 1, r.stderr.slice(-300));
  t.equal(r.stdout.match(/^Reused, TLSv1\.2/gm)?.length, 5);
});

t.test('refusals openssl reports with the right alert', async (t) => {
  const refused = async (args: string[], alert: RegExp, what: string): Promise<void> => {
    const r = await runClient('openssl', ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-servername', 'localhost', ...args], { waitFor: /alert|error/ });
    t.match(r.stdout + r.stderr, alert, what);
  };
  await refused(['-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'], /alert protocol version/, 'TLS 1.1 → protocol_version');
  await refused(['-tls1', '-cipher', 'DEFAULT@SECLEVEL=0'], /alert protocol version/, 'TLS 1.0 → protocol_version');
  await refused(['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384'], /alert handshake failure/, 'CBC only → handshake_failure');
  await refused(['-tls1_2', '-cipher', 'AES128-GCM-SHA256:AES256-GCM-SHA384'], /alert handshake failure/, 'RSA key exchange only → handshake_failure');
  await refused(['-tls1_2', '-fallback_scsv'], /alert inappropriate fallback/, 'TLS_FALLBACK_SCSV → inappropriate_fallback');
});

t.test('a renegotiation attempt (s_client R) is refused with no_renegotiation', async (t) => {
  const r = await runClient('openssl', [...base], { ...banner, steps: [[100, 'R\n'], [500, '']] });
  t.match(r.stdout + r.stderr, /RENEGOTIATING/);
  t.match(r.stdout + r.stderr, /no renegotiation/i);
});

t.test('curl --tls-max 1.2 through http.Server over TlsSocket', async (t) => {
  const front = http.createServer((req, res) => res.end(`${req.method} ${req.url} ${(req.socket as unknown as tls.TLSSocket).getProtocol()}\n`));
  const s = await startInteropServer({}, (sock) => front.emit('connection', sock));
  t.teardown(async () => { await s.close(); front.close(); });
  const r = await runClient('curl', ['--silent', '--show-error', '--tlsv1.2', '--tls-max', '1.2', '--cacert', s.caFile, '--resolve', `localhost:${s.port}:127.0.0.1`,
    '--max-time', '8', '-w', ' %{http_version}', `https://localhost:${s.port}/x?y=1`]);
  t.equal(r.stdout, 'GET /x?y=1 TLSv1.2\n 1.1', r.stderr);
});

t.test('gnutls-cli with NORMAL:-VERS-ALL:+VERS-TLS1.2', async (t) => {
  const r = await runClient('gnutls-cli', ['--x509cafile', srv.caFile, '--port', String(srv.port), '--sni-hostname', 'localhost', '--verify-hostname', 'localhost',
    '--priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.2', '127.0.0.1'], { waitFor: /hello \S+ resumed/, steps: [[50, 'ping\n'], [400, '']] });
  t.match(r.stdout, /hello ECDHE-ECDSA-\S+ resumed=false/, `banner received (${r.stderr.slice(-300)})`);
  t.match(r.stdout, /echo ping/);
  t.match(r.stdout + r.stderr, /TLS1\.2/);
});

t.test('Python ssl with maximum_version TLSv1_2', async (t) => {
  const script = [
    'import socket, ssl',
    `ctx = ssl.create_default_context(cafile=${JSON.stringify(srv.caFile)})`,
    'ctx.maximum_version = ssl.TLSVersion.TLSv1_2',
    `s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", ${srv.port}), timeout=5), server_hostname="localhost")`,
    'print(s.version(), s.cipher()[0])',
    'print(s.recv(200).decode().strip())',
    's.sendall(b"ping\\n")',
    'print(s.recv(200).decode().strip())',
    's.close()',
  ].join('\n');
  const r = await runClient('python3', ['-c', script]);
  t.equal(r.stdout, 'TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256\nhello ECDHE-ECDSA-AES128-GCM-SHA256 resumed=false\necho ping\n', r.stderr);
});

t.test('node:tls with maxVersion TLSv1.2: ALPN, getProtocol on both sides, ticket reuse', async (t) => {
  const ca = readFileSync(srv.caFile);
  const connect = (session?: Buffer): Promise<{ reused: boolean; protocol: string | null; banner: string; session?: Buffer; alpn: string | false }> => new Promise((resolve, reject) => {
    let banner = '';
    let sess: Buffer | undefined;
    const c = tls.connect({ host: '127.0.0.1', port: srv.port, servername: 'localhost', ca, maxVersion: 'TLSv1.2', session, ALPNProtocols: ['http/1.1'] });
    c.on('session', (s: Buffer) => { sess ??= s; });
    c.on('data', (d: Buffer) => {
      banner += d.toString();
      if (banner.endsWith('\n')) { resolve({ reused: c.isSessionReused(), protocol: c.getProtocol(), banner, alpn: c.alpnProtocol ?? false, session: sess }); c.end(); }
    });
    c.on('error', reject);
  });
  const before = srv.sockets.length;
  const first = await connect();
  t.equal(first.protocol, 'TLSv1.2');
  t.equal(first.alpn, 'http/1.1');
  t.equal(srv.sockets[before]!.getProtocol(), 'TLSv1.2', 'TlsSocket.getProtocol()');
  t.same(srv.sockets[before]!.getCipher(), { name: 'ECDHE-ECDSA-AES128-GCM-SHA256', standardName: 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256', version: 'TLSv1.2' });
  t.ok(first.session, 'a session with a ticket');
  const second = await connect(first.session);
  t.equal(second.reused, true, 'client resumed');
  t.match(second.banner, 'resumed=true');
});

t.test('the handshake observation names TLS 1.2, its suite, group and key type', async (t) => {
  const seen: HandshakeObservation[] = [];
  const s = await startInteropServer({ onHandshake: (o) => seen.push(o) });
  t.teardown(() => s.close());
  const c = tls.connect({ host: '127.0.0.1', port: s.port, servername: 'localhost', ca: readFileSync(s.caFile), maxVersion: 'TLSv1.2' });
  await once(c, 'secureConnect');
  c.destroy();
  await new Promise((r) => setTimeout(r, 50));
  t.match(seen[0], { version: 'TLSv1.2', suite: 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256', group: 'x25519', keyType: 'ec', resumed: false, result: 'ok' });
});
