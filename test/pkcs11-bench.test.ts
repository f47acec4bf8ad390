// `hsmproxy bench hsm --backend pkcs11` against a SoftHSM token: the same result document as a
// run on the simulated cluster (so both land in one table), every signature counted, no
// error, and the keys it made for the run removed from the token afterwards. Counts are tiny:
// this checks behaviour, not speed.
import t from 'tap';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import { cliInProcess } from './helpers/hsm-cluster.js';
import { openPkcs11Backend } from '../src/engine/pkcs11/backend.js';
import type { HsmBenchResult } from '../src/bench/hsm.js';

const skip = softhsmSkipReason();
if (skip) {
  t.test('SoftHSM bench test', { skip }, async () => {});
} else {
  const hsm = createSoftHsm();
  hsm.addToken('bench');
  t.teardown(() => hsm.cleanup());
  const args = ['bench', 'hsm', '--backend', 'pkcs11', '--module', hsm.module, '--token', 'bench', '--op', 'sign-ec-p256,sign-rsa2048-pss', '--count', '40', '--concurrency', '1,4'];

  t.test('bench hsm measures a PKCS#11 token: one point per operation and concurrency, every sign counted', async (t) => {
    const r = await cliInProcess([...args, '--json'], { HSMPROXY_PIN: TEST_PIN });
    t.error(r.error);
    const result = JSON.parse(r.stdout) as HsmBenchResult;
    t.equal(result.kind, 'hsm');
    t.match(result.targets.join(' '), /PKCS#11 token "bench"/, 'the target names the token');
    t.same(result.points.map((p) => [p.op, p.concurrency]), [['sign-ec-p256', 1], ['sign-ec-p256', 4], ['sign-rsa2048-pss', 1], ['sign-rsa2048-pss', 4]]);
    for (const p of result.points) {
      t.match(p, { ops: 40, errors: 0, hsms: null, splitReported: false }, `${p.op} at ${p.concurrency}: 40 signs, no error`);
      t.ok(p.opsPerSec > 0 && p.latency.p50.totalMs > 0 && p.latency.p50.totalMs <= p.latency.max.totalMs, `${p.op} at ${p.concurrency}: ${p.opsPerSec.toFixed(0)}/s, p50 ${p.latency.p50.totalMs} ms`);
    }
    const b = await openPkcs11Backend({ module: hsm.module, token: 'bench', pin: TEST_PIN, poolSize: 1 });
    t.teardown(() => b.close());
    t.same(await b.listKeys(), [], 'the keys made for the run were removed from the token');
  });

  t.test('the text output is a table with a row per point', async (t) => {
    const r = await cliInProcess(args, { HSMPROXY_PIN: TEST_PIN });
    t.error(r.error);
    for (const op of ['sign-ec-p256', 'sign-rsa2048-pss']) t.match(r.stdout, `${op} on the PKCS#11 token`, `a section for ${op}`);
    const rows = r.stdout.split('\n').filter((l) => /^\s+[14]\s+\d+\s+[\d.]+\s+[\d.]+/.test(l));
    t.equal(rows.length, 4, `4 rows (2 operations × 2 concurrencies) of in flight, ops/s and percentiles:\n${r.stdout}`);
  });

  t.test('a wrong PIN stops the run with the PKCS#11 reason, before any point', async (t) => {
    const r = await cliInProcess([...args, '--json'], { HSMPROXY_PIN: '9999' });
    t.match(r.error, { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /CKR_PIN_INCORRECT/ });
    t.equal(r.stdout, '', 'no result printed');
  });
}
