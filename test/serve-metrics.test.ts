// `/metrics` of `hsmproxy serve` after real traffic (node's TLS client through the proxy to an
// upstream, the keys in the embedded cluster): the handshake and HSM latency histograms are
// non-zero and carry the documented labels — handshake duration by version, key type and
// resumption; signature wait; HSM round trip by operation, mechanism and HSM; HSM-side queue
// wait and service time. Loopback, ephemeral ports, a bounded number of connections.
import t from 'tap';
import type tls from 'node:tls';
import { startDemoUpstream } from '../src/proxy/index.js';
import { connectTls, devCa, prepareServeDir, serveYaml, startServe } from './helpers/serve-fixture.js';

const d = await prepareServeDir();
t.teardown(() => d.cleanup());
const upstream = await startDemoUpstream();
t.teardown(() => upstream.close());
const ca = await devCa(d);

/** One GET on a new connection; resolves with the status and the TLS session to resume with. */
async function get(port: number, opts: tls.ConnectionOptions = {}): Promise<{ status: number; session?: Buffer; resumed: boolean }> {
  const s = await connectTls(port, ca, opts);
  let session: Buffer | undefined;
  s.on('session', (b: Buffer) => { session = b; });
  return new Promise((resolve, reject) => {
    let buf = '';
    const resumed = s.isSessionReused();
    s.setEncoding('utf8').on('data', (c: string) => { buf += c; });
    s.once('end', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(buf)?.[1] ?? 0), ...(session ? { session } : {}), resumed }));
    s.once('error', reject);
    s.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
  });
}

interface Sample { labels: Record<string, string>; value: number }

/** Every sample of `name` in Prometheus text, with its labels parsed. */
function samples(text: string, name: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)) labels[k!] = v!;
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

const total = (xs: Sample[], where: Record<string, string | RegExp> = {}) => xs
  .filter((s) => Object.entries(where).every(([k, v]) => (typeof v === 'string' ? s.labels[k] === v : v.test(s.labels[k] ?? ''))))
  .reduce((a, s) => a + s.value, 0);

t.test('/metrics after traffic: non-zero handshake and HSM latency histograms with the documented labels', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url));
  t.teardown(() => s.stop());

  // Full handshakes on the ECDSA certificate, one on RSA (a client that verifies RSA-PSS only), one resumed.
  let ticket: Buffer | undefined;
  for (let i = 0; i < 3; i++) {
    const r = await get(s.port);
    t.equal(r.status, 200);
    ticket = r.session ?? ticket;
  }
  t.equal((await get(s.port, { sigalgs: 'rsa_pss_rsae_sha256' })).status, 200);
  t.ok(ticket, 'the proxy issued a session ticket');
  const again = await get(s.port, { session: ticket! });
  t.equal(again.status, 200);
  t.ok(again.resumed, 'the last connection resumed');

  const text = await fetch(`http://127.0.0.1:${s.admin}/metrics`).then((r) => r.text());
  const hs = (suffix: string) => samples(text, `hsmproxy_tls_handshake_duration_seconds${suffix}`);
  t.ok(total(hs('_count'), { version: 'TLSv1.3', key_type: 'ec', resumed: 'false' }) >= 3, 'full ECDSA handshakes by version, key type and resumed');
  t.ok(total(hs('_count'), { version: 'TLSv1.3', key_type: 'rsa', resumed: 'false' }) >= 1, 'a full RSA handshake');
  t.ok(total(hs('_count'), { version: 'TLSv1.3', resumed: 'true' }) >= 1, 'a resumed handshake');
  t.ok(total(hs('_sum'), { key_type: 'ec' }) > 0, 'non-zero handshake duration');
  const resumed = hs('_count').find((x) => x.labels.resumed === 'true');
  t.match(resumed?.labels, { version: 'TLSv1.3', key_type: /^(ec|rsa|none)$/ }, 'a resumed handshake carries version and key type labels too');
  t.ok(hs('_bucket').some((b) => Number(b.labels.le) === 0.00005), 'buckets resolve from 50 µs');
  t.ok(hs('_bucket').some((b) => Number(b.labels.le) > 5), 'buckets reach past 5 s');

  const wait = (suffix: string) => samples(text, `hsmproxy_tls_handshake_sign_wait_seconds${suffix}`);
  t.ok(total(wait('_count'), { version: 'TLSv1.3', key_type: 'ec' }) >= 3, 'signature wait of the ECDSA handshakes');
  t.ok(total(wait('_count'), { version: 'TLSv1.3', key_type: 'rsa' }) >= 1, 'signature wait of the RSA handshake');
  t.ok(total(wait('_sum'), {}) > 0, 'non-zero signature wait');

  const hsmSign = { op: 'sign', hsm: /^hsm-[12]$/ };
  const rtt = (suffix: string) => samples(text, `hsmproxy_hsm_request_duration_seconds${suffix}`);
  t.ok(total(rtt('_count'), { ...hsmSign, mechanism: /^ecdsa/ }) >= 3, 'HSM sign round trips by operation, ECDSA mechanism and HSM');
  t.ok(total(rtt('_count'), { ...hsmSign, mechanism: /^rsa/ }) >= 1, 'HSM sign round trips with an RSA mechanism');
  t.ok(total(rtt('_sum'), hsmSign) > 0, 'non-zero HSM round trip');
  const queue = (suffix: string) => samples(text, `hsmproxy_hsm_queue_wait_seconds${suffix}`);
  t.ok(total(queue('_count'), hsmSign) >= 4, 'HSM-side queue wait of every sign, by operation and HSM');
  const service = (suffix: string) => samples(text, `hsmproxy_hsm_service_seconds${suffix}`);
  t.ok(total(service('_count'), { ...hsmSign, mechanism: /^(ecdsa|rsa)/ }) >= 4, 'HSM service time by operation, mechanism and HSM');
  t.ok(total(service('_sum'), hsmSign) > 0, 'non-zero service time');
  t.ok(total(samples(text, 'hsmproxy_tls_handshakes_total'), { result: 'ok', listener: 'main' }) >= 5, 'handshakes by result and listener');
});
