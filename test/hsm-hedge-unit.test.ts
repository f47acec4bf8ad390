// The hedge race's contract, with a route double whose attempts the test settles by hand: which
// answer wins, which error the caller sees (once), when a hedge is sent or refused, and the delay
// each HSM's recent latencies give. The cluster test (hsm-cluster-hedge) runs it on real HSMs.
import t from 'tap';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { HSM_HEDGE_CHANNEL, HedgeBudget, Hedging, LatencyWindow, type HedgeRoute, type HsmHedgeEvent } from '../src/hsm/client/hedge.js';

interface Attempt { avoid: ReadonlySet<string> | undefined; hsm: string; remainingMs(): number; resolve(v: string): void; reject(e: unknown): void; abandoned(): boolean }

// A route over two HSMs: the primary goes to `first`, a hedge to the other one.
function twoHsms(first = 'hsm-1'): { route: HedgeRoute<string>; attempts: Attempt[]; started: Promise<void>[]; nextAttempt(): Promise<Attempt> } {
  const attempts: Attempt[] = [];
  const waiters: Array<(a: Attempt) => void> = [];
  const route: HedgeRoute<string> = {
    run(avoid, onNode, abandoned, remainingMs) {
      const hsm = avoid === undefined ? first : avoid.has('hsm-1') ? 'hsm-2' : 'hsm-1';
      onNode(hsm);
      return new Promise<string>((resolve, reject) => {
        const a = { avoid, hsm, resolve, reject, abandoned, remainingMs };
        attempts.push(a);
        waiters.shift()?.(a);
      });
    },
    hasTarget: (_late, avoid) => !(avoid.has('hsm-1') && avoid.has('hsm-2')),
  };
  return {
    route, attempts, started: [],
    nextAttempt: () => new Promise<Attempt>((r) => waiters.push(r)),
  };
}

const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('the primary answering first wins; the hedge that was never needed is not sent', async (t) => {
  const h = new Hedging({ minDelayMs: 1000, initialDelayMs: 1000 });
  const r = twoHsms();
  const p = h.race(r.route, undefined);
  r.attempts[0]!.resolve('from hsm-1');
  t.equal(await p, 'from hsm-1');
  t.equal(r.attempts.length, 1, 'one attempt only');
  t.same(h.totals(), { sent: 0, won: 0, refused: 0, requests: 1 });
});

t.test('a late primary is hedged on the other HSM; the hedge answering first wins and the late answer is dropped', async (t) => {
  const h = new Hedging({ minDelayMs: 0, initialDelayMs: 0 });
  const r = twoHsms();
  const p = h.race(r.route, undefined);
  const hedge = await r.nextAttempt();
  t.same([...hedge.avoid!], ['hsm-1'], 'the hedge avoids the late HSM');
  t.equal(hedge.hsm, 'hsm-2');
  hedge.resolve('from hsm-2');
  t.equal(await p, 'from hsm-2');
  t.ok(r.attempts[0]!.abandoned(), 'the primary is told the race is decided (no retries)');
  r.attempts[0]!.resolve('late from hsm-1');
  await tick();
  t.same(h.stats().get('hsm-1'), { sent: 1, won: 1, refused: 0 }, 'counted against the HSM that was late');
});

t.test('the primary failing while the hedge is in flight: the hedge answer wins, no error surfaces', async (t) => {
  const h = new Hedging({ minDelayMs: 0, initialDelayMs: 0 });
  const r = twoHsms();
  const p = h.race(r.route, undefined);
  const hedge = await r.nextAttempt();
  r.attempts[0]!.reject(Object.assign(new Error('connection to HSM hsm-1 closed'), { code: 'HSM_ERR_CONNECTION_CLOSED' }));
  await tick();
  hedge.resolve('from hsm-2');
  t.equal(await p, 'from hsm-2');
});

t.test('the hedge failing while the primary is in flight: the primary decides', async (t) => {
  const h = new Hedging({ minDelayMs: 0, initialDelayMs: 0 });
  const r = twoHsms();
  const p = h.race(r.route, undefined);
  const hedge = await r.nextAttempt();
  hedge.reject(Object.assign(new Error('busy'), { code: 'HSM_ERR_BUSY' }));
  await tick();
  r.attempts[0]!.resolve('from hsm-1');
  t.equal(await p, 'from hsm-1');
  t.same(h.stats().get('hsm-1'), { sent: 1, won: 0, refused: 0 }, 'a hedge that lost is not a win');
});

t.test('both attempts failing: the caller sees the first error, once', async (t) => {
  const h = new Hedging({ minDelayMs: 0, initialDelayMs: 0 });
  const r = twoHsms();
  const p = h.race(r.route, undefined);
  const hedge = await r.nextAttempt();
  const first = Object.assign(new Error('no such key'), { code: 'HSM_ERR_NO_SUCH_KEY' });
  r.attempts[0]!.reject(first);
  await tick();
  hedge.reject(Object.assign(new Error('no such key (hedge)'), { code: 'HSM_ERR_NO_SUCH_KEY' }));
  await t.rejects(p, first);
});

t.test('a primary that fails before its delay is not hedged', async (t) => {
  const h = new Hedging({ minDelayMs: 1000, initialDelayMs: 1000 });
  const r = twoHsms();
  const p = h.race(r.route, undefined);
  r.attempts[0]!.reject(Object.assign(new Error('denied'), { code: 'HSM_ERR_PERMISSION' }));
  await t.rejects(p, { code: 'HSM_ERR_PERMISSION' });
  t.equal(r.attempts.length, 1);
  t.equal(h.totals().sent, 0);
});

