// `hsmproxy cluster advise` and `hsmproxy cluster plan` as a user runs them: advice read from a
// running proxy's admin port (GET /scaling) or from Prometheus (a stand-in on loopback answering
// the advisor's PromQL), capacity plans from a profile or a bench result, and one-line errors.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import t, { type Test } from 'tap';
import { startServing } from '../src/app/serve.js';
import { Engine, SimBackend, simClientFrom } from '../src/engine/index.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { ensureDemoPki } from '../src/pki/demo.js';
import { ADVISOR_DEFAULTS, ScalingMonitor, ScalingService, registrySource, createRegistry } from '../src/metrics/index.js';
import { AdminServer } from '../src/proxy/admin.js';
import { runCli } from './helpers/cli.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { cliInProcess, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

// An admin server whose advisor saw sustained slow signs on two busy HSMs (for 7 s when /scaling
// is read: it evaluates at the time of the request, one second after the last evaluation here).
async function adminWithAdvice(t: Test): Promise<string> {
  let now = 1_000_000;
  const monitor = new ScalingMonitor({ windowMs: 60_000, now: () => now, members: () => [{ hsm: 'hsm-1', inRotation: true }, { hsm: 'hsm-2', inRotation: true }] });
  const service = new ScalingService({ monitor, config: { ...ADVISOR_DEFAULTS, sustainMs: 5_000 } });
  for (const hsm of ['hsm-1', 'hsm-2']) monitor.onState({ hsm, address: '127.0.0.1:1', up: true, inFlight: 3, utilisation: 0.91, keysToken: 12, keysSession: 0, keysMax: 3500 });
  for (let s = 0; s <= 6; s++) {
    for (let i = 0; i < 50; i++) monitor.onRequest({ op: 'sign', mechanism: 'ecdsa-sha256', hsm: 'hsm-1', rttMs: 38, queueWaitMs: 30, serviceMs: 4, outcome: 'ok' });
    service.evaluate();
    now += 1000;
  }
  monitor.close();
  const admin = new AdminServer(registrySource(createRegistry()), () => ({ ready: true, reasons: [] }), () => service.report());
  const addr = await admin.listen(0, '127.0.0.1');
  t.teardown(() => admin.close());
  return `http://127.0.0.1:${addr.port}`;
}

t.test('advise --admin prints the recommendation the running proxy serves at /scaling', async (t) => {
  const url = await adminWithAdvice(t);
  const r = await cliInProcess(['cluster', 'advise', '--admin', url]);
  t.equal(r.error, undefined);
  t.match(r.stdout, /^ADD: add 1 HSM: p99 sign latency 38 ms \(SLO 20 ms\) for 7 s, utilisation 0\.91 on 2 HSMs/);
  t.match(r.stdout, /HSMs: 2 \(2 in rotation\) → recommended 3/);
  t.match(r.stdout, /hsm-1 +in rotation +utilisation 0\.91 +keys 12\/3500/);
});

t.test('advise --admin --json gives the recommendation and the figures it came from', async (t) => {
  const url = await adminWithAdvice(t);
  const r = await cliInProcess(['cluster', 'advise', '--admin', `${url}/scaling`, '--json']);
  const doc = JSON.parse(r.stdout) as { recommendation: { action: string; targetHsms: number }; stats: { signs: number; hsms: unknown[] } };
  t.equal(doc.recommendation.action, 'add');
  t.equal(doc.recommendation.targetHsms, 3);
  t.equal(doc.stats.signs, 350);
  t.equal(doc.stats.hsms.length, 2);
});

t.test('/scaling is a 404 that says why when the proxy runs no advisor', async (t) => {
  const admin = new AdminServer(registrySource(createRegistry()), () => ({ ready: true, reasons: [] }));
  const addr = await admin.listen(0, '127.0.0.1');
  t.teardown(() => admin.close());
  const res = await fetch(`http://127.0.0.1:${addr.port}/scaling`);
  t.equal(res.status, 404);
  t.match(await res.text(), /needs the simulated HSM cluster/);
  const r = await cliInProcess(['cluster', 'advise', '--admin', `http://127.0.0.1:${addr.port}`]);
  t.match(r.error?.message, /answered HTTP 404: no scaling advice here/);
});

