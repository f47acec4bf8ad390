// The admin server: /healthz, /readyz, and /metrics reflecting proxied traffic and published events.
import t from 'tap';
import { channel } from 'node:diagnostics_channel';
import { baseYaml, startHarness, type Harness } from './helpers/proxy-harness.js';

function sample(text: string, metric: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(metric + '{')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.split(' ').pop());
  }
  return undefined;
}

const admin = (h: Harness, path: string) => fetch(`http://127.0.0.1:${h.proxy.adminAddress()!.port}${path}`);

t.test('/healthz answers 200 while the process is up', async (t) => {
  const h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]'));
  const r = await admin(h, '/healthz');
  t.equal(r.status, 200);
  t.equal(await r.text(), 'ok\n');
});

t.test('/readyz reports the readiness callback, with reasons when not ready', async (t) => {
  let hsmUp = false;
  const h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]'), {
    proxy: { readiness: () => ({ ready: hsmUp, reasons: hsmUp ? [] : ['no HSM holding the listener keys is up'] }) },
  });
  let r = await admin(h, '/readyz');
  t.equal(r.status, 503);
  t.same(await r.json(), { ready: false, reasons: ['no HSM holding the listener keys is up'] });
  hsmUp = true;
  r = await admin(h, '/readyz');
  t.equal(r.status, 200);
  t.same(await r.json(), { ready: true, reasons: [] });
});

t.test('an unknown admin path is a 404 naming the endpoints', async (t) => {
  const h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]'));
  const r = await admin(h, '/nope');
  t.equal(r.status, 404);
  t.match(await r.text(), /\/metrics, \/healthz or \/readyz/);
});

t.test('/metrics after traffic shows HTTP request and upstream latency with their labels', async (t) => {
  const h = await startHarness(t, baseYaml('  - { name: app, upstream: [ "{{up0}}" ] }'));
  for (let i = 0; i < 3; i++) t.equal((await h.curl('/')).status, 200);
  t.equal((await h.curl('/', ['-X', 'POST', '-d', 'x'])).status, 200);
  const r = await admin(h, '/metrics');
  t.match(r.headers.get('content-type'), /text\/plain/);
  const text = await r.text();
  t.equal(sample(text, 'hsmproxy_http_request_duration_seconds_count', { method: 'GET', status_class: '2xx', route: 'app' }), 3);
  t.equal(sample(text, 'hsmproxy_http_request_duration_seconds_count', { method: 'POST', status_class: '2xx', route: 'app' }), 1);
  t.ok(sample(text, 'hsmproxy_http_request_duration_seconds_sum', { method: 'GET', route: 'app' })! > 0, 'non-zero latency sum');
  t.equal(sample(text, 'hsmproxy_http_upstream_duration_seconds_count', { route: 'app', upstream: h.upstreams[0]!.url }), 4);
  t.equal(sample(text, 'hsmproxy_http_request_duration_seconds_bucket', { method: 'GET', le: '3.2768' }), 3, 'buckets reach seconds');
  t.equal(sample(text, 'hsmproxy_http_request_duration_seconds_bucket', { method: 'GET', le: '0.00005' }), 0, 'and start at 50 µs');
});

t.test('/metrics after real handshakes (node:tls front) shows handshake duration and results', async (t) => {
  const h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]').replace('port: 0\n', "port: 0\n    minVersion: '1.3'\n"));
  for (let i = 0; i < 2; i++) t.equal((await h.curl('/')).status, 200);
  await h.curl('/', ['--tls-max', '1.2']); // the listener is TLS 1.3 only: a failed handshake
  const text = await (await admin(h, '/metrics')).text();
  t.equal(sample(text, 'hsmproxy_tls_handshake_duration_seconds_count', { version: 'TLSv1.3', key_type: 'ec', resumed: 'false' }), 2);
  t.ok(sample(text, 'hsmproxy_tls_handshake_duration_seconds_sum', { key_type: 'ec' })! > 0, 'non-zero duration');
  t.equal(sample(text, 'hsmproxy_tls_handshakes_total', { result: 'ok', listener: 'main' }), 2);
  t.equal(sample(text, 'hsmproxy_tls_handshakes_total', { result: 'alert_sent', listener: 'main' }), 1);
});

