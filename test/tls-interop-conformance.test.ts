// Real clients on the paths the audit found untested by interop: HelloRetryRequest to each of
// our groups and from every client that can be steered into one (openssl, curl, node:tls,
// gnutls-cli), padded records without middlebox mode, and resumption from gnutls-cli and Python.
import t from 'tap';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { startInteropServer, runClient } from './helpers/tls-interop.js';
import { NamedGroup } from '../src/tls/suites.js';

// P-521 is left out of the listener's groups so that clients leading with it get a HelloRetryRequest.
const srv = await startInteropServer({ groups: ['x25519', 'secp256r1', 'secp384r1'] });
t.teardown(() => srv.close());
const banner = { waitFor: /hello \S+ resumed=\w+\n/ };
const sClient = ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-servername', 'localhost', '-CAfile', srv.caFile, '-tls1_3'];

t.test('openssl: HelloRetryRequest to each of our groups (the client first offers only P-521, not in our groups)', async (t) => {
  for (const [group, re] of [['P-256', /Server Temp Key: ECDH, prime256v1/], ['P-384', /Server Temp Key: ECDH, secp384r1/], ['X25519', /Server Temp Key: X25519/]] as const) {
    const r = await runClient('openssl', [...sClient, '-msg', '-groups', `P-521:${group}`], banner);
    t.equal(r.stdout.match(/>>> .*ClientHello/g)?.length, 2, `${group}: a second ClientHello followed the HRR`);
    t.match(r.stdout, re, `${group} negotiated`);
    t.match(r.stdout, /hello TLS_AES_128_GCM_SHA256 resumed=false/);
  }
});

t.test('openssl: HelloRetryRequest with the SHA-384 suite and an RSA-PSS signature', async (t) => {
  const r = await runClient('openssl', [...sClient, '-msg', '-groups', 'P-521:X25519', '-ciphersuites', 'TLS_AES_256_GCM_SHA384', '-sigalgs', 'rsa_pss_rsae_sha384'], banner);
  t.equal(r.stdout.match(/>>> .*ClientHello/g)?.length, 2);
  t.match(r.stdout, /hello TLS_AES_256_GCM_SHA384 resumed=false/, r.stderr.slice(-300));
});

t.test('openssl: padded records and no middlebox mode (no session id, no CCS)', async (t) => {
  const r = await runClient('openssl', [...sClient, '-brief', '-record_padding', '1000', '-no_middlebox'], { ...banner, steps: [[50, 'ping\n'], [300, '']] });
  t.match(r.stdout, /hello TLS_AES_128_GCM_SHA256/);
  t.match(r.stdout, /echo ping/, 'padded application data accepted');
});

t.test('curl: HelloRetryRequest (--curves P-521:P-256)', async (t) => {
  const r = await runClient('curl', ['--silent', '--show-error', '-v', '--tlsv1.3', '--curves', 'P-521:P-256', '--cacert', srv.caFile, '--resolve', `localhost:${srv.port}:127.0.0.1`, '--max-time', '5', `https://localhost:${srv.port}/`]);
  t.equal(r.stderr.match(/\(OUT\), TLS handshake, Client hello/g)?.length, 2, 'curl sent two ClientHellos');
  t.match(r.stderr, /SSL connection using TLSv1.3/);
});

t.test('node:tls: HelloRetryRequest (ecdhCurve P-521:P-256)', async (t) => {
  const before = srv.sockets.length;
  const banner = await new Promise<string>((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port: srv.port, servername: 'localhost', ca: readFileSync(srv.caFile), ecdhCurve: 'P-521:P-256', minVersion: 'TLSv1.3' });
    c.once('data', (d: Buffer) => { resolve(d.toString()); c.end(); });
    c.on('error', reject);
  });
  t.match(banner, /hello TLS_AES_128_GCM_SHA256/);
  // OpenSSL sends a share only for its first group (P-521, not in this listener's groups): P-256 means an HRR happened.
  t.equal(srv.sockets[before]!.connection.negotiated.group, NamedGroup.secp256r1);
});

t.test('gnutls-cli: HelloRetryRequest (SECP521R1 first, then SECP384R1)', async (t) => {
  const r = await runClient('gnutls-cli', ['-d', '4', '--x509cafile', srv.caFile, '--port', String(srv.port), '--sni-hostname', 'localhost', '--priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.3:-GROUP-ALL:+GROUP-SECP521R1:+GROUP-SECP384R1', '127.0.0.1'], { waitFor: /hello \S+ resumed/, steps: [[50, 'ping\n'], [300, '']] });
  t.match(r.stderr, /HELLO RETRY REQUEST/, 'gnutls saw an HRR');
  t.match(r.stdout, /echo ping/);
});

t.test('gnutls-cli --resume resumes with a ticket', async (t) => {
  const r = await runClient('gnutls-cli', ['--resume', '--x509cafile', srv.caFile, '--port', String(srv.port), '--sni-hostname', 'localhost', '--priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.3', '127.0.0.1'], { waitFor: /resumed=true/, steps: [[50, '']] });
  t.match(r.stdout, /This is a resumed session/);
  t.match(r.stdout, /hello TLS_AES_128_GCM_SHA256 resumed=true/, 'the server saw a resumed handshake');
});

t.test('Python ssl resumes a session', async (t) => {
  const script = [
    'import socket, ssl',
    `ctx = ssl.create_default_context(cafile=${JSON.stringify(srv.caFile)})`,
    'ctx.minimum_version = ssl.TLSVersion.TLSv1_3',
    `conn = lambda sess=None: ctx.wrap_socket(socket.create_connection(("127.0.0.1", ${srv.port}), timeout=5), server_hostname="localhost", session=sess)`,
    's = conn()',
    'print(s.recv(200).decode().strip())',
    'sess = s.session',
    's.close()',
    's = conn(sess)',
    'print(s.session_reused, s.recv(200).decode().strip())',
    's.close()',
  ].join('\n');
  const r = await runClient('python3', ['-c', script]);
  t.equal(r.stdout, 'hello TLS_AES_128_GCM_SHA256 resumed=false\nTrue hello TLS_AES_128_GCM_SHA256 resumed=true\n', r.stderr);
});

t.test('openssl: resumption through a HelloRetryRequest (binders over message_hash ‖ HRR ‖ ClientHello2)', async (t) => {
  const sess = `${srv.certs.dir}/hrr-session.pem`;
  await runClient('openssl', [...sClient, '-sess_out', sess], banner);
  const r = await runClient('openssl', [...sClient, '-msg', '-sess_in', sess, '-groups', 'P-521:X25519'], banner);
  t.equal(r.stdout.match(/>>> .*ClientHello/g)?.length, 2, 'HRR happened');
  t.match(r.stdout, /Reused, TLSv1.3/);
  t.match(r.stdout, /resumed=true/, 'the server resumed');
});
