// The scaling advisor's core as a specification: when it adds, removes or holds, and why.
import t from 'tap';
import { advise, ADVISOR_DEFAULTS, formatDuration, ScalingAdvisor, type AdvisorConfig, type AdvisorState, type HsmSample, type ScalingStats } from '../src/metrics/advisor.js';

const MIN = 60_000;
const cfg: AdvisorConfig = { ...ADVISOR_DEFAULTS, min: 2, max: 4, sloP99Ms: 20, cooldownMs: 10 * MIN, sustainMs: 5 * MIN, removeSustainMs: 30 * MIN };

function hsms(n: number, utilisation: number, extra: Partial<HsmSample> = {}): HsmSample[] {
  return Array.from({ length: n }, (_, i) => ({ hsm: `hsm-${i + 1}`, up: true, utilisation, keysOccupied: 10, keysMax: 3500, ...extra }));
}

function stats(atMs: number, over: Partial<ScalingStats> = {}): ScalingStats {
  return { atMs, windowMs: MIN, hsms: hsms(2, 0.5), signs: 5000, signP50Ms: 3, signP99Ms: 8, queueP50Ms: 0, queueP99Ms: 2, busyRejections: 0, handshakesPerSec: 80, resumedShare: 0, ...over };
}

// Runs the advisor once a minute over `minutes`, with the same conditions, and returns every answer.
function run(minutes: number, make: (atMs: number) => ScalingStats, c: AdvisorConfig = cfg, start: AdvisorState = {}) {
  let state = start;
  const out = [];
  for (let m = 0; m <= minutes; m++) {
    const r = advise(make(m * MIN), state, c);
    state = r.state;
    out.push(r.recommendation);
  }
  return { recs: out, state };
}

const overloaded = (atMs: number) => stats(atMs, { hsms: hsms(2, 0.91), signP99Ms: 38 });

t.test('latency under the SLO with moderate utilisation holds, saying why', async (t) => {
  const r = advise(stats(0), {}, cfg).recommendation;
  t.equal(r.action, 'hold');
  t.equal(r.count, 0);
  t.equal(r.targetHsms, 2);
  t.match(r.reason, /^hold at 2 HSMs: p99 sign latency 8\.0 ms \(SLO 20 ms\), utilisation 0\.50 on 2 HSMs/);
});

t.test('p99 over the SLO for less than the sustain period holds and says how long it has lasted', async (t) => {
  const { recs } = run(3, overloaded);
  t.ok(recs.every((r) => r.action === 'hold'));
  t.match(recs[3]!.reason, /p99 sign latency 38 ms \(SLO 20 ms\) for 3 min of the 5 min/);
});

t.test('p99 over the SLO sustained for the sustain period adds an HSM with the issue\'s reason', async (t) => {
  const { recs } = run(5, overloaded);
  const r = recs[5]!;
  t.equal(r.action, 'add');
  t.equal(r.count, 1);
  t.equal(r.targetHsms, 3);
  t.equal(r.reason, 'add 1 HSM: p99 sign latency 38 ms (SLO 20 ms) for 5 min, utilisation 0.91 on 2 HSMs');
});

t.test('a single dip under the SLO restarts the sustain clock (no add on noise)', async (t) => {
  // Pressure from minute 0, a good minute at 3, pressure again from 4: the add comes at 4 + 5 = 9.
  const { recs } = run(9, (at) => (at === 3 * MIN ? stats(at) : overloaded(at)));
  t.equal(recs.slice(0, 9).filter((r) => r.action === 'add').length, 0, 'no add before 5 min of uninterrupted pressure');
  t.equal(recs[9]!.action, 'add', '5 min after the dip it adds');
});

