// The Markdown summary of a benchmark run (bench/results/SUMMARY.md): HSM sweeps and scaling,
// TLS handshakes against node:tls and nginx, keep-alive proxying against nginx, and the top CPU
// costs from profiles. Also the shapes of the bench/ result files it reads.
import type { HsmBenchResult } from './hsm.js';

/** Handshake latency percentiles as the C client measures them (connect + handshake), ms. */
export interface Percentiles { p50: number; p95: number; p99: number; max: number; mean: number }

/** One server/key/mode point of bench/tls.ts. */
export interface TlsBenchPoint {
  server: 'hsmproxy' | 'node:tls' | 'nginx';
  keySource: 'soft' | 'file' | 'cluster';
  hsms?: number;
  profile?: string;
  key: 'rsa2048' | 'p256';
  mode: 'full' | 'resumed';
  /** Connections in flight, when not the run's default (offered-load sweep). */
  threads?: number;
  connections: number;
  errors: number;
  perSecond: number;
  latencyMs: Percentiles;
  serverCpuMsPerHandshake: number;
  hsmCpuMsPerHandshake?: number;
  /** Resumed mode: how many of `connections` the client saw resumed. */
  resumed?: number;
  /** hsmproxy: when the server flight left ('whole' after the signature, 'split' around it). */
  serverFlight?: 'whole' | 'split';
  /** hsmproxy: socket writes per connection (handshake, one response, close). */
  writesPerConnection?: number;
  note?: string;
}

/** bench/results/tls.json. */
export interface TlsBenchResult {
  kind: 'tls';
  date: string;
  node: string;
  cpus: number;
  loadavg: number[];
  loadavgAfter: number[];
  client: string;
  nginx: string | null;
  nginxSkipped: string | null;
  secondsPerPoint: number;
  threads: number;
  points: TlsBenchPoint[];
  ratios: Array<{
    ours: string; baseline: string; key: string; mode: string; perSecond: number; cpuPerHandshake: number;
  }>;
  /** Offered-load sweep: the same points at several connection counts. */
  sweep?: { date: string; loadavg: number[]; points: TlsBenchPoint[] };
  /** The server flight in one write after the signature against split around it, alternated. */
  flight?: { date: string; loadavg: number[]; points: TlsBenchPoint[] };
}

/** One proxy of bench/proxy.ts. */
export interface ProxyBenchPoint {
  server: 'hsmproxy' | 'hsmproxy (node:tls listener)' | 'nginx' | 'upstream (direct)' | `hsmproxy, ${number} workers` | `nginx, ${number} workers`
    | 'hsmproxy, h2' | 'hsmproxy (node:tls listener), h2' | 'nginx, h2';
  requestsPerSec: number;
  requests: number;
  errors: number;
  latencyMs: Percentiles;
  serverCpuMsPerRequest: number;
}

/** bench/results/proxy.json. */
export interface ProxyBenchResult {
  kind: 'proxy';
  date: string;
  node: string;
  cpus: number;
  loadavg: number[];
  client: string;
  nginx: string | null;
  nginxSkipped: string | null;
  seconds: number;
  connections: number;
  points: ProxyBenchPoint[];
  ratios: Array<{ baseline: string; requestsPerSec: number; cpuPerRequest: number }>;
}

/** One function's share of a CPU profile. */
export interface ProfileEntry { functionName: string; location: string; selfMs: number; selfPct: number }

/** bench/results/profile.json: the top self-time functions of each profiled path. */
export interface ProfileResult {
  kind: 'profile';
  date: string;
  loadavg: number[];
  runs: Array<{ name: string; what: string; totalMs: number; top: ProfileEntry[] }>;
}

/** What the summary is made from; absent parts are said to be absent. */
export interface SummaryInput {
  hsm: HsmBenchResult[];
  tls?: TlsBenchResult;
  proxy?: ProxyBenchResult;
  profile?: ProfileResult;
  /** Chart files (relative to the summary) and their captions. */
  charts: Array<{ file: string; caption: string }>;
  /** Findings written by hand (profile conclusions, fixes), appended verbatim. */
  notes?: string;
}

function f(x: number, digits = 0): string {
  return x.toFixed(digits);
}

