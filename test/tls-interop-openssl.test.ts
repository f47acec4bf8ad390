// Interop with `openssl s_client` on loopback: every suite × group with ECDSA and RSA
// certificates, each CertificateVerify scheme, HelloRetryRequest, ticket resumption, KeyUpdate.
import t from 'tap';
import { startInteropServer, runClient } from './helpers/tls-interop.js';

const SUITES = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'];
const GROUPS: Array<[string, RegExp]> = [['X25519', /X25519/], ['P-256', /prime256v1/], ['P-384', /secp384r1/]];

const srv = await startInteropServer();
t.teardown(() => srv.close());
// s_client exits on stdin EOF: close stdin only once the server's banner has arrived.
const banner = { waitFor: /hello \S+ resumed=\w+\n/ };
const base = ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-servername', 'localhost', '-CAfile', srv.caFile, '-tls1_3'];

for (const [keyName, sigalg, sigType] of [['ECDSA', 'ecdsa_secp256r1_sha256', 'ECDSA'], ['RSA', 'rsa_pss_rsae_sha256', 'RSA-PSS']]) {
  t.test(`every suite × group with an ${keyName} certificate`, async (t) => {
    for (const suite of SUITES) {
      for (const [group, groupRe] of GROUPS) {
        const r = await runClient('openssl', [...base, '-brief', '-ciphersuites', suite, '-groups', group, '-sigalgs', sigalg], banner);
        t.match(r.stdout, `hello ${suite} resumed=false`, `${suite} ${group}: application data arrives`);
        t.match(r.stderr, `Ciphersuite: ${suite}`);
        t.match(r.stderr, groupRe, `${group} used`);
        t.match(r.stderr, `Signature type: ${sigType}`);
        t.match(r.stderr, 'Verification: OK', 'chain verifies');
      }
    }
  });
}

t.test('-sigalgs forces each CertificateVerify scheme', async (t) => {
  const cases: Array<[string, string, string]> = [
    ['rsa_pss_rsae_sha256', 'RSA-PSS', 'SHA256'], ['rsa_pss_rsae_sha384', 'RSA-PSS', 'SHA384'], ['rsa_pss_rsae_sha512', 'RSA-PSS', 'SHA512'],
    ['ecdsa_secp256r1_sha256', 'ECDSA', 'SHA256'], ['ecdsa_secp384r1_sha384', 'ECDSA', 'SHA384'],
  ];
  for (const [scheme, type, hash] of cases) {
    const r = await runClient('openssl', [...base, '-brief', '-sigalgs', scheme], banner);
    t.match(r.stderr, `Signature type: ${type}`, scheme);
    t.match(r.stderr, `Hash used: ${hash}`, scheme);
    t.match(r.stderr, 'Verification: OK');
  }
});

t.test('HelloRetryRequest when the first group has no share we accept', async (t) => {
  const r = await runClient('openssl', [...base, '-msg', '-groups', 'ffdhe8192:X25519'], banner);
  t.equal(r.stdout.match(/>>> .*ClientHello/g)?.length, 2, 'the client sent a second ClientHello');
  t.match(r.stdout, /Server Temp Key: X25519/);
  t.match(r.stdout, /hello TLS_AES_128_GCM_SHA256/);
  const r2 = await runClient('openssl', [...base, '-brief', '-groups', 'P-384:X25519'], banner);
  t.match(r2.stderr, /secp384r1/, 'a share for a supported first group is used directly');
});

t.test('session resumption with -sess_out / -sess_in', async (t) => {
  const sess = `${srv.certs.dir}/session.pem`;
  const first = await runClient('openssl', [...base, '-sess_out', sess], banner);
  t.match(first.stdout, /New, TLSv1.3/);
  const second = await runClient('openssl', [...base, '-sess_in', sess], banner);
  t.match(second.stdout, /Reused, TLSv1.3/);
  t.match(second.stdout, /resumed=true/, 'server reports isSessionReused()');
});

t.test('KeyUpdate both ways with the k and K commands', async (t) => {
  const before = srv.sockets.length;
  const r = await runClient('openssl', [...base], { ...banner, steps: [[100, 'k\n'], [200, 'K\n'], [200, 'ping\n'], [400, '']] });
  t.equal((r.stdout + r.stderr).match(/KEYUPDATE/g)?.length, 2, 'client sent two KeyUpdates');
  t.match(r.stdout, 'echo ping', 'data flows under the new keys');
  const s = srv.sockets[before]!;
  t.equal(s.connection.counters.keyUpdatesReceived, 2);
  t.equal(s.connection.counters.keyUpdatesSent, 1, 'update_requested answered once');
});

t.test('an unknown server name is served with the first certificate (sni: strict is in tls-groups-interop)', async (t) => {
  const r = await runClient('openssl', [...base, '-brief', '-servername', 'nope.test'], banner);
  t.match(r.stdout, /hello TLS_AES_128_GCM_SHA256/, 'the handshake completes');
  t.match(r.stderr, 'Signature type: ECDSA', 'with the first certificate (P-256)');
});