t.test('/metrics counts proxy-generated errors by class and reason', async (t) => {
  const h = await startHarness(t, baseYaml('  - { name: dead, upstream: [ "http://127.0.0.1:9" ] }'));
  t.equal((await h.curl('/')).status, 502);
  const text = await (await admin(h, '/metrics')).text();
  t.equal(sample(text, 'hsmproxy_http_request_duration_seconds_count', { status_class: '5xx', route: 'dead' }), 1);
  t.equal(sample(text, 'hsmproxy_http_upstream_errors_total', { route: 'dead', reason: 'refused' }), 1);
});

t.test('published TLS handshake and HSM events show up on /metrics', async (t) => {
  const h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]'));
  channel('hsmproxy:tls:handshake').publish({ version: 'TLSv1.3', suite: 'TLS_AES_128_GCM_SHA256', group: 'x25519', keyType: 'rsa', resumed: false, result: 'ok', durationMs: 4.2, signWaitMs: 2.1, listener: 'main' });
  channel('hsmproxy:hsm:request').publish({ op: 'sign', mechanism: 'rsa-pss-sha256', hsm: 'hsm-0', rttMs: 1.9, queueWaitMs: 0.3, serviceMs: 1.2, outcome: 'ok' });
  channel('hsmproxy:hsm:state').publish({ hsm: 'hsm-0', address: '127.0.0.1:2225', up: true, inFlight: 1, keysToken: 4, keysSession: 0 });
  const text = await (await admin(h, '/metrics')).text();
  t.equal(sample(text, 'hsmproxy_tls_handshake_duration_seconds_count', { version: 'TLSv1.3', key_type: 'rsa', resumed: 'false' }), 1);
  t.ok(Math.abs(sample(text, 'hsmproxy_tls_handshake_sign_wait_seconds_sum', { key_type: 'rsa' })! - 0.0021) < 1e-9, 'sign wait recorded');
  t.equal(sample(text, 'hsmproxy_tls_handshakes_total', { result: 'ok', listener: 'main' }), 1);
  t.equal(sample(text, 'hsmproxy_hsm_request_duration_seconds_count', { op: 'sign', mechanism: 'rsa-pss-sha256', hsm: 'hsm-0' }), 1);
  t.equal(sample(text, 'hsmproxy_hsm_up', { hsm: 'hsm-0' }), 1);
  t.equal(sample(text, 'hsmproxy_hsm_keys', { hsm: 'hsm-0', kind: 'token' }), 4);
});

t.test('after shutdown the proxy no longer records published events', async (t) => {
  const h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]'));
  await h.proxy.shutdown(100);
  channel('hsmproxy:engine:sign').publish({ backend: 'soft', keyType: 'ec', scheme: 0x0403, durationMs: 1, outcome: 'ok' });
  t.equal(sample(await h.registry.metrics(), 'hsmproxy_engine_signs_total', {}), undefined);
});

t.test('/metrics shows open connections and requests in flight while a request is pending', async (t) => {
  const h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]'));
  const gauge = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  const slow = h.curl('/slow?ms=1000');
  await new Promise((r) => setTimeout(r, 300));
  let text = await (await admin(h, '/metrics')).text();
  t.equal(gauge(text, 'hsmproxy_http_requests_in_flight'), 1);
  t.equal(gauge(text, 'hsmproxy_http_connections'), 1);
  t.equal((await slow).status, 200);
  await new Promise((r) => setTimeout(r, 50));
  text = await (await admin(h, '/metrics')).text();
  t.equal(gauge(text, 'hsmproxy_http_requests_in_flight'), 0);
  t.equal(gauge(text, 'hsmproxy_http_connections'), 0, 'curl closed its connection');
});