function ms(x: number): string {
  return x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0);
}

function load(l: number[]): string {
  return l.map((x) => x.toFixed(2)).join(' / ');
}

/** A Markdown table; columns whose every cell is a number (or –) are right-aligned. */
function table(head: string[], rows: string[][]): string[] {
  const numeric = head.map((_, i) => rows.length > 0 && rows.every((r) => /^(-?[\d.]+|–)$/.test(r[i] ?? '')));
  return [`| ${head.join(' | ')} |`, `|${numeric.map((n) => (n ? '---:' : '---')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
}

/** The single-HSM sweeps and the PKCS#11 sweep in one table, by operation and concurrency. */
function sideBySide(results: HsmBenchResult[]): string[] {
  const sweeps = results.filter((r) => !r.scaling && r.targets.length === 1);
  const pkcs11 = sweeps.filter((r) => r.targets[0]!.startsWith('PKCS#11'));
  if (pkcs11.length === 0 || pkcs11.length === sweeps.length) return [];
  const ops = new Set(pkcs11.flatMap((r) => r.points.map((p) => `${p.op}@${p.concurrency}`)));
  const rows = sweeps.flatMap((r) => r.points.filter((p) => ops.has(`${p.op}@${p.concurrency}`)).map((p) => ({ r, p })))
    .sort((a, b) => a.p.op.localeCompare(b.p.op) || a.p.concurrency - b.p.concurrency);
  return [
    '### Simulated HSM and PKCS#11 token, side by side', '',
    ...table(['operation', 'in flight', 'target', 'ops/s', 'p50 ms', 'p99 ms'], rows.map(({ r, p }) => [
      p.op, String(p.concurrency), r.targets[0]!.startsWith('PKCS#11') ? r.targets[0]! : `simulated, ${r.profile ?? '?'}`, f(p.opsPerSec), ms(p.latency.p50.totalMs), ms(p.latency.p99.totalMs),
    ])),
    '',
  ];
}

function hsmSection(results: HsmBenchResult[]): string[] {
  const out: string[] = ['## HSM operations (`hsmproxy bench hsm`)', ''];
  if (results.length === 0) return [...out, '_No HSM results in this run._', ''];
  out.push('Each latency is split using the timings every HSM response carries: *queue* is the wait for a free crypto unit, ' +
    '*service* the time on the unit (real crypto plus the rest of the capacity profile\'s service time), *network* everything else ' +
    '(client library, protocol, mTLS, loopback, both event loops). The split shown for a percentile is that request\'s own.', '');
  for (const r of results) {
    const budget = 'count' in r.budget ? `${r.budget.count} operations per point` : `${r.budget.seconds} s per point`;
    out.push(`### ${r.scaling ? 'Scaling' : 'Concurrency sweep'}: ${r.targets.length === 1 ? r.targets[0] : `${r.targets.length} embedded clusters, profile ${r.profile ?? '?'}`}`, '');
    out.push(`${r.date}, ${budget}, load average ${load(r.loadavg)} at the start.`, '');
    out.push(...table(['operation', 'HSMs', 'in flight', 'ops/s', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'p99 network + queue + service ms'], r.points.map((p) => [
      p.op, String(p.hsms ?? '–'), String(p.concurrency), f(p.opsPerSec), ms(p.latency.p50.totalMs), ms(p.latency.p95.totalMs), ms(p.latency.p99.totalMs), ms(p.latency.max.totalMs),
      p.splitReported ? `${ms(p.latency.p99.networkMs)} + ${ms(p.latency.p99.queueMs)} + ${ms(p.latency.p99.serviceMs)}` : 'not reported',
    ])));
    out.push('');
    for (const k of r.knees) out.push(`- knee of ${k.op}${k.hsms ? ` on ${k.hsms} HSM${k.hsms === 1 ? '' : 's'}` : ''}: ${k.concurrency === null ? 'none within the sweep' : `**${k.concurrency} in flight**`}`);
    if (r.knees.length) out.push('', `Knee rule: ${r.knees[0]!.rule}.`, '');
    if (r.scaling) {
      const first = new Map<string, number>();
      out.push(...table(['operation', 'HSMs', 'ops/s', 'x 1 HSM', 'p99 ms', 'in flight'], r.scaling.map((s) => {
        if (!first.has(s.op)) first.set(s.op, s.opsPerSec);
        return [
          s.op, String(s.hsms), f(s.opsPerSec), (s.opsPerSec / (first.get(s.op) || 1)).toFixed(2), ms(s.p99Ms),
          String(s.concurrency),
        ];
      })));
      out.push('');
    }
  }
  out.push(...sideBySide(results));
  return out;
}

