// Turns the result files under bench/results/ into SVG charts and SUMMARY.md (hand-written
// findings from bench/FINDINGS.md are appended). Reads whatever is there; a missing part is
// reported as not run.
// Run: npm run bench:report
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HsmBenchResult } from '../src/bench/hsm.js';
import { renderSummary, type ProfileResult, type ProxyBenchResult, type SummaryInput, type TlsBenchResult } from '../src/bench/summary.js';
import { renderLineChart, type Series } from '../src/bench/svg.js';
import { formatComparison, type SpeedComparison } from './lib/openssl-speed.js';

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(here, 'results');

function read<T>(file: string): T | undefined {
  const p = join(dir, file);
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as T) : undefined;
}

// hsm-vs-openssl.json is a comparison table, not a sweep: shown as such below.
const hsm = readdirSync(dir).filter((f) => /^hsm-.*\.json$/.test(f) && f !== 'hsm-vs-openssl.json').sort()
  .map((f) => read<HsmBenchResult>(f)!);
const vsOpenssl = read<SpeedComparison>('hsm-vs-openssl.json');
const tls = read<TlsBenchResult>('tls.json');
const proxy = read<ProxyBenchResult>('proxy.json');
const profile = read<ProfileResult>('profile.json');
const charts: SummaryInput['charts'] = [];

function chart(file: string, caption: string, svg: string): void {
  writeFileSync(join(dir, file), svg);
  charts.push({ file, caption });
}

// Throughput and p99 against the number of HSMs, one chart per profile (their scales differ by 10x),
// one line per operation.
for (const r of hsm.filter((x) => x.scaling)) {
  const ops = [...new Set(r.scaling!.map((s) => s.op))];
  const series = (pick: (s: NonNullable<HsmBenchResult['scaling']>[number]) => number): Series[] =>
    ops.map((op) => ({ name: op, points: r.scaling!.filter((s) => s.op === op).map((s) => [s.hsms, pick(s)] as [number, number]) }));
  chart(`hsm-scaling-throughput-${r.profile}.svg`, `HSM throughput vs number of HSMs (${r.profile})`, renderLineChart({ title: `Operations/s vs number of HSMs, profile ${r.profile}`, xLabel: 'HSMs in the cluster', yLabel: 'operations/s (best point of the sweep)', series: series((s) => s.opsPerSec) }));
  chart(`hsm-scaling-p99-${r.profile}.svg`, `p99 latency vs number of HSMs (${r.profile})`, renderLineChart({ title: `p99 at the best-throughput point vs number of HSMs, ${r.profile}`, xLabel: 'HSMs in the cluster', yLabel: 'p99 latency (ms)', series: series((s) => s.p99Ms) }));
}

// Latency percentiles against offered load (requests in flight), one chart per operation and profile,
// from the sweeps (the every-operation runs measure 3 loads each: a table, not a curve).
for (const r of hsm.filter((x) => !x.scaling && new Set(x.points.map((p) => p.concurrency)).size >= 4)) {
  for (const op of [...new Set(r.points.map((p) => p.op))].filter((o) => o.startsWith('sign-'))) {
    const pts = r.points.filter((p) => p.op === op);
    const pick = (k: 'p50' | 'p95' | 'p99' | 'max'): Series => ({ name: k, points: pts.map((p) => [p.concurrency, p.latency[k].totalMs] as [number, number]) });
    // A PKCS#11 run has no capacity profile: it is the token the run measured.
    const where = r.profile ? `1 HSM, ${r.profile}` : 'PKCS#11 token';
    chart(`hsm-latency-${op}-${r.profile ?? 'pkcs11'}.svg`, `${op} latency percentiles vs requests in flight (${where})`,
      renderLineChart({ title: `${op}, ${where}: latency vs requests in flight`, xLabel: 'requests in flight (log scale)', yLabel: 'latency (ms)', xLog: true, series: [pick('p50'), pick('p95'), pick('p99'), pick('max')] }));
  }
}

// Full handshakes/s against the number of HSMs holding the key, with the soft-key and node:tls levels.
if (tls) {
  const cl = tls.points.filter((p) => p.keySource === 'cluster');
  const series: Series[] = [];
  for (const key of ['rsa2048', 'p256'] as const) {
    for (const prof of [...new Set(cl.map((p) => p.profile))]) {
      series.push({ name: `${key}, HSM ${prof}`, points: cl.filter((p) => p.key === key && p.profile === prof).map((p) => [p.hsms!, p.perSecond] as [number, number]) });
    }
  }
  if (series.length) chart('tls-handshakes-vs-hsms.svg', 'Full TLS 1.3 handshakes/s vs HSMs holding the key', renderLineChart({ title: 'hsmproxy full TLS 1.3 handshakes/s vs HSMs holding the key', xLabel: 'HSMs in the cluster', yLabel: 'handshakes/s', series }));
}

// Handshake latency and rate against connections in flight (the offered-load sweep).
if (tls?.sweep) {
  const groups = new Map<string, typeof tls.sweep.points>();
  for (const p of tls.sweep.points) {
    const name = p.keySource === 'cluster' ? `1 HSM ${p.profile}` : 'soft key';
    groups.set(name, [...(groups.get(name) ?? []), p]);
  }
  const lat: Series[] = [];
  const rate: Series[] = [];
  for (const [name, pts] of groups) {
    for (const k of ['p50', 'p99'] as const) lat.push({ name: `${name} ${k}`, points: pts.map((p) => [p.threads ?? tls.threads, p.latencyMs[k]] as [number, number]) });
    rate.push({ name, points: pts.map((p) => [p.threads ?? tls.threads, p.perSecond] as [number, number]) });
  }
  chart('tls-latency-vs-load.svg', 'Handshake latency percentiles vs connections in flight', renderLineChart({ title: 'hsmproxy P-256 handshake latency vs connections in flight', xLabel: 'connections in flight (log scale)', yLabel: 'handshake latency (ms)', xLog: true, series: lat }));
  chart('tls-rate-vs-load.svg', 'Handshakes/s vs connections in flight', renderLineChart({ title: 'hsmproxy P-256 full handshakes/s vs connections in flight', xLabel: 'connections in flight (log scale)', yLabel: 'handshakes/s', xLog: true, series: rate }));
}

const findings = join(here, 'FINDINGS.md');
const summary = renderSummary({ hsm, ...(tls ? { tls } : {}), ...(proxy ? { proxy } : {}), ...(profile ? { profile } : {}), charts, ...(existsSync(findings) ? { notes: readFileSync(findings, 'utf8') } : {}) });
const comparison = vsOpenssl
  ? `\n## The HSM against \`openssl speed\` (\`BENCH_RUNS=hsm-vs-openssl npm run bench:hsm\`)\n\n${vsOpenssl.date}, ${vsOpenssl.openssl}.\n\n\`\`\`\n${formatComparison(vsOpenssl)}\`\`\`\n`
  : '';
writeFileSync(join(dir, 'SUMMARY.md'), summary + comparison);
console.log(`wrote bench/results/SUMMARY.md and ${charts.length} charts`);
