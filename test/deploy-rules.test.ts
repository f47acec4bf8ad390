// deploy/prometheus (scrape config, alert rules and their promtool unit tests) and deploy/grafana
// (dashboard and provisioning): valid for their tools, every alert exercised, and every metric
// they read present in a real /metrics scrape of a running hsmproxy — a renamed metric fails here.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { repoRoot } from './helpers/cli.js';
import { exposedFamilies, metricNamesIn, skipWithout, promtool, rulesOf, unknownNames } from './helpers/prometheus.js';
import { baseYaml, startHarness } from './helpers/proxy-harness.js';

const promDir = join(repoRoot, 'deploy', 'prometheus');
const grafanaDir = join(repoRoot, 'deploy', 'grafana');
const rules = rulesOf(readFileSync(join(promDir, 'alerts.yml'), 'utf8'));
const alerts = rules.filter((r) => r.alert);
const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));

interface Panel { id: number; type: string; title: string; gridPos?: object; datasource?: { uid?: string }; targets?: Array<{ expr?: string; refId?: string; datasource?: { uid?: string } }> }
interface Dashboard { uid: string; title: string; schemaVersion: number; panels: Panel[]; templating: { list: Array<{ name: string; type: string; query: string }> } }
const dashboard = JSON.parse(readFileSync(join(grafanaDir, 'hsmproxy.json'), 'utf8')) as Dashboard;
const dashboardExprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((q) => q.expr ?? ''));

t.test('promtool check rules accepts alerts.yml', { skip: skipWithout('promtool') }, async (t) => {
  const r = promtool(['check', 'rules', 'alerts.yml'], promDir);
  t.equal(r.code, 0, r.out);
  t.match(r.out, new RegExp(`SUCCESS: ${rules.length} rules found`));
});

t.test('promtool check config accepts prometheus.yml with its rule file', { skip: skipWithout('promtool') }, async (t) => {
  const r = promtool(['check', 'config', 'prometheus.yml'], promDir);
  t.equal(r.code, 0, r.out);
});

t.test('promtool test rules: every alert fires on its input series and stays quiet on healthy ones', { skip: skipWithout('promtool') }, async (t) => {
  const r = promtool(['test', 'rules', 'alerts.test.yml'], promDir);
  t.equal(r.code, 0, r.out);
  t.match(r.out, /SUCCESS/);
});

t.test('the alerts the issue lists are all there, each with a severity and a summary', async (t) => {
  const names = alerts.map((a) => a.alert);
  for (const want of ['HsmproxyHsmDown', 'HsmproxyHsmSignLatencyOverSlo', 'HsmproxyHsmBusyRejections', 'HsmproxyHsmKeysNearCapacity',
    'HsmproxyHandshakeFailuresRising', 'HsmproxyCertificateExpiringSoon', 'HsmproxyFewerThanTwoHealthyHsms']) t.ok(names.includes(want), want);
  for (const a of alerts as Array<{ alert: string; labels?: { severity?: string }; annotations?: { summary?: string } }>) {
    t.match(a.labels?.severity, /^(critical|warning|info)$/, `${a.alert} has a severity`);
    t.ok(a.annotations?.summary, `${a.alert} has a summary`);
  }
});

