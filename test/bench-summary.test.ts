// SUMMARY.md from a fixed set of results (test/fixtures/bench-results.json): every measured
// point appears with its figures, knees, scaling ratios and benchmark ratios are stated, the
// shared machine's load is disclosed, and parts that were not run say so.
import t from 'tap';
import { readFileSync } from 'node:fs';
import type { HsmBenchResult } from '../src/bench/hsm.js';
import { renderSummary, type ProfileResult, type ProxyBenchResult, type TlsBenchResult } from '../src/bench/summary.js';

const fixture = JSON.parse(readFileSync(new URL('./fixtures/bench-results.json', import.meta.url), 'utf8')) as { hsm: HsmBenchResult[]; tls: TlsBenchResult };
const proxy: ProxyBenchResult = {
  kind: 'proxy', date: '2026-11-22T09:50:00.000Z', node: 'v20.20.2', cpus: 2, loadavg: [9.5, 8, 7], client: 'h2load --h1', nginx: 'nginx/1.22.1', nginxSkipped: null, seconds: 5, connections: 16,
  points: [
    { server: 'hsmproxy', requestsPerSec: 4000, requests: 20000, errors: 0, latencyMs: { p50: 3, p95: 8, p99: 12, max: 30, mean: 4 }, serverCpuMsPerRequest: 0.2 },
    { server: 'nginx', requestsPerSec: 26000, requests: 130000, errors: 0, latencyMs: { p50: 0.5, p95: 0.9, p99: 3, max: 40, mean: 0.6 }, serverCpuMsPerRequest: 0.013 },
  ],
  ratios: [{ baseline: 'nginx', requestsPerSec: 0.15, cpuPerRequest: 0.07 }],
};
const profile: ProfileResult = {
  kind: 'profile', date: '2026-11-22T09:55:00.000Z', loadavg: [5, 5, 5],
  runs: [{ name: 'handshake: hsmproxy process', what: 'full TLS 1.3 handshakes', totalMs: 3787, top: [{ functionName: 'writeBuffer', location: '(native)', selfMs: 1751, selfPct: 46.3 }, { functionName: 'Hmac', location: 'node:internal/crypto/hash:161', selfMs: 114, selfPct: 3 }] }],
};
const full = renderSummary({ ...fixture, proxy, profile, charts: [{ file: 'hsm-scaling-throughput.svg', caption: 'HSM throughput vs number of HSMs' }], notes: '- writeBuffer is the loopback write.' });

t.test('the summary discloses the shared machine and its peak load average', async (t) => {
  t.match(full, /2 CPUs, Node v20\.20\.2/);
  t.match(full, /Other work shared the CPUs/);
  t.match(full, /load average up to 9\.50/, 'the highest 1-minute load average of all parts');
});

t.test('every HSM point is a table row with its percentiles and p99 split', async (t) => {
  t.match(full, /\| sign-ec-p256 \| 1 \| 16 \| 1490 \| 10\.7 \| 13\.6 \| 15\.1 \| 15\.6 \| 0\.50 \+ 13\.6 \+ 1\.00 \|/);
  t.match(full, /\*queue\* is the wait for a free crypto unit/, 'the split is explained');
  t.equal(full.split('\n').filter((l) => l.startsWith('| sign-')).length, 3 + 2 + 2, 'three sweep rows, two scaling-run rows, two scaling-table rows');
});

t.test('knees are stated with the rule that found them', async (t) => {
  t.match(full, /knee of sign-ec-p256 on 1 HSM: \*\*64 in flight\*\*/);
  t.match(full, /knee of sign-rsa2048-pss on 2 HSMs: none within the sweep/);
  t.match(full, /Knee rule: first concurrency whose p99 is more than 2x/);
});

t.test('scaling shows throughput relative to one HSM', async (t) => {
  t.match(full, /\| sign-rsa2048-pss \| 2 \| 1990 \| 2\.00 \| 35\.0 \| 64 \|/);
  t.match(full, /500 operations per point/);
});

t.test('TLS results list every server and the ratios, and say when nginx was skipped', async (t) => {
  t.match(full, /\| hsmproxy, soft key \| p256 \| full \| 400 \|/);
  t.match(full, /\| node:tls, key file \| p256 \| full \| 600 \|/);
  t.match(full, /\| hsmproxy, key in 2 HSMs \(hsm2m\.medium\) \| p256 \| full \| 300 \| 45\.0 \| 70\.0 \| 90\.0 \| 1\.60 \| 0\.40 \|/);
  t.match(full, /\| hsmproxy \(soft key\) \| node:tls \| p256 \| full \| 0\.67 \| 0\.50 \|/);
  t.match(full, /nginx: nginx is not installed/);
});

t.test('resumed rows say what share of their handshakes really resumed, and a point\'s note is printed', async (t) => {
  t.match(full, /\| hsmproxy, soft key \| p256 \| resumed \(99% resumed\) \| 800 \|/);
  t.match(full, /- node:tls, key file, p256 resumed: only 2000 of 5000 handshakes resumed/);
});

t.test('proxy results and the hsmproxy/nginx ratio appear', async (t) => {
  t.match(full, /\| nginx \| 26000 \| 0\.50 \|/);
  t.match(full, /hsmproxy ÷ nginx: 0\.15x the requests\/s/);
});

t.test('profiles list the top self-time functions; charts and findings are included', async (t) => {
  t.match(full, /\| `writeBuffer` \| \(native\) \| 1751\.0 \| 46\.3 \|/);
  t.match(full, /!\[HSM throughput vs number of HSMs\]\(hsm-scaling-throughput\.svg\)/);
  t.match(full, /## Findings\n\n- writeBuffer is the loopback write\./);
});

t.test('parts that were not run say so instead of disappearing', async (t) => {
  const bare = renderSummary({ hsm: [], charts: [] });
  t.match(bare, /_No HSM results in this run\._/);
  t.equal(bare.match(/_Not run\._/g)?.length, 3, 'TLS, proxy and profile');
  t.notMatch(bare, /## Charts/);
});

t.test('numeric columns are right-aligned in the Markdown tables', async (t) => {
  t.match(full, /\| operation \| HSMs \| in flight \| ops\/s \|.*\n\|---\|---:\|---:\|---:\|/);
});

t.test('a PKCS#11 sweep is set beside the simulated HSM in one table', async (t) => {
  const sim = fixture.hsm.find((r) => !r.scaling)!;
  const softhsm: HsmBenchResult = { ...sim, profile: undefined, targets: ['PKCS#11 token "bench" (/usr/lib/softhsm/libsofthsm2.so)'], knees: [], points: sim.points.map((p) => ({ ...p, hsms: null, opsPerSec: 700 })) };
  const md = renderSummary({ ...fixture, hsm: [...fixture.hsm, softhsm], charts: [] });
  const section = md.slice(md.indexOf('### Simulated HSM and PKCS#11 token, side by side'));
  t.ok(md.includes('### Simulated HSM and PKCS#11 token, side by side'));
  const p = sim.points[0]!;
  t.match(section, new RegExp(`\\| ${p.op} \\| ${p.concurrency} \\| simulated, ${sim.profile} \\| ${Math.round(p.opsPerSec)} \\|`), 'the simulated row');
  t.match(section, new RegExp(`\\| ${p.op} \\| ${p.concurrency} \\| PKCS#11 token "bench" \\(/usr/lib/softhsm/libsofthsm2\\.so\\) \\| 700 \\|`), 'the SoftHSM row');
  t.notOk(full.includes('### Simulated HSM and PKCS#11 token'), 'no table without a PKCS#11 run');
});
