// Each key exchange group with real clients that offer only it: openssl s_client -groups (TLS 1.3 and
// 1.2) and gnutls-cli --priority (GROUP-*). Neither speaks ML-KEM here (OpenSSL 3.0, GnuTLS 3.7):
// test/browser-chromium.test.ts covers X25519MLKEM768 with Chromium. Also the SNI policy with openssl.
import t from 'tap';
import { startInteropServer, runClient } from './helpers/tls-interop.js';
import { NamedGroup, groupName } from '../src/tls/suites.js';
import type { HandshakeObservation } from '../src/tls/observe.js';
import { createRegistry, defineMetrics, subscribeMetrics } from '../src/metrics/index.js';

// The proxy's metrics, fed by the handshake channel as in `hsmproxy serve`.
const registry = createRegistry();
t.teardown(subscribeMetrics(defineMetrics(registry)));
const seen: HandshakeObservation[] = [];
const srv = await startInteropServer({ onHandshake: (o) => seen.push(o) });
t.teardown(() => srv.close());
const banner = { waitFor: /hello \S+ resumed=\w+\n/ };
const base = ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-servername', 'localhost', '-CAfile', srv.caFile, '-brief'];

/** The group of the last successful handshake the server saw. */
const lastGroup = (): string => [...seen].reverse().find((o) => o.result === 'ok')?.group ?? '';

const TLS13: Array<[string, number]> = [
  ['X25519', NamedGroup.x25519], ['P-256', NamedGroup.secp256r1], ['X448', NamedGroup.x448], ['P-384', NamedGroup.secp384r1],
  ['P-521', NamedGroup.secp521r1], ['ffdhe2048', NamedGroup.ffdhe2048], ['ffdhe3072', NamedGroup.ffdhe3072], ['ffdhe4096', NamedGroup.ffdhe4096],
];

t.test('openssl s_client -tls1_3 -groups G, for each group', async (t) => {
  for (const [name, group] of TLS13) {
    const r = await runClient('openssl', [...base, '-tls1_3', '-groups', name], banner);
    t.match(r.stdout, /hello TLS_AES_128_GCM_SHA256 resumed=false/, `${name}: application data arrives`);
    t.match(r.stderr, 'Verification: OK');
    t.equal(lastGroup(), groupName(group), `${name}: the server negotiated ${groupName(group)}`);
  }
});

t.test('openssl s_client -tls1_3 HelloRetryRequest to each group (first listed group unsupported)', async (t) => {
  for (const [name, group] of TLS13) {
    const r = await runClient('openssl', [...base.filter((a) => a !== '-brief'), '-msg', '-tls1_3', '-groups', `ffdhe8192:${name}`], banner);
    t.equal(r.stdout.match(/>>> .*ClientHello/g)?.length, 2, `${name}: the client sent a second ClientHello`);
    t.equal(lastGroup(), groupName(group), `${name} after HRR`);
  }
});

t.test('openssl s_client -tls1_2 -groups G, for each ECDHE group (ffdhe and hybrids are TLS 1.3 only)', async (t) => {
  for (const [name, group] of TLS13.slice(0, 5)) {
    const r = await runClient('openssl', [...base, '-tls1_2', '-groups', name], banner);
    t.match(r.stdout, /hello ECDHE-\S+ resumed=false/, `${name}: TLS 1.2 application data arrives`);
    t.equal(lastGroup(), groupName(group), `${name} over TLS 1.2`);
  }
  const r = await runClient('openssl', [...base, '-tls1_2', '-groups', 'ffdhe2048'], { waitFor: /alert|error/ });
  t.match(r.stderr + r.stdout, /handshake failure/, 'a TLS 1.2 client offering only ffdhe2048 gets handshake_failure');
});

t.test('gnutls-cli --priority GROUP-*, TLS 1.3 and 1.2', async (t) => {
  const cases: Array<[string, string, number]> = [
    ['TLS1.3', 'GROUP-X448', NamedGroup.x448], ['TLS1.3', 'GROUP-SECP521R1', NamedGroup.secp521r1],
    ['TLS1.3', 'GROUP-FFDHE2048', NamedGroup.ffdhe2048], ['TLS1.3', 'GROUP-FFDHE3072', NamedGroup.ffdhe3072],
    ['TLS1.3', 'GROUP-FFDHE4096', NamedGroup.ffdhe4096], ['TLS1.2', 'GROUP-X448', NamedGroup.x448],
    ['TLS1.2', 'GROUP-SECP521R1', NamedGroup.secp521r1],
  ];
  for (const [version, prio, group] of cases) {
    const priority = `NORMAL:-VERS-ALL:+VERS-${version}:-GROUP-ALL:+${prio}`;
    const r = await runClient('gnutls-cli', [
      '--x509cafile', srv.caFile, '--port', String(srv.port), '--sni-hostname', 'localhost', '--verify-hostname', 'localhost',
      '--priority', priority, '127.0.0.1',
    ], { waitFor: /hello \S+ resumed/, steps: [[50, 'ping\n'], [400, '']] });
    t.match(r.stdout, /hello \S+ resumed=false/, `${version} ${prio}: application data arrives (${r.stderr.slice(-200)})`);
    t.equal(lastGroup(), groupName(group), `${version} ${prio}`);
  }
});

t.test('handshake metrics count by group', async (t) => {
  const text = await registry.metrics();
  const count = (group: string): number => text.split('\n')
    .filter((l) => l.startsWith('hsmproxy_tls_handshakes_total{') && l.includes('result="ok"') && l.includes(`group="${group}"`))
    .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
  for (const [name, group] of TLS13) {
    const want = seen.filter((o) => o.result === 'ok' && o.group === groupName(group)).length;
    t.ok(want >= 2, `${name}: several handshakes above`);
    t.equal(count(groupName(group)), want, `hsmproxy_tls_handshakes_total{group="${groupName(group)}"} counts them`);
  }
  t.match(text, /hsmproxy_tls_handshake_duration_seconds_count\{[^}]*group="ffdhe4096"[^}]*\} [1-9]/, 'duration by group');
});

t.test('an unknown server name: the first certificate by default, unrecognized_name with sni: strict', async (t) => {
  const r = await runClient('openssl', [...base.filter((a) => a !== 'localhost' && a !== '-servername'), '-servername', 'nope.test'], banner);
  t.match(r.stdout, /hello TLS_AES_128_GCM_SHA256/, 'served');
  const strict = await startInteropServer({ sni: 'strict' });
  t.teardown(() => strict.close());
  const s = await runClient('openssl', ['s_client', '-connect', `127.0.0.1:${strict.port}`, '-servername', 'nope.test'], { waitFor: /alert|error/ });
  t.match(s.stderr + s.stdout, /unrecognized name/);
});
