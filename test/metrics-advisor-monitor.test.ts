// The advisor's inputs: sliding windows (quantiles, expiry), the monitor fed by the diagnostics
// channels the HSM client and TLS server publish on, and the gauges the scaling service sets.
import { channel } from 'node:diagnostics_channel';
import t from 'tap';
import { CHANNELS, ADVISOR_DEFAULTS, createRegistry, defineMetrics, ScalingMonitor, ScalingService, subscribeMetrics } from '../src/metrics/index.js';
import { CountWindow, LatencyWindow } from '../src/metrics/window.js';

t.test('a latency window reports quantiles within 5% of the true value', async (t) => {
  const w = new LatencyWindow(60_000);
  for (let i = 1; i <= 1000; i++) w.record(i / 10, 5_000); // 0.1 .. 100 ms
  t.equal(w.count(5_000), 1000);
  const p50 = w.quantile(0.5, 5_000)!;
  const p99 = w.quantile(0.99, 5_000)!;
  t.ok(p50 >= 50 && p50 <= 52.5, `p50 ${p50}`);
  t.ok(p99 >= 99 && p99 <= 104, `p99 ${p99}`);
});

t.test('samples leave the window once they are older than its span', async (t) => {
  const w = new LatencyWindow(10_000);
  w.record(500, 0);
  for (let s = 1; s <= 9; s++) w.record(5, s * 1000);
  t.ok(w.quantile(1, 9_500)! >= 500, 'the slow sample is still inside at 9.5 s');
  t.ok(w.quantile(1, 10_500)! < 6, 'and gone after 10 s');
  t.equal(w.quantile(0.5, 100_000), undefined, 'an empty window has no quantile');
});

t.test('a shorter span reads only the most recent part of a window', async (t) => {
  const w = new LatencyWindow(300_000);
  for (let s = 0; s < 240; s++) w.record(100, s * 1000);
  for (let s = 240; s < 300; s++) w.record(2, s * 1000);
  t.ok(w.quantile(0.99, 299_000, 60_000)! < 3, 'the last minute is fast');
  t.ok(w.quantile(0.99, 299_000)! >= 100, 'the 5 minutes are not');
  const c = new CountWindow(300_000);
  c.add(0, 5);
  c.add(250_000, 2);
  t.equal(c.total(260_000), 7);
  t.equal(c.total(260_000, 60_000), 2);
});

t.test('the monitor turns HSM request, HSM state and handshake events into advisor stats', async (t) => {
  let now = 50_000;
  const m = new ScalingMonitor({ windowMs: 10_000, now: () => now });
  t.teardown(() => m.close());
  const req = channel(CHANNELS.hsmRequest);
  const state = channel(CHANNELS.hsmState);
  const hs = channel(CHANNELS.tlsHandshake);
  for (let i = 0; i < 100; i++) req.publish({ op: 'sign', mechanism: 'ecdsa-sha256', hsm: 'hsm-1', rttMs: i < 98 ? 4 : 80, queueWaitMs: 1, serviceMs: 3, outcome: 'ok' });
  req.publish({ op: 'sign', mechanism: 'ecdsa-sha256', hsm: 'hsm-1', rttMs: 1, queueWaitMs: 0, serviceMs: 0, outcome: 'HSM_ERR_BUSY' });
  req.publish({ op: 'info', mechanism: '', hsm: 'hsm-1', rttMs: 900, queueWaitMs: 0, serviceMs: 0, outcome: 'ok' });
  state.publish({ hsm: 'hsm-1', address: '127.0.0.1:1', up: true, inFlight: 2, utilisation: 0.6, keysToken: 30, keysSession: 5, keysMax: 3500 });
  state.publish({ hsm: 'hsm-2', address: '127.0.0.1:2', up: false, inFlight: 0 });
  for (let i = 0; i < 10; i++) hs.publish({ version: 'TLSv1.3', suite: '', group: '', keyType: 'ec', resumed: i < 4, result: 'ok', durationMs: 5, signWaitMs: 4 });
  hs.publish({ version: 'TLSv1.3', suite: '', group: '', keyType: 'ec', resumed: false, result: 'alert_sent', durationMs: 5, signWaitMs: 0 });
  now += 500;
  const s = m.stats();
  t.equal(s.signs, 100, 'only successful signs count toward latency');
  t.ok(s.signP50Ms! >= 4 && s.signP50Ms! < 4.3, `p50 ${s.signP50Ms}`);
  t.ok(s.signP99Ms! >= 80, `p99 ${s.signP99Ms} sees the slow tail`);
  t.equal(s.busyRejections, 1);
  t.equal(s.handshakesPerSec, 1, '10 good handshakes over a 10 s window');
  t.equal(s.resumedShare, 0.4);
  t.same(s.hsms, [
    { hsm: 'hsm-1', up: true, utilisation: 0.6, keysOccupied: 35, keysMax: 3500 },
    { hsm: 'hsm-2', up: false },
  ]);
  now += 20_000;
  t.same(m.stats().hsms, [], 'HSMs that stopped reporting are forgotten');
});

