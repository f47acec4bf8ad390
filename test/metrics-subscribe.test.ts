// Events published on the diagnostics channels of the contract show up as hsmproxy_ metrics.
import t, { type Test } from 'tap';
import { channel } from 'node:diagnostics_channel';
import { createRegistry, defineMetrics, LATENCY_BUCKETS, subscribeMetrics } from '../src/metrics/index.js';

// Channel names written out literally: the test checks the contract, not our constant.
function setup(t: Test) {
  const registry = createRegistry();
  const unsubscribe = subscribeMetrics(defineMetrics(registry));
  t.teardown(unsubscribe);
  return registry;
}

function sampleValue(text: string, metric: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(metric + '{') && !line.startsWith(metric + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.split(' ').pop());
  }
  return undefined;
}

t.test('buckets resolve 50 µs to 5 s', async (t) => {
  t.equal(LATENCY_BUCKETS[0], 0.00005);
  t.ok(LATENCY_BUCKETS[LATENCY_BUCKETS.length - 1]! >= 5);
  t.ok(LATENCY_BUCKETS.every((b, i) => i === 0 || b > LATENCY_BUCKETS[i - 1]!), 'strictly increasing');
});

t.test('a handshake event feeds the duration, sign-wait and result metrics', async (t) => {
  const registry = setup(t);
  channel('hsmproxy:tls:handshake').publish({ version: 'TLSv1.3', suite: 'TLS_AES_128_GCM_SHA256', group: 'x25519', keyType: 'ec', resumed: false, result: 'ok', durationMs: 3, signWaitMs: 1.5, listener: 'default' });
  const text = await registry.metrics();
  t.equal(sampleValue(text, 'hsmproxy_tls_handshake_duration_seconds_count', { version: 'TLSv1.3', key_type: 'ec', resumed: 'false' }), 1);
  t.equal(sampleValue(text, 'hsmproxy_tls_handshake_duration_seconds_sum', { version: 'TLSv1.3', key_type: 'ec' }), 0.003);
  t.equal(sampleValue(text, 'hsmproxy_tls_handshake_sign_wait_seconds_sum', { version: 'TLSv1.3', key_type: 'ec' }), 0.0015);
  t.equal(sampleValue(text, 'hsmproxy_tls_handshakes_total', { result: 'ok', listener: 'default' }), 1);
});

t.test('a failed handshake counts by result and alert but adds no duration', async (t) => {
  const registry = setup(t);
  channel('hsmproxy:tls:handshake').publish({ version: 'TLSv1.3', suite: '', group: '', keyType: '', resumed: false, result: 'alert_sent', alert: 'handshake_failure', durationMs: 1, signWaitMs: 0 });
  const text = await registry.metrics();
  t.equal(sampleValue(text, 'hsmproxy_tls_handshakes_total', { result: 'alert_sent', alert: 'handshake_failure' }), 1);
  t.equal(sampleValue(text, 'hsmproxy_tls_handshake_duration_seconds_count', {}), undefined);
});

t.test('an HSM request event feeds round-trip, queue wait and service time by op, mechanism and hsm', async (t) => {
  const registry = setup(t);
  channel('hsmproxy:hsm:request').publish({ op: 'sign', mechanism: 'ecdsa-sha256', hsm: 'hsm-1', rttMs: 0.4, queueWaitMs: 0.1, serviceMs: 0.2, outcome: 'ok' });
  const text = await registry.metrics();
  t.equal(sampleValue(text, 'hsmproxy_hsm_request_duration_seconds_count', { op: 'sign', mechanism: 'ecdsa-sha256', hsm: 'hsm-1' }), 1);
  t.equal(sampleValue(text, 'hsmproxy_hsm_request_duration_seconds_bucket', { le: '0.0002', hsm: 'hsm-1' }), 0, 'not in the 200 µs bucket');
  t.equal(sampleValue(text, 'hsmproxy_hsm_request_duration_seconds_bucket', { le: '0.0004', hsm: 'hsm-1' }), 1, 'in the 400 µs bucket');
  t.equal(sampleValue(text, 'hsmproxy_hsm_queue_wait_seconds_sum', { op: 'sign', hsm: 'hsm-1' }), 0.0001);
  t.equal(sampleValue(text, 'hsmproxy_hsm_service_seconds_sum', { mechanism: 'ecdsa-sha256', hsm: 'hsm-1' }), 0.0002);
});