t.test('slow signs that do not queue in the HSMs (network, proxy CPU) do not add an HSM, and the reason says so', async (t) => {
  const { recs } = run(10, (at) => stats(at, { hsms: hsms(2, 0.2), signP99Ms: 300, queueP99Ms: 1 }));
  t.ok(recs.every((r) => r.action === 'hold'));
  t.match(recs[10]!.reason, /p99 sign latency 300 ms \(SLO 20 ms\), but HSM queue wait p99 is 1\.0 ms .*another HSM would not help/);
  const idle = run(40, (at) => stats(at, { hsms: hsms(3, 0.05), signP99Ms: 300, queueP99Ms: 1 })).recs;
  t.ok(idle.every((r) => r.action === 'hold'), 'nor remove one while signs are slow');
});

t.test('signs queueing in the HSMs count even before the utilisation figure catches up', async (t) => {
  const { recs } = run(5, (at) => stats(at, { hsms: hsms(2, 0.3), signP99Ms: 90, queueP99Ms: 60 }));
  t.equal(recs[5]!.action, 'add');
});

t.test('too few signs in the window say nothing about latency', async (t) => {
  const { recs } = run(10, (at) => stats(at, { signs: 3, signP99Ms: 500 }));
  t.ok(recs.every((r) => r.action === 'hold'));
  t.match(recs[10]!.reason, /too few signs to judge latency \(3 in 1 min\)/);
});

t.test('busy answers sustained add an HSM even when latency looks fine', async (t) => {
  const { recs } = run(5, (at) => stats(at, { busyRejections: 12, hsms: hsms(2, 0.99) }));
  t.equal(recs[5]!.action, 'add');
  t.match(recs[5]!.reason, /12 busy answers from the HSMs for 5 min/);
});

t.test('a saturated cluster far above target gets several HSMs at once, capped by max', async (t) => {
  const c = { ...cfg, max: 8 };
  const { recs } = run(5, (at) => stats(at, { hsms: hsms(3, 1), signP99Ms: 200 }), c);
  // 3 HSMs fully busy at a 0.7 target need ceil(3 / 0.7) = 5: two more.
  t.equal(recs[5]!.count, 2);
  t.equal(recs[5]!.targetHsms, 5);
  const capped = run(5, (at) => stats(at, { hsms: hsms(3, 1), signP99Ms: 200 }), { ...cfg, max: 4 }).recs[5]!;
  t.equal(capped.count, 1, 'never past max');
});

t.test('at the maximum it holds and says it is at the maximum', async (t) => {
  const { recs } = run(6, (at) => stats(at, { hsms: hsms(4, 0.95), signP99Ms: 50 }));
  t.equal(recs[6]!.action, 'hold');
  t.match(recs[6]!.reason, /^hold at the maximum of 4 HSMs: p99 sign latency 50 ms/);
});

t.test('fewer HSMs than the minimum adds the difference at once', async (t) => {
  const r = advise(stats(0, { hsms: hsms(1, 0.1) }), {}, { ...cfg, min: 3 }).recommendation;
  t.equal(r.action, 'add');
  t.equal(r.count, 2);
  t.equal(r.targetHsms, 3);
  t.equal(r.reason, 'add 2 HSMs: only 1 HSM in the cluster, minimum 3');
});

t.test('keys occupied at 90% of 3,500 on any HSM adds one', async (t) => {
  const list = hsms(2, 0.2);
  list[1] = { ...list[1]!, keysOccupied: 3200 };
  const r = advise(stats(0, { hsms: list }), {}, cfg).recommendation;
  t.equal(r.action, 'add');
  t.equal(r.count, 1);
  t.equal(r.reason, 'add 1 HSM: keys occupied 3200 of 3500 (91%) on hsm-2');
});

t.test('keys just under the high-water mark do not add', async (t) => {
  const r = advise(stats(0, { hsms: hsms(2, 0.2, { keysOccupied: 3149 }) }), {}, cfg).recommendation;
  t.equal(r.action, 'hold');
});