t.test('a malformed event is dropped without throwing into the emitter', async (t) => {
  const m = new ScalingMonitor({ windowMs: 10_000 });
  t.teardown(() => m.close());
  t.doesNotThrow(() => channel(CHANNELS.hsmRequest).publish({ op: 'sign', outcome: 'ok', rttMs: 'slow' }));
  t.doesNotThrow(() => channel(CHANNELS.hsmState).publish(null));
});

t.test('with a members source, the cluster client decides which HSMs exist and which are in rotation', async (t) => {
  const m = new ScalingMonitor({ members: () => [{ hsm: 'hsm-1', inRotation: true }, { hsm: 'hsm-3', inRotation: false }] });
  t.teardown(() => m.close());
  m.onState({ hsm: 'hsm-1', address: 'a', up: true, inFlight: 0, utilisation: 0.2 });
  m.onState({ hsm: 'hsm-9', address: 'b', up: true, inFlight: 0, utilisation: 0.9 });
  t.same(m.stats().hsms, [{ hsm: 'hsm-1', up: true, utilisation: 0.2 }, { hsm: 'hsm-3', up: false }]);
});

t.test('the scaling service publishes the recommendation, HSM count, utilisation and windowed p99 as gauges', async (t) => {
  const registry = createRegistry();
  const metrics = defineMetrics(registry);
  let members = [{ hsm: 'hsm-1', inRotation: true }, { hsm: 'hsm-2', inRotation: true }];
  const m = new ScalingMonitor({ windowMs: 60_000, members: () => members });
  t.teardown(() => m.close());
  m.onState({ hsm: 'hsm-1', address: 'a', up: true, inFlight: 0, utilisation: 0.25 });
  m.onState({ hsm: 'hsm-2', address: 'b', up: true, inFlight: 0, utilisation: 0.5 });
  for (let i = 0; i < 50; i++) m.onRequest({ op: 'sign', mechanism: 'ecdsa-sha256', hsm: 'hsm-1', rttMs: 10, queueWaitMs: 2, serviceMs: 8, outcome: 'ok' });
  const service = new ScalingService({ monitor: m, config: { ...ADVISOR_DEFAULTS, min: 3 }, metrics });
  const r = service.evaluate();
  t.equal(r.action, 'add', 'below min 3');
  let text = await registry.metrics();
  t.match(text, /^hsmproxy_cluster_recommended_hsms 3$/m);
  t.match(text, /^hsmproxy_cluster_hsms 2$/m);
  t.match(text, /^hsmproxy_cluster_utilisation\{hsm="hsm-2"\} 0\.5$/m);
  t.match(text, /^hsmproxy_cluster_sign_latency_p99_seconds\{window="1m"\} 0\.01\d*$/m);
  t.match(text, /^hsmproxy_cluster_queue_wait_p99_seconds\{window="5m"\} 0\.002\d*$/m);
  members = [{ hsm: 'hsm-1', inRotation: true }];
  service.evaluate();
  text = await registry.metrics();
  t.notMatch(text, /hsmproxy_cluster_utilisation\{hsm="hsm-2"\}/, 'a removed HSM leaves the utilisation gauge');
  const report = service.report();
  t.equal(report.recommendation.currentHsms, 1);
  t.equal(report.windows['1m'].signs, 50);
  t.equal(report.autoscale, false);
});

t.test('/scaling agrees with itself: a sign answered after the last periodic evaluation is in the stats, the reason and the windows', async (t) => {
  let now = 5_000_000;
  const m = new ScalingMonitor({ windowMs: 60_000, now: () => now, members: () => [{ hsm: 'hsm-1', inRotation: true }, { hsm: 'hsm-2', inRotation: true }] });
  t.teardown(() => m.close());
  const service = new ScalingService({ monitor: m, config: ADVISOR_DEFAULTS });
  service.evaluate(); // the periodic evaluation, before any traffic
  now += 400;
  m.onRequest({ op: 'sign', mechanism: 'ecdsa-sha256', hsm: 'hsm-1', rttMs: 1.5, queueWaitMs: 0.1, serviceMs: 1, outcome: 'ok' });
  const report = service.report();
  t.equal(report.windows['1m'].signs, 1);
  t.equal(report.stats.signs, 1, 'stats count the same sign as the 1 min window');
  t.match(report.recommendation.reason, /\(1 in 1 min\)/, 'and so does the reason');
  t.equal(report.stats.atMs, now);
  t.equal(report.recommendation.atMs, now);
});

t.test('autoscale actions published on hsmproxy:hsm:scaling are counted by action and result', async (t) => {
  const registry = createRegistry();
  const off = subscribeMetrics(defineMetrics(registry));
  t.teardown(off);
  const ch = channel(CHANNELS.hsmScaling);
  ch.publish({ action: 'add', hsm: 'hsm-3', result: 'ok', reason: 'x', durationMs: 900, hsms: 3 });
  ch.publish({ action: 'remove', hsm: 'hsm-3', result: 'failed', reason: 'y', durationMs: 10, hsms: 3, error: 'still busy' });
  const text = await registry.metrics();
  t.match(text, /hsmproxy_cluster_scaling_actions_total\{action="add",result="ok"\} 1/);
  t.match(text, /hsmproxy_cluster_scaling_actions_total\{action="remove",result="failed"\} 1/);
});