t.test('a failed HSM request counts as an error by code', async (t) => {
  const registry = setup(t);
  channel('hsmproxy:hsm:request').publish({ op: 'sign', mechanism: 'rsa-pss-sha256', hsm: 'hsm-2', rttMs: 5, queueWaitMs: 0, serviceMs: 0, outcome: 'HSM_ERR_BUSY' });
  const text = await registry.metrics();
  t.equal(sampleValue(text, 'hsmproxy_hsm_errors_total', { hsm: 'hsm-2', code: 'HSM_ERR_BUSY' }), 1);
  t.equal(sampleValue(text, 'hsmproxy_hsm_requests_total', { hsm: 'hsm-2', outcome: 'HSM_ERR_BUSY' }), 1);
});

t.test('an HSM state event sets up, in-flight, keys and the key limit', async (t) => {
  const registry = setup(t);
  const state = channel('hsmproxy:hsm:state');
  state.publish({ hsm: 'hsm-1', address: '127.0.0.1:1', up: true, inFlight: 7, keysToken: 12, keysSession: 3, utilisation: 0.25 });
  let text = await registry.metrics();
  t.equal(sampleValue(text, 'hsmproxy_hsm_up', { hsm: 'hsm-1' }), 1);
  t.equal(sampleValue(text, 'hsmproxy_hsm_in_flight', { hsm: 'hsm-1' }), 7);
  t.equal(sampleValue(text, 'hsmproxy_hsm_keys', { hsm: 'hsm-1', kind: 'token' }), 12);
  t.equal(sampleValue(text, 'hsmproxy_hsm_keys', { hsm: 'hsm-1', kind: 'session' }), 3);
  t.equal(sampleValue(text, 'hsmproxy_hsm_keys_max', { hsm: 'hsm-1' }), 3500);
  t.equal(sampleValue(text, 'hsmproxy_hsm_utilisation_ratio', { hsm: 'hsm-1' }), 0.25);
  state.publish({ hsm: 'hsm-1', address: '127.0.0.1:1', up: false, inFlight: 0 });
  text = await registry.metrics();
  t.equal(sampleValue(text, 'hsmproxy_hsm_up', { hsm: 'hsm-1' }), 0, 'goes to 0 when the HSM is down');
});

t.test('an engine sign event counts signatures by backend and outcome', async (t) => {
  const registry = setup(t);
  channel('hsmproxy:engine:sign').publish({ backend: 'sim', keyType: 'rsa', scheme: 0x0804, durationMs: 2, outcome: 'ok' });
  const text = await registry.metrics();
  t.equal(sampleValue(text, 'hsmproxy_engine_signs_total', { backend: 'sim', key_type: 'rsa', outcome: 'ok' }), 1);
  t.equal(sampleValue(text, 'hsmproxy_engine_sign_duration_seconds_count', { backend: 'sim' }), 1);
});

t.test('a malformed event does not throw into the publisher', async (t) => {
  setup(t);
  t.doesNotThrow(() => channel('hsmproxy:hsm:state').publish({ hsm: { nested: true } }));
  t.doesNotThrow(() => channel('hsmproxy:tls:handshake').publish('not an object'));
});

t.test('after unsubscribing, events no longer change metrics', async (t) => {
  const registry = createRegistry();
  subscribeMetrics(defineMetrics(registry))();
  channel('hsmproxy:engine:sign').publish({ backend: 'soft', keyType: 'ec', scheme: 0x0403, durationMs: 1, outcome: 'ok' });
  t.equal(sampleValue(await registry.metrics(), 'hsmproxy_engine_signs_total', {}), undefined);
});

t.test('defining metrics twice on one registry returns the same handles', async (t) => {
  const registry = createRegistry();
  t.equal(defineMetrics(registry), defineMetrics(registry));
});