t.test('after the HSM count changes, nothing more is recommended until the cool-down ends', async (t) => {
  // Sustained overload on 2 HSMs; at minute 5 the cluster grows to 3 and is still overloaded.
  let state: AdvisorState = {};
  const at = (m: number, n: number) => {
    const r = advise(stats(m * MIN, { hsms: hsms(n, 0.95), signP99Ms: 40 }), state, cfg);
    state = r.state;
    return r.recommendation;
  };
  for (let m = 0; m < 5; m++) at(m, 2);
  t.equal(at(5, 2).action, 'add');
  // The change is first seen at minute 6: the cool-down runs to minute 16.
  const during = [6, 8, 10, 15].map((m) => at(m, 3));
  t.ok(during.every((r) => r.action === 'hold'), 'holds through the 10 min cool-down');
  t.match(during.at(-1)!.reason, /cooling down for 1 min after the last change/);
  t.equal(at(16, 3).action, 'add', 'once cooled down (and pressure sustained since the change), adds again');
});

t.test('idle below 0.3 for the removal period removes one HSM and says how many remain', async (t) => {
  const { recs } = run(30, (at) => stats(at, { hsms: hsms(4, 0.1), signP99Ms: 3 }));
  t.ok(recs.slice(0, 30).every((r) => r.action === 'hold'), 'holds for 30 min first');
  t.equal(recs[30]!.action, 'remove');
  t.equal(recs[30]!.targetHsms, 3);
  t.equal(recs[30]!.reason, 'remove 1 HSM: utilisation < 0.3 for 30 min and 3 HSMs remain');
});

t.test('never removes below the minimum', async (t) => {
  const { recs } = run(60, (at) => stats(at, { hsms: hsms(2, 0.01), signP99Ms: 1 }));
  t.ok(recs.every((r) => r.action === 'hold'));
  t.match(recs[60]!.reason, /already at the minimum of 2/);
});

t.test('does not remove when the others would be pushed over the target (hysteresis)', async (t) => {
  // 3 HSMs at 0.29 each: removing one leaves 0.87 / 2 = 0.435 — under 0.7, allowed. At 0.29 on
  // a target of 0.4 it would leave 0.435 > 0.4: refused.
  const c = { ...cfg, targetUtilisation: 0.4 };
  const { recs } = run(40, (at) => stats(at, { hsms: hsms(3, 0.29) }), c);
  t.ok(recs.every((r) => r.action === 'hold'));
});

t.test('utilisation between the thresholds never flaps: no add and no remove', async (t) => {
  const { recs } = run(120, (at) => stats(at, { hsms: hsms(3, (at / MIN) % 2 ? 0.35 : 0.6), signP99Ms: 12 }));
  t.ok(recs.every((r) => r.action === 'hold'));
});

t.test('alternating overload and idle minutes never adds or removes', async (t) => {
  const { recs } = run(120, (at) => ((at / MIN) % 2 ? overloaded(at) : stats(at, { hsms: hsms(2, 0.05), signP99Ms: 2 })));
  t.ok(recs.every((r) => r.action === 'hold'));
});

t.test('an HSM out of rotation for the sustain period, leaving fewer than min, adds one', async (t) => {
  const list = hsms(2, 0.4);
  list[1] = { ...list[1]!, up: false };
  const { recs } = run(5, (at) => stats(at, { hsms: list }));
  t.equal(recs[4]!.action, 'hold', 'a restart is given time');
  t.equal(recs[5]!.action, 'add');
  t.match(recs[5]!.reason, /only 1 of 2 HSMs in rotation for 5 min, minimum 2/);
});

t.test('ScalingAdvisor keeps the state between evaluations and remembers the latest answer', async (t) => {
  const a = new ScalingAdvisor(cfg);
  t.equal(a.latest, undefined);
  for (let m = 0; m < 5; m++) a.evaluate(overloaded(m * MIN));
  t.equal(a.evaluate(overloaded(5 * MIN)).action, 'add');
  t.equal(a.latest?.action, 'add');
});

t.test('durations read as people say them', async (t) => {
  t.equal(formatDuration(40_000), '40 s');
  t.equal(formatDuration(5 * MIN), '5 min');
  t.equal(formatDuration(30 * MIN), '30 min');
  t.equal(formatDuration(3 * 3_600_000), '3 h');
});