function serverName(p: TlsBenchPoint): string {
  if (p.keySource === 'cluster') return `hsmproxy, key in ${p.hsms} HSM${p.hsms === 1 ? '' : 's'} (${p.profile})`;
  if (p.keySource === 'soft') return 'hsmproxy, soft key';
  return `${p.server}, key file`;
}

function tlsSection(r: TlsBenchResult | undefined): string[] {
  const out = ['## TLS 1.3 handshakes (`npm run bench:tls`)', ''];
  if (!r) return [...out, '_Not run._', ''];
  out.push(`${r.date}, ${r.secondsPerPoint} s per point, client: ${r.client}. Load average ${load(r.loadavg)} before, ${load(r.loadavgAfter)} after.`, '');
  if (r.nginxSkipped) out.push(`nginx: ${r.nginxSkipped}`, '');
  else if (r.nginx) out.push(`nginx ${r.nginx}, one worker process, same certificate and key file.`, '');
  out.push(...table(['server', 'key', 'handshake', 'handshakes/s', 'p50 ms', 'p95 ms', 'p99 ms', 'server CPU ms each', 'HSM CPU ms each'], r.points.map((p) => [
    serverName(p), p.key, p.mode + (p.resumed !== undefined ? ` (${f((p.resumed / Math.max(1, p.connections)) * 100)}% resumed)` : ''), f(p.perSecond), ms(p.latencyMs.p50), ms(p.latencyMs.p95), ms(p.latencyMs.p99), p.serverCpuMsPerHandshake.toFixed(2), p.hsmCpuMsPerHandshake === undefined ? '–' : p.hsmCpuMsPerHandshake.toFixed(2),
  ])));
  out.push('');
  // A point that measured something other than what its row says must say so next to the figures.
  for (const p of r.points.filter((x) => x.note)) out.push(`- ${serverName(p)}, ${p.key} ${p.mode}: ${p.note}`);
  if (r.points.some((x) => x.note)) out.push('');
  if (r.ratios.length) {
    out.push('Ratios (hsmproxy ÷ baseline; CPU column is baseline CPU ÷ ours, with the HSM processes\' CPU counted as ours, so > 1 means hsmproxy spends less):', '');
    out.push(...table(['hsmproxy', 'baseline', 'key', 'handshake', 'handshakes/s ratio', 'CPU per handshake ratio'], r.ratios.map((x) => [x.ours, x.baseline, x.key, x.mode, x.perSecond.toFixed(2), x.cpuPerHandshake.toFixed(2)])));
    out.push('');
  }
  if (r.flight) {
    out.push(`Server flight (${r.flight.date}, load average ${load(r.flight.loadavg)}): full handshakes with the flight in one write after the signature (whole) or ServerHello..Certificate before it (split), run alternately.`, '');
    out.push(...table(['server', 'key', 'flight', 'handshakes/s', 'p50 ms', 'p99 ms', 'server CPU ms each', 'HSM CPU ms each', 'writes per connection'], r.flight.points.map((p) => [
      serverName(p), p.key, p.serverFlight ?? 'whole', f(p.perSecond), ms(p.latencyMs.p50), ms(p.latencyMs.p99), p.serverCpuMsPerHandshake.toFixed(2),
      p.hsmCpuMsPerHandshake === undefined ? '–' : p.hsmCpuMsPerHandshake.toFixed(2), p.writesPerConnection === undefined ? '–' : p.writesPerConnection.toFixed(2),
    ])));
    out.push('');
  }
  if (r.sweep) {
    out.push(`Offered load (${r.sweep.date}, load average ${load(r.sweep.loadavg)}): full P-256 handshakes with more connections in flight.`, '');
    out.push(...table(['server', 'in flight', 'handshakes/s', 'p50 ms', 'p95 ms', 'p99 ms', 'server CPU ms each', 'HSM CPU ms each'], r.sweep.points.map((p) => [
      serverName(p), String(p.threads ?? r.threads), f(p.perSecond), ms(p.latencyMs.p50), ms(p.latencyMs.p95), ms(p.latencyMs.p99), p.serverCpuMsPerHandshake.toFixed(2), p.hsmCpuMsPerHandshake === undefined ? '–' : p.hsmCpuMsPerHandshake.toFixed(2),
    ])));
    out.push('');
  }
  return out;
}