// A Prometheus stand-in: answers each of the advisor's queries with fixed figures.
async function fakePrometheus(t: Test, figures: { p99: number; sustainedP99: number; util: number; peakUtil: number }): Promise<{ url: string; queries: string[] }> {
  const queries: string[] = [];
  const vector = (result: Array<{ metric?: Record<string, string>; v: number }>) => ({ status: 'success', data: { resultType: 'vector', result: result.map((r) => ({ metric: r.metric ?? {}, value: [1700000000, String(r.v)] })) } });
  const server = http.createServer((req, res) => {
    const q = new URL(req.url ?? '/', 'http://x').searchParams.get('query') ?? '';
    queries.push(q);
    const hsms = (v: number) => vector([{ metric: { hsm: 'hsm-1' }, v }, { metric: { hsm: 'hsm-2' }, v }]);
    let body: unknown;
    if (q.startsWith('min_over_time(histogram_quantile')) body = vector([{ v: figures.sustainedP99 }]);
    else if (q.startsWith('min_over_time(sum(rate(')) body = vector([{ v: 0 }]);
    else if (q.startsWith('max_over_time(')) body = vector([{ v: figures.peakUtil }]);
    else if (q.startsWith('changes(')) body = vector([{ v: 0 }]);
    else if (q.includes('queue_wait')) body = vector([{ v: 0.02 }]);
    else if (q.startsWith('histogram_quantile(0.99')) body = vector([{ v: figures.p99 }]);
    else if (q.startsWith('histogram_quantile(0.5')) body = vector([{ v: 0.004 }]);
    else if (q.includes('HSM_ERR_BUSY')) body = vector([{ v: 0 }]);
    else if (q.includes('hsmproxy_hsm_requests_total')) body = vector([{ v: 9000 }]);
    else if (q.includes('utilisation_ratio')) body = hsms(figures.util);
    else if (q.includes('hsmproxy_hsm_up')) body = hsms(1);
    else if (q.includes('keys_max')) body = hsms(3500);
    else if (q.includes('hsmproxy_hsm_keys')) body = hsms(10);
    else if (q.includes('resumed="true"')) body = vector([{ v: 40 }]);
    else if (q.includes('resumed="false"')) body = vector([{ v: 60 }]);
    else body = { status: 'error', error: `unexpected query ${q}` };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, queries };
}

t.test('advise --prometheus adds when the 1-minute p99 stayed over the SLO for the whole sustain period', async (t) => {
  const prom = await fakePrometheus(t, { p99: 0.038, sustainedP99: 0.031, util: 0.91, peakUtil: 0.95 });
  const r = await cliInProcess(['cluster', 'advise', '--prometheus', prom.url, '--json']);
  t.equal(r.error, undefined);
  const doc = JSON.parse(r.stdout) as { recommendation: { action: string; reason: string }; stats: { handshakesPerSec: number; resumedShare: number; signs: number } };
  t.equal(doc.recommendation.reason, 'add 1 HSM: p99 sign latency 38 ms (SLO 20 ms) for 5 min, utilisation 0.91 on 2 HSMs');
  t.equal(doc.stats.handshakesPerSec, 100);
  t.equal(doc.stats.resumedShare, 0.4);
  t.equal(doc.stats.signs, 9000);
  t.ok(prom.queries.some((q) => q.includes('[300s:15s]')), 'asks Prometheus whether the latency was sustained');
});

t.test('advise --prometheus holds when p99 is over the SLO now but dipped under it within the sustain period', async (t) => {
  const prom = await fakePrometheus(t, { p99: 0.038, sustainedP99: 0.012, util: 0.91, peakUtil: 0.95 });
  const r = await cliInProcess(['cluster', 'advise', '--prometheus', prom.url]);
  t.match(r.stdout, /^HOLD: hold at 2 HSMs: p99 sign latency 38 ms \(SLO 20 ms\) for 0 s of the 5 min/);
});

t.test('advise --prometheus removes one HSM when all stayed idle for the removal period, if min allows', async (t) => {
  const prom = await fakePrometheus(t, { p99: 0.004, sustainedP99: 0.003, util: 0.05, peakUtil: 0.1 });
  const kept = await cliInProcess(['cluster', 'advise', '--prometheus', prom.url]);
  t.match(kept.stdout, /^HOLD: .*already at the minimum of 2/);
  const r = await cliInProcess(['cluster', 'advise', '--prometheus', prom.url, '--min', '1']);
  t.match(r.stdout, /^REMOVE: remove 1 HSM: utilisation < 0\.3 for 30 min and 1 HSM remains/);
});

t.test('advise --dir asks the HSMs themselves: below the minimum it adds, and it says latency needs the proxy', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-advise-dir-'));
  const cluster = await startEmbeddedCluster({ dir, hsms: 1, scryptCost: TEST_SCRYPT_COST });
  t.teardown(async () => {
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const r = await cliInProcess(['cluster', 'advise', '--dir', dir]);
  t.equal(r.error, undefined);
  t.match(r.stdout, /^ADD: add 1 HSM: only 1 HSM in the cluster, minimum 2/);
  t.match(r.stdout, /hsm-1 +in rotation +utilisation 0\.\d\d +keys \d+\/3500/);
  t.match(r.stdout, /note: read from the HSMs themselves.*use --admin or --prometheus/);
  const one = JSON.parse((await cliInProcess(['cluster', 'advise', '--dir', dir, '--min', '1', '--json'])).stdout) as { recommendation: { action: string } };
  t.equal(one.recommendation.action, 'hold', 'with min 1 and an idle HSM it holds');
  const fromEnv = await cliInProcess(['cluster', 'advise', '--json'], { HSMPROXY_DIR: dir });
  t.equal(fromEnv.error, undefined, 'no source named: $HSMPROXY_DIR is the cluster, as for every other command');
  t.equal((JSON.parse(fromEnv.stdout) as { source: string }).source, dir);
});

t.test('advise --dir reads the advice of the serve running on the cluster (its admin URL recorded in the directory); the record goes when serve stops', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hsmproxy-advise-serve-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const data = join(root, 'data');
  const cluster = await startEmbeddedCluster({ dir: data, hsms: 2, scryptCost: TEST_SCRYPT_COST });
  const backend = new SimBackend({ client: simClientFrom(cluster.client), clusterId: (await readManifest(data)).clusterId, credentials: cluster.credentials.cu, ownsClient: false });
  const engine = new Engine({ backends: { sim: backend } });
  const { files } = await ensureDemoPki(engine, backend, join(root, 'certs'));
  await engine.close();
  await cluster.stop();
  const configFile = join(root, 'hsmproxy.yaml');
  await writeFile(configFile, [
    'listeners:',
    `  - { name: web, address: 127.0.0.1, port: 0, certificates: [{ cert: ${files.ecdsaChain}, key: ${files.ecdsaKey} }] }`,
    'routes: [{ upstream: [http://127.0.0.1:9] }]',
    `hsm: { mode: embedded, dir: ${data} }`,
    'admin: { address: 127.0.0.1, port: 0 }',
    '',
  ].join('\n'));
  const serving = await startServing({ configFile, log: pino({ level: 'silent' }) });
  let stopped = false;
  t.teardown(() => (stopped ? undefined : serving.stop(1000)));
  const url = `http://127.0.0.1:${serving.adminAddress()!.port}`;
  const record = JSON.parse(await readFile(join(data, 'serve-admin.json'), 'utf8')) as { url: string; pid: number };
  t.match(record, { url, pid: process.pid }, 'serve records its admin URL and PID');

  const r = await cliInProcess(['cluster', 'advise', '--dir', data]);
  t.equal(r.error, undefined);
  t.match(r.stdout, /^HOLD: hold at 2 HSMs: /);
  t.match(r.stdout, /last 1 min: \d+ signs/, 'the proxy\'s window, not the HSMs\' 5 s');
  t.notMatch(r.stdout, /note: /, 'no "latency is seen by the proxy" note: this is the proxy');
  t.match(r.stdout, new RegExp(`source: ${url}/scaling \\(the proxy serving ${data.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, recorded in serve-admin\\.json\\)`));

  await serving.stop(1000);
  stopped = true;
  await t.rejects(readFile(join(data, 'serve-admin.json')), { code: 'ENOENT' }, 'a clean stop removes the record');
});

t.test('advise --dir with a stale record (the proxy is gone) asks the HSMs and says why', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-advise-stale-'));
  const cluster = await startEmbeddedCluster({ dir, hsms: 2, scryptCost: TEST_SCRYPT_COST });
  t.teardown(async () => {
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  });
  // A port that was just free: nothing answers there.
  const free = http.createServer();
  await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', resolve));
  const port = (free.address() as AddressInfo).port;
  await new Promise((resolve) => free.close(resolve));
  await writeFile(join(dir, 'serve-admin.json'), JSON.stringify({ url: `http://127.0.0.1:${port}`, pid: 999_999, startedAt: '2026-01-01T00:00:00.000Z' }));
  const r = await cliInProcess(['cluster', 'advise', '--dir', dir]);
  t.equal(r.error, undefined, 'a stale record is no error');
  t.match(r.stdout, /^HOLD: hold at 2 HSMs: /);
  t.match(r.stdout, new RegExp(`note: serve-admin\\.json names http://127\\.0\\.0\\.1:${port}, which does not answer \\(the proxy that wrote it is gone\\); read from the HSMs themselves`));
  t.match(r.stdout, new RegExp(`source: ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
});

t.test('advise needs exactly one source, and says so in one line with a non-zero exit', async (t) => {
  const none = await runCli(['cluster', 'advise'], { env: { HSMPROXY_DIR: '' } });
  t.equal(none.code, 2);
  t.equal(none.stderr.trim(), 'hsmproxy: give exactly one of --admin URL, --prometheus URL or --dir DIR (or set HSMPROXY_DIR)');
  const two = await cliInProcess(['cluster', 'advise', '--admin', 'http://127.0.0.1:1', '--prometheus', 'http://127.0.0.1:1']);
  t.match(two.error?.message, /exactly one of/);
});

t.test('advise reports an unreachable source or a bad URL as a one-line error', async (t) => {
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  const admin = await cliInProcess(['cluster', 'advise', '--admin', `http://127.0.0.1:${port}`]);
  t.match(admin.error?.message, /cannot reach the admin endpoint .* \(ECONNREFUSED\); is hsmproxy serve running/);
  const prom = await cliInProcess(['cluster', 'advise', '--prometheus', `http://127.0.0.1:${port}`]);
  t.match(prom.error?.message, /cannot reach Prometheus at .* \(ECONNREFUSED\); check --prometheus/);
  const bad = await cliInProcess(['cluster', 'advise', '--admin', 'not a url']);
  t.match(bad.error?.message, /--admin takes the admin URL of a running hsmproxy/);
  const badMin = await cliInProcess(['cluster', 'advise', '--admin', 'http://127.0.0.1:1', '--min', '3', '--max', '2']);
  t.match(badMin.error?.message, /--max \(2\) must be at least --min \(3\)/);
});

t.test('plan: full handshakes need one signature each, resumed none; the profile gives the per-HSM rate', async (t) => {
  const r = await cliInProcess(['cluster', 'plan', '--handshakes-per-sec', '5000', '--resumption', '0.6', '--profile', 'hsm2m.medium', '--json']);
  t.equal(r.error, undefined);
  const plan = JSON.parse(r.stdout) as { hsms: number; signsPerSec: number; perHsmSignsPerSec: number; usablePerHsm: number; limitedBy: string; reasons: string[] };
  // 5000 × 0.4 = 2000 RSA-2048 signs/s; 1000/s per HSM at 70% = 700/s → ceil(2.86) = 3.
  t.equal(plan.signsPerSec, 2000);
  t.equal(plan.perHsmSignsPerSec, 1000);
  t.equal(plan.usablePerHsm, 700);
  t.equal(plan.hsms, 3);
  t.equal(plan.limitedBy, 'load');
  t.match(plan.reasons.join('\n'), /hsm2m\.medium published figure/);
});

t.test('plan: a light load is still given the minimum of HSMs, and says the minimum decided', async (t) => {
  const r = await cliInProcess(['cluster', 'plan', '--handshakes-per-sec', '100', '--key', 'ec-p256', '--min', '3']);
  t.match(r.stdout, /^3 HSMs\n/);
  t.match(r.stdout, /the minimum of 3 \(availability across zones\) decides/);
});

t.test('plan: the EC rate of the profile is used for an EC key (hsm1.medium is slower than hsm2m.medium)', async (t) => {
  const a = JSON.parse((await cliInProcess(['cluster', 'plan', '--handshakes-per-sec', '1000', '--key', 'ec-p256', '--profile', 'hsm1.medium', '--min', '1', '--json'])).stdout) as { hsms: number };
  const b = JSON.parse((await cliInProcess(['cluster', 'plan', '--handshakes-per-sec', '1000', '--key', 'ec-p256', '--profile', 'hsm2m.medium', '--min', '1', '--json'])).stdout) as { hsms: number };
  t.equal(a.hsms, 6, '1000 / (250 × 0.7) → 6');
  t.equal(b.hsms, 1, '1000 / (1500 × 0.7) → 1');
});

t.test('plan --from-bench uses the best error-free per-HSM point measured for the key type', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-plan-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'bench.json');
  await writeFile(file, JSON.stringify({
    kind: 'hsm',
    points: [
      { op: 'sign-ec-p256', hsms: 1, concurrency: 8, opsPerSec: 240, errors: 0 },
      { op: 'sign-ec-p256', hsms: 2, concurrency: 64, opsPerSec: 600, errors: 0 },
      { op: 'sign-ec-p256', hsms: 1, concurrency: 256, opsPerSec: 900, errors: 12 },
      { op: 'sign-rsa2048-pss', hsms: 1, concurrency: 8, opsPerSec: 999, errors: 0 },
    ],
  }));
  const r = await cliInProcess(['cluster', 'plan', '--handshakes-per-sec', '1000', '--key', 'ec-p256', '--from-bench', file, '--headroom', '0.5', '--min', '1', '--json']);
  const plan = JSON.parse(r.stdout) as { hsms: number; perHsmSignsPerSec: number; reasons: string[] };
  t.equal(plan.perHsmSignsPerSec, 300, '600/s on 2 HSMs; the point with errors is ignored');
  t.equal(plan.hsms, 7, '1000 / (300 × 0.5) → 7');
  t.match(plan.reasons[1], /measured: sign-ec-p256 600\/s on 2 HSMs at concurrency 64/);
  const none = await cliInProcess(['cluster', 'plan', '--handshakes-per-sec', '1000', '--key', 'ec-p384', '--from-bench', file]);
  t.match(none.error?.message, /has no error-free sign point for ec-p384/);
  const missing = await cliInProcess(['cluster', 'plan', '--handshakes-per-sec', '1000', '--from-bench', join(dir, 'nope.json')]);
  t.match(missing.error?.message, /nope\.json: no such file/);
});

t.test('plan rejects bad input with one line saying what to pass', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--handshakes-per-sec', 'lots'], /--handshakes-per-sec takes a number/],
    [['--handshakes-per-sec', '10', '--resumption', '1.5'], /--resumption takes a fraction from 0 to 1/],
    [['--handshakes-per-sec', '10', '--headroom', '0'], /--headroom takes a fraction above 0 to 1/],
    [['--handshakes-per-sec', '10', '--profile', 'unlimited'], /unlimited has no capacity to plan with/],
    [['--handshakes-per-sec', '10', '--key', 'dsa'], /--key must be one of rsa-2048/],
    [['--handshakes-per-sec', '10', '--min', '0'], /--min takes a whole number from 1 to 28/],
  ];
  for (const [args, msg] of cases) {
    const r = await cliInProcess(['cluster', 'plan', ...args]);
    t.match(r.error?.message, msg, args.join(' '));
  }
  const spawned = await runCli(['cluster', 'plan', '--handshakes-per-sec', '10', '--resumption', '2']);
  t.equal(spawned.code, 2);
  t.equal(spawned.stderr.split('\n').filter(Boolean).length, 1, 'one line, no stack trace');
});