t.test('every alert has a promtool unit test that expects it to fire', async (t) => {
  const tests = parse(readFileSync(join(promDir, 'alerts.test.yml'), 'utf8')) as { tests: Array<{ alert_rule_test: Array<{ alertname: string; exp_alerts: unknown[] }> }> };
  const fired = new Set(tests.tests.flatMap((x) => x.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
  for (const a of alerts) t.ok(fired.has(a.alert!), `${a.alert} is exercised`);
});

t.test('the latency SLO is one recording rule the latency alert compares against', async (t) => {
  const slo = rules.find((r) => r.record === 'hsmproxy:hsm_sign_latency_slo_seconds');
  t.match(slo?.expr, /^vector\(0\.0\d+\)$/);
  t.match(alerts.find((a) => a.alert === 'HsmproxyHsmSignLatencyOverSlo')?.expr, /hsmproxy:hsm_sign_latency_slo_seconds/);
});

t.test('the metric-name check catches a name hsmproxy does not export', async (t) => {
  const families = new Map([['hsmproxy_hsm_up', 'gauge'], ['hsmproxy_x_seconds', 'histogram']]);
  t.same(metricNamesIn('sum by (hsm) (rate(hsmproxy_x_seconds_bucket{op="hsmproxy_not_a_metric"}[5m])) > hsmproxy:slo'), ['hsmproxy_x_seconds_bucket', 'hsmproxy:slo']);
  t.same(unknownNames(['hsmproxy_hsm_up', 'hsmproxy_x_seconds_bucket', 'hsmproxy_hsm_upp', 'hsmproxy_hsm_up_count', 'hsmproxy:slo'], families, new Set()), ['hsmproxy_hsm_upp', 'hsmproxy_hsm_up_count', 'hsmproxy:slo']);
});

t.test('every metric the rules, their unit tests and the dashboard read is in a real /metrics scrape', async (t) => {
  const h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]'));
  const text = await (await fetch(`http://127.0.0.1:${h.proxy.adminAddress()!.port}/metrics`)).text();
  const families = exposedFamilies(text);
  t.ok(families.size > 20, `the scrape lists the metric families (${families.size})`);
  const testSeries = (parse(readFileSync(join(promDir, 'alerts.test.yml'), 'utf8')) as { tests: Array<{ input_series: Array<{ series: string }> }> })
    .tests.flatMap((x) => x.input_series.map((s) => s.series));
  for (const [what, exprs] of [['alerts.yml', rules.map((r) => r.expr)], ['alerts.test.yml input series', testSeries], ['hsmproxy.json', dashboardExprs]] as const) {
    const names = new Set(exprs.flatMap(metricNamesIn));
    t.ok(names.size > 0, `${what} reads hsmproxy metrics`);
    t.same(unknownNames(names, families, recorded), [], `${what}: every name exists`);
  }
});

t.test('the dashboard is a Grafana dashboard model with a datasource variable', async (t) => {
  t.equal(dashboard.uid, 'hsmproxy');
  t.ok(dashboard.title);
  t.ok(dashboard.schemaVersion >= 36, 'a current schema version');
  const ds = dashboard.templating.list.find((v) => v.type === 'datasource');
  t.equal(ds?.query, 'prometheus', 'a Prometheus datasource variable');
  const ids = dashboard.panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of dashboard.panels.filter((x) => x.type !== 'row')) {
    t.ok(p.gridPos, `${p.title} has a position`);
    t.equal(p.datasource?.uid, `\${${ds!.name}}`, `${p.title} uses the datasource variable`);
    t.ok(p.targets && p.targets.length > 0 && p.targets.every((q) => q.expr && q.refId), `${p.title} has queries`);
  }
});

t.test('the dashboard has the panels the issue lists', async (t) => {
  const reads = (title: RegExp, metric: RegExp) => {
    const p = dashboard.panels.find((x) => title.test(x.title));
    t.ok(p, `a panel titled ${title}`);
    t.ok(p?.targets?.some((q) => metric.test(q.expr ?? '')), `${title} reads ${metric}`);
  };
  reads(/full vs resumed/, /hsmproxy_tls_handshake_duration_seconds_count/);
  reads(/Handshake latency percentiles/, /histogram_quantile\(0\.99, .*hsmproxy_tls_handshake_duration_seconds_bucket/);
  reads(/waiting for signatures/, /hsmproxy_tls_handshake_sign_wait_seconds/);
  reads(/network \/ queue \/ crypto/, /hsmproxy_hsm_queue_wait_seconds/);
  reads(/network \/ queue \/ crypto/, /hsmproxy_hsm_service_seconds/);
  reads(/utilisation/, /hsmproxy_hsm_utilisation_ratio/);
  reads(/in flight/, /hsmproxy_hsm_in_flight/);
  reads(/Keys occupied/, /hsmproxy_hsm_keys/);
  reads(/recommended vs actual/, /hsmproxy_cluster_recommended_hsms/);
  reads(/recommended vs actual/, /hsmproxy_cluster_hsms|hsmproxy_hsm_up/);
  reads(/by client protocol/, /sum by \(protocol\) .*hsmproxy_http_request_duration_seconds_count/);
  reads(/HTTP\/2 connections closed/, /hsmproxy_http2_connections_closed_total/);
});

t.test('Grafana provisioning: a Prometheus datasource and a file provider for the dashboard folder', async (t) => {
  const ds = parse(readFileSync(join(grafanaDir, 'provisioning', 'datasources', 'prometheus.yml'), 'utf8')) as { apiVersion: number; datasources: Array<{ type: string; url: string; uid: string }> };
  t.equal(ds.apiVersion, 1);
  t.match(ds.datasources[0], { type: 'prometheus', url: 'http://prometheus:9090' });
  const dp = parse(readFileSync(join(grafanaDir, 'provisioning', 'dashboards', 'hsmproxy.yml'), 'utf8')) as { apiVersion: number; providers: Array<{ type: string; options: { path: string } }> };
  t.equal(dp.apiVersion, 1);
  t.equal(dp.providers[0]?.type, 'file');
  const compose = readFileSync(join(repoRoot, 'deploy', 'compose.yaml'), 'utf8');
  t.ok(compose.includes(`./grafana/hsmproxy.json:${dp.providers[0]!.options.path}/hsmproxy.json`), 'compose mounts the dashboard where the provider looks');
});