function proxySection(r: ProxyBenchResult | undefined): string[] {
  const out = ['## Keep-alive requests through the proxy (`npm run bench:proxy`)', ''];
  if (!r) return [...out, '_Not run._', ''];
  out.push(`${r.date}, ${r.seconds} s per server, ${r.connections} keep-alive connections, client: ${r.client}. Load average ${load(r.loadavg)}.`, '');
  if (r.nginxSkipped) out.push(`nginx: ${r.nginxSkipped}`, '');
  out.push(...table(['server', 'requests/s', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'server CPU ms each', 'errors'], r.points.map((p) => [
    p.server, f(p.requestsPerSec), ms(p.latencyMs.p50), ms(p.latencyMs.p95), ms(p.latencyMs.p99), ms(p.latencyMs.max),
    p.serverCpuMsPerRequest.toFixed(3), String(p.errors),
  ])));
  out.push('');
  for (const x of r.ratios) out.push(`- hsmproxy ÷ ${x.baseline}: ${x.requestsPerSec.toFixed(2)}x the requests/s; ${x.baseline} CPU ÷ hsmproxy CPU per request: ${x.cpuPerRequest.toFixed(2)}`);
  out.push('');
  return out;
}

function profileSection(r: ProfileResult | undefined): string[] {
  const out = ['## Where the CPU goes (`npm run bench:profile`, node --cpu-prof)', ''];
  if (!r) return [...out, '_Not run._', ''];
  out.push(`${r.date}, load average ${load(r.loadavg)}.`, '');
  for (const run of r.runs) {
    out.push(`### ${run.name}: ${run.what}`, '', `${f(run.totalMs)} ms of samples. Top self time:`, '');
    out.push(...table(['function', 'where', 'self ms', 'self %'], run.top.map((e) => [`\`${e.functionName || '(anonymous)'}\``, e.location, f(e.selfMs, 1), e.selfPct.toFixed(1)])));
    out.push('');
  }
  return out;
}

/** Renders SUMMARY.md. */
export function renderSummary(input: SummaryInput): string {
  const all = [
    ...input.hsm.map((h) => h.loadavg), input.tls?.loadavg, input.proxy?.loadavg,
  ].filter((x): x is number[] => Array.isArray(x));
  const peak = all.length ? Math.max(...all.map((l) => l[0] ?? 0)) : undefined;
  const cpus = input.hsm[0]?.cpus ?? input.tls?.cpus ?? input.proxy?.cpus;
  const lines: string[] = [
    '# hsmproxy benchmark summary', '',
    `Measured on one machine in one session (${cpus ?? '?'} CPUs, Node ${input.hsm[0]?.node ?? input.tls?.node ?? '?'}). ` +
      `Other work shared the CPUs while this ran (1-minute load average up to ${peak === undefined ? '?' : peak.toFixed(2)}), so absolute numbers are low and noisy; ` +
      'read the ratios and the shapes of the curves, which were measured side by side.', '',
  ];
  // What the numbers say comes first; the tables and profiles it draws on follow.
  if (input.notes) lines.push('## Findings', '', input.notes.trim(), '');
  if (input.charts.length) {
    lines.push('## Charts', '');
    for (const c of input.charts) lines.push(`![${c.caption}](${c.file})`, '');
  }
  lines.push(
    ...hsmSection(input.hsm), ...tlsSection(input.tls), ...proxySection(input.proxy), ...profileSection(input.profile)
  );
  return lines.join('\n');
}
