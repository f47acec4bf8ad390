// Prometheus for the deploy tests: the Debian `prometheus` package's binaries (skipped cleanly when
// missing, except under CI, which installs them), metric names read out of PromQL, and a real
// Prometheus server on loopback with a temp data directory, stopped by PID.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { freePort } from './hsm-cluster.js';

/** Whether `name` runs (it answers --version). */
export function hasBinary(name: string): boolean {
  return spawnSync(name, ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * A tap `skip` option: the reason to skip when `binary` is missing, else false. Under CI (which
 * installs the Debian package prometheus in .ci/run) a missing binary is not skipped: it fails.
 */
export function skipWithout(binary: string): string | false {
  if (hasBinary(binary) || process.env.CI) return false;
  return `${binary} is not installed (apt-get install prometheus)`;
}

/** Runs promtool; never rejects. */
export function promtool(args: string[], cwd: string): { code: number | null; out: string } {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

// PromQL identifiers that start like ours: metric names (hsmproxy_…) and recording rules (hsmproxy:…).
const OUR_NAME = /\bhsmproxy[a-zA-Z0-9_:]*/g;

/** The hsmproxy metric and recording-rule names an expression reads (label values are ignored). */
export function metricNamesIn(expr: string): string[] {
  const code = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""');
  return [...new Set(code.match(OUR_NAME) ?? [])];
}

/** Metric families (name → type) from a Prometheus text exposition, from its # TYPE lines. */
export function exposedFamilies(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.set(m[1]!, m[2]!);
  return out;
}

/** Names in `names` that neither `families` exposes nor a recording rule in `recorded` defines. */
export function unknownNames(names: Iterable<string>, families: Map<string, string>, recorded: Set<string>): string[] {
  const missing: string[] = [];
  for (const name of names) {
    if (name.includes(':')) {
      if (!recorded.has(name)) missing.push(name);
      continue;
    }
    if (families.has(name)) continue;
    const base = /^(.*)_(bucket|sum|count)$/.exec(name)?.[1];
    if (base && families.get(base) === 'histogram') continue;
    missing.push(name);
  }
  return missing;
}

/** One rule of a rule file. */
export interface Rule { alert?: string; record?: string; expr: string; for?: string }

/** The rules of a Prometheus rule file. */
export function rulesOf(text: string): Rule[] {
  const doc = parse(text) as { groups: Array<{ rules: Rule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

/** A running Prometheus. */
export interface RunningPrometheus { url: string; child: ChildProcess; stop(): Promise<void> }

/** Starts Prometheus on a loopback port with `config` written into `dir`; resolves once ready. */
export async function startPrometheus(dir: string, config: string): Promise<RunningPrometheus> {
  const file = join(dir, 'prometheus.yml');
  await writeFile(file, config);
  const port = await freePort();
  const child = spawn('prometheus', [
    `--config.file=${file}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn', '--web.console.templates=', '--web.console.libraries=',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { log = (log + d).slice(-4000); });
  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
    const timer = setTimeout(() => { if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL'); }, 5000);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`prometheus exited (${child.exitCode}): ${log}`);
    const ok = await fetch(`${url}/-/ready`).then((r) => r.ok, () => false);
    if (ok) return { url, child, stop };
    await new Promise((r) => setTimeout(r, 200));
  }
  await stop();
  throw new Error(`prometheus was not ready within 20 s: ${log}`);
}

/** One alert as Prometheus's /api/v1/alerts reports it. */
export interface ApiAlert { labels: Record<string, string>; state: 'pending' | 'firing'; value: string; activeAt: string }

/** The active (pending or firing) alerts of a running Prometheus. */
export async function activeAlerts(p: RunningPrometheus): Promise<ApiAlert[]> {
  const body = (await (await fetch(`${p.url}/api/v1/alerts`)).json()) as { data: { alerts: ApiAlert[] } };
  return body.data.alerts;
}

/** One sample of a text exposition: `name{labels}` as written, and its value. */
interface Sample { series: string; name: string; value: number }

function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    const series = line.slice(0, cut);
    out.push({ series, name: /^[^{]+/.exec(series)![0], value: Number(line.slice(cut + 1)) });
  }
  return out;
}

/**
 * promtool `input_series` from two scrapes of a real /metrics: counters (and histogram parts)
 * grow every step by what they grew between the scrapes, gauges hold their second value. Gauges
 * named *_not_after_seconds are Unix times: they are shifted so promtool's clock (which starts at
 * 0) sees the same time left as now.
 */
export function seriesFromScrapes(before: string, after: string, steps: number): Array<{ series: string; values: string }> {
  const families = exposedFamilies(after);
  const prior = new Map(samples(before).map((s) => [s.series, s.value]));
  return samples(after).filter((s) => Number.isFinite(s.value)).map((s) => {
    const base = /^(.*)_(bucket|sum|count)$/.exec(s.name)?.[1];
    const type = families.get(s.name) ?? (base ? families.get(base) : undefined);
    if (type === 'counter' || type === 'histogram') {
      const a = prior.get(s.series) ?? 0;
      return { series: s.series, values: `${a}+${s.value - a}x${steps}` };
    }
    const v = s.name.endsWith('_not_after_seconds') ? Math.round(s.value - Date.now() / 1000) : s.value;
    return { series: s.series, values: `${v}x${steps}` };
  });
}
