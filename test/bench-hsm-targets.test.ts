// `hsmproxy bench hsm` against the targets a user already runs: a cluster in a directory
// (credentials from HSMPROXY_PIN, as the other commands take them) and a PKCS#11 token
// (SoftHSMv2). The keys a run makes are deleted afterwards; a wrong PIN is one line.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { openPkcs11Backend } from '../src/engine/pkcs11/backend.js';
import type { HsmBenchResult } from '../src/bench/hsm.js';

t.test('--dir benchmarks a running cluster with the crypto user of HSMPROXY_PIN', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-bench-dir-'));
  const cluster = await startEmbeddedCluster({ dir, hsms: 2, scryptCost: 1024 });
  t.teardown(async () => { await cluster.stop(); await rm(dir, { recursive: true, force: true }); });
  const pin = `${cluster.credentials.cu.user}:${cluster.credentials.cu.password}`;

  const r = await runCli(['bench', 'hsm', '--dir', dir, '--op', 'sign-ec-p256,aes-gcm', '--count', '60', '--concurrency', '1,4', '--json'], { env: { HSMPROXY_PIN: pin } });
  t.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout) as HsmBenchResult;
  t.match(result.targets[0], /cluster in .* \(2 HSMs, profile unlimited\)/);
  t.same(result.points.map((p) => `${p.op}@${p.concurrency}`), ['sign-ec-p256@1', 'sign-ec-p256@4', 'aes-gcm@1', 'aes-gcm@4']);
  for (const p of result.points) t.ok(p.ops === 60 && p.opsPerSec > 0 && p.hsms === 2 && p.splitReported, `${p.op}@${p.concurrency}: measured on 2 HSMs with timings`);
  t.same((await cluster.client.findKeys({})).map((k) => k.label), [], 'the keys made for the run are deleted');

  const bad = await runCli(['bench', 'hsm', '--dir', dir, '--count', '10'], { env: { HSMPROXY_PIN: `${cluster.credentials.cu.user}:wrong` } });
  t.equal(bad.code, 1);
  t.match(bad.stderr, /^hsmproxy: login failed: wrong user name or password.*\n$/, 'a wrong password is one line');
});

const skip = softhsmSkipReason();
t.test('--backend pkcs11 benchmarks signatures on a token, without an HSM-side split', { skip }, async (t) => {
  const hsm = createSoftHsm();
  t.teardown(() => hsm.cleanup());
  hsm.addToken('bench');
  const r = await runCli(['bench', 'hsm', '--backend', 'pkcs11', '--module', hsm.module, '--token', 'bench', '--op', 'sign-ec-p256,sign-rsa2048-pkcs1', '--count', '40', '--concurrency', '1,2', '--json'], { env: { ...hsm.env, HSMPROXY_PIN: TEST_PIN } });
  t.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout) as HsmBenchResult;
  t.equal(result.points.length, 4);
  for (const p of result.points) {
    t.ok(p.ops === 40 && p.opsPerSec > 0 && p.hsms === null, `${p.op}@${p.concurrency}: measured`);
    t.notOk(p.splitReported, 'PKCS#11 reports no queue or service time');
    t.equal(p.latency.p99.networkMs, p.latency.p99.totalMs, 'so the whole latency shows as outside the HSM');
  }
  const backend = await openPkcs11Backend({ module: hsm.module, token: 'bench', pin: TEST_PIN });
  t.same(await backend.listKeys(), [], 'the keys made for the run are deleted from the token');
  await backend.close();

  const wrong = await runCli(['bench', 'hsm', '--backend', 'pkcs11', '--module', hsm.module, '--token', 'nope', '--count', '5'], { env: { ...hsm.env, HSMPROXY_PIN: TEST_PIN } });
  t.equal(wrong.code, 1);
  t.match(wrong.stderr, /^hsmproxy: PKCS#11 token with label "nope" not found.*\n$/, 'an unknown token is one line naming the tokens present');
});
