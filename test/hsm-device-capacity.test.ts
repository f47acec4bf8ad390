// The capacity model as behaviour: a rate-limited HSM saturates at its rate and its queue
// waits grow; an unlimited one only costs real crypto; a full queue answers busy at once.
import t from 'tap';
import { BusyError, CAPACITY_PROFILES, CapacityModel, type CapacityProfile, type CryptoResult } from '../src/hsm/device/index.js';
import { freshHsm } from './helpers/hsm-device.js';

const MSG = Buffer.from('capacity');

async function signer(t: Parameters<typeof freshHsm>[0], capacity: CapacityProfile | 'unlimited') {
  const f = await freshHsm(t, { capacity });
  const alice = await f.cu('alice');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'k' });
  const keyId = kp.result.privateKey.keyId;
  return { f, sign: () => f.hsm.sign(alice, { keyId, mechanism: 'ecdsa-sha256', data: MSG }) };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

t.test('100 signs/s on one unit: 200 concurrent signs take at least ~1.5 s and queue waits grow', async (t) => {
  const { f, sign } = await signer(t, { name: 'slow', units: 1, rates: { sign: 100 }, maxQueue: 1000 });
  const start = performance.now();
  const results: Array<CryptoResult<Buffer>> = await Promise.all(Array.from({ length: 200 }, sign));
  const elapsed = performance.now() - start;
  t.ok(elapsed >= 1500, `took ${Math.round(elapsed)} ms`);
  t.ok(elapsed < 10_000, 'but not unboundedly long');
  const waits = results.map((r) => r.queueWaitUs);
  t.ok(median(waits.slice(150)) > median(waits.slice(0, 50)) + 500_000, 'later requests waited much longer than early ones');
  const meanService = results.reduce((a, r) => a + r.serviceUs, 0) / results.length;
  t.ok(meanService >= 8000 && meanService < 40_000, `signs held their unit for about 1/rate on average (${Math.round(meanService)} µs)`);
  t.ok(f.hsm.info().utilisation > 0.2, `utilisation reported (${f.hsm.info().utilisation.toFixed(2)})`);
});

t.test('with the unlimited profile queue waits stay near zero', async (t) => {
  const { sign } = await signer(t, 'unlimited');
  const results = await Promise.all(Array.from({ length: 200 }, sign));
  const waits = results.map((r) => r.queueWaitUs);
  t.ok(median(waits) < 20_000, `median queue wait ${median(waits)} µs`);
  t.ok(Math.max(...waits) < 200_000, `max queue wait ${Math.max(...waits)} µs`);
});

t.test('a full queue answers busy at once instead of waiting', async (t) => {
  const { sign } = await signer(t, { name: 'tiny', units: 1, rates: { sign: 10 }, maxQueue: 2 });
  const start = performance.now();
  const settled = Array.from({ length: 5 }, () => sign().then(() => ({ ok: true, at: performance.now() - start }), (e: unknown) => ({ ok: false, e, at: performance.now() - start })));
  const outcomes = await Promise.all(settled);
  const busy = outcomes.filter((o) => !o.ok);
  t.equal(busy.length, 2, 'one in service, two queued, two refused');
  for (const b of busy) {
    t.type((b as { e: unknown }).e, BusyError);
    t.equal(((b as { e: BusyError }).e).code, 'HSM_ERR_BUSY');
    t.ok(b.at < 90, `refused without waiting for a unit (${Math.round(b.at)} ms)`);
  }
});

t.test('throughput with several units is units × per-unit rate, not more', async (t) => {
  const model = new CapacityModel({ name: 'two', units: 2, rates: { 'sign:rsa-2048': 200 }, maxQueue: 100 });
  const start = performance.now();
  await Promise.all(Array.from({ length: 60 }, () => model.run('sign:rsa-2048', () => 1)));
  const elapsed = performance.now() - start;
  t.ok(elapsed >= 250, `60 ops at 200/s took ${Math.round(elapsed)} ms (≈ 300 expected)`);
});

t.test('rates are looked up as op:alg, then op:family, then op, then *', async (t) => {
  const m = new CapacityModel({ name: 'x', units: 1, rates: { 'sign:ec-p256': 1000, 'verify:rsa': 500, encrypt: 250, '*': 100 }, maxQueue: 1 });
  t.equal(m.minServiceMs('sign:ec-p256'), 1);
  t.equal(m.minServiceMs('verify:rsa-2048'), 2);
  t.equal(m.minServiceMs('encrypt:aes-256'), 4);
  t.equal(m.minServiceMs('random'), 10);
});

t.test('the hardware profiles carry the published per-HSM sign rates', async (t) => {
  t.equal(CAPACITY_PROFILES['hsm1.medium'].rates['sign:rsa-2048'], 1000);
  t.equal(CAPACITY_PROFILES['hsm1.medium'].rates['sign:ec-p256'], 250);
  t.equal(CAPACITY_PROFILES['hsm2m.medium'].rates['sign:rsa-2048'], 1000);
  t.equal(CAPACITY_PROFILES['hsm2m.medium'].rates['sign:ec-p256'], 1500);
});

t.test('a bad custom profile or unknown profile name is refused with what to fix', async (t) => {
  t.throws(() => new CapacityModel({ name: 'bad', units: 0, rates: {}, maxQueue: 1 }), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /units/ });
  t.throws(() => new CapacityModel({ name: 'bad', units: 1, rates: { sign: -1 }, maxQueue: 1 }), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /rate for sign/ });
  t.throws(() => new CapacityModel('hsm9.huge' as 'unlimited'), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /hsm2m.medium/ });
});