t.test('with no other HSM in rotation nothing is sent or refused', async (t) => {
  const h = new Hedging({ minDelayMs: 0, initialDelayMs: 0 });
  const r = twoHsms();
  r.route.hasTarget = () => false;
  const p = h.race(r.route, undefined);
  while (!h.isLate('hsm-1')) await tick(1); // its delay passed: the hedge was considered
  r.attempts[0]!.resolve('only one');
  t.equal(await p, 'only one');
  t.same(h.totals(), { sent: 0, won: 0, refused: 0, requests: 1 });
});

t.test('the budget refuses hedges beyond the burst plus the share of requests, and says so on the channel', async (t) => {
  const events: HsmHedgeEvent[] = [];
  const on = (m: unknown): void => { events.push(m as HsmHedgeEvent); };
  subscribe(HSM_HEDGE_CHANNEL, on);
  t.teardown(() => unsubscribe(HSM_HEDGE_CHANNEL, on));
  const h = new Hedging({ minDelayMs: 0, initialDelayMs: 0, maxShare: 0.05 });
  const r = twoHsms();
  const n = 100;
  const all = Array.from({ length: n }, () => h.race(r.route, undefined));
  while (h.totals().sent + h.totals().refused < n) await tick(1);
  const { sent, refused } = h.totals();
  // Burst 10 (0.05 × 200), and the 100 requests came before any hedge: the bucket was full.
  t.equal(sent, 10, 'the burst is hedged');
  t.equal(refused, n - 10, 'the rest are refused');
  t.equal(events.filter((e) => e.outcome === 'refused').length, n - 10, 'each refusal is published');
  t.ok(events.filter((e) => e.outcome === 'sent').every((e) => e.hsm === 'hsm-1' && e.to === 'hsm-2'), 'sent events name both HSMs');
  for (const a of [...r.attempts]) a.resolve(`from ${a.hsm}`);
  t.equal((await Promise.all(all)).length, n);
});

t.test('HedgeBudget: over a long run at most burst + share × requests hedges', async (t) => {
  const b = new HedgeBudget(0.05, 10);
  let taken = 0;
  for (let i = 0; i < 10_000; i++) {
    b.onRequest();
    if (b.take()) taken++;
  }
  t.ok(taken <= 10 + 0.05 * 10_000, `${taken} taken`);
  t.ok(taken >= 0.05 * 10_000, 'and the share is usable');
});

t.test('LatencyWindow: no p95 before 20 samples, then the recent p95, which forgets old samples', async (t) => {
  const w = new LatencyWindow();
  for (let i = 0; i < 19; i++) w.add(1);
  t.equal(w.p95, undefined);
  w.add(1);
  t.equal(w.p95, 1);
  for (let i = 1; i <= 96; i++) w.add(i);
  // 116 samples (the cache refreshes every 16): twenty-one 1s, then 2..96; p95 is the 111th smallest.
  t.equal(w.p95, 91);
  for (let i = 0; i < 128; i++) w.add(2);
  t.equal(w.p95, 2, 'a full window of new samples replaces the old ones');
});

t.test('the hedge delay: the initial delay before samples, then the recent p95 with the floor', async (t) => {
  const h = new Hedging({ minDelayMs: 5, initialDelayMs: 40 });
  t.equal(h.delayFor('hsm-1'), 40);
  for (let i = 0; i < 30; i++) h.record('hsm-1', 0.3);
  t.equal(h.delayFor('hsm-1'), 5, 'a fast HSM is hedged at the floor');
  for (let i = 0; i < 128; i++) h.record('hsm-1', 12);
  t.equal(h.delayFor('hsm-1'), 12, 'a slower one at its p95');
  t.throws(() => new Hedging({ maxShare: 0 }), RangeError);
  t.throws(() => new Hedging({ maxShare: 1.5 }), RangeError);
});

t.test('an HSM with a request late on it takes no hedges: when both are late, nothing is hedged', async (t) => {
  const h = new Hedging({ minDelayMs: 0, initialDelayMs: 0 });
  const a = twoHsms('hsm-1');
  const b = twoHsms('hsm-2');
  const pa = h.race(a.route, undefined);
  const hedgeOfA = await a.nextAttempt();
  t.equal(hedgeOfA.hsm, 'hsm-2', 'the first late request is hedged on the other HSM');
  const pb = h.race(b.route, undefined);
  while (!h.isLate('hsm-2')) await tick(1); // its delay passed: the hedge was considered
  t.equal(b.attempts.length, 1, 'a request late on hsm-2 while hsm-1 is late too is not hedged');
  t.same(h.totals(), { sent: 1, won: 0, refused: 0, requests: 2 }, 'nor counted as refused');
  for (const x of [...a.attempts, ...b.attempts]) x.resolve(x.hsm);
  await Promise.all([pa, pb]);
  // Once both answered, neither is late: a new late request is hedged again.
  const c = twoHsms('hsm-1');
  const pc = h.race(c.route, undefined);
  const hedgeOfC = await c.nextAttempt();
  hedgeOfC.resolve('hedged');
  t.equal(await pc, 'hedged');
  c.attempts[0]!.resolve('late');
});

t.test("the request's own deadline bounds the hedge: it gets what is left of it", async (t) => {
  const h = new Hedging({ minDelayMs: 30, initialDelayMs: 30 });
  const r = twoHsms();
  const p = h.race(r.route, 1000);
  const hedge = await r.nextAttempt();
  const left = hedge.remainingMs();
  t.ok(left < 1000 && left > 0, `the hedge may take ${left.toFixed(0)} ms of the request's 1000`);
  hedge.resolve('in time');
  t.equal(await p, 'in time');
  r.attempts[0]!.resolve('late');
});
