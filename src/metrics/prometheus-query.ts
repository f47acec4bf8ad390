// The advisor's inputs read back from a Prometheus server that scrapes hsmproxy: the same figures
// the in-process monitor keeps, as PromQL over hsmproxy's metrics. "Sustained" is asked of
// Prometheus directly (a subquery: the lowest 1-minute p99 over the sustain period still over
// the SLO; the highest utilisation over the removal period still under the idle mark), so a
// single call gives the advisor the state it would have built up by watching.
import type { AdvisorConfig, AdvisorState, HsmSample, ScalingStats } from './advisor.js';

/** A Prometheus answer that is not what we asked for. */
export class PrometheusQueryError extends Error {
  readonly code = 'PROXY_ERR_PROMETHEUS';
  constructor(message: string) {
    super(message);
    this.name = 'PrometheusQueryError';
  }
}

interface VectorSample { metric: Record<string, string>; value: [number, string] }

/** Runs one instant query; returns the vector (empty when nothing matched). */
export async function queryPrometheus(base: string, promql: string, timeoutMs = 5000): Promise<VectorSample[]> {
  const url = new URL('api/v1/query', base.endsWith('/') ? base : base + '/');
  url.searchParams.set('query', promql);
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new PrometheusQueryError(`cannot reach Prometheus at ${base} (${cause?.code ?? cause?.message ?? (err as Error).message}); check --prometheus`);
  }
  const body = await res.text();
  let doc: { status?: string; error?: string; data?: { resultType?: string; result?: unknown } };
  try {
    doc = JSON.parse(body) as typeof doc;
  } catch {
    throw new PrometheusQueryError(`${url.origin} did not answer like Prometheus (HTTP ${res.status}, not JSON); check --prometheus`);
  }
  if (doc.status !== 'success') throw new PrometheusQueryError(`Prometheus refused the query ${promql}: ${doc.error ?? `HTTP ${res.status}`}`);
  if (doc.data?.resultType === 'scalar') return [{ metric: {}, value: doc.data.result as [number, string] }];
  if (doc.data?.resultType !== 'vector' || !Array.isArray(doc.data.result)) throw new PrometheusQueryError(`Prometheus answered ${doc.data?.resultType ?? 'nothing'} to ${promql}; expected a vector`);
  return doc.data.result as VectorSample[];
}

const num = (v: VectorSample | undefined): number | undefined => {
  const n = v ? Number(v.value[1]) : NaN;
  return Number.isFinite(n) ? n : undefined;
};

// PromQL range text for a duration in ms: whole seconds.
const range = (ms: number): string => `${Math.max(1, Math.round(ms / 1000))}s`;

/** Window stats and the sustained-state the advisor needs, from Prometheus. */
export async function scalingFromPrometheus(
  base: string, cfg: AdvisorConfig, windowMs: number,
): Promise<{ stats: ScalingStats; state: AdvisorState }> {
  const w = range(windowMs);
  const sign = 'hsmproxy_hsm_request_duration_seconds_bucket{op="sign"}';
  const q = (promql: string) => queryPrometheus(base, promql);
  const p99Of = (metric: string, r: string) => `histogram_quantile(0.99, sum by (le) (rate(${metric}[${r}])))`;
  const [
    p50, p99, qp50, qp99, signs, busy, util, up, keys, keysMax, full, resumed, sustainedP99, sustainedBusy, idleMax,
    changes,
  ] = await Promise.all([
    q(`histogram_quantile(0.5, sum by (le) (rate(${sign}[${w}])))`),
    q(p99Of(sign, w)),
    q(`histogram_quantile(0.5, sum by (le) (rate(hsmproxy_hsm_queue_wait_seconds_bucket{op="sign"}[${w}])))`),
    q(p99Of('hsmproxy_hsm_queue_wait_seconds_bucket{op="sign"}', w)),
    q(`sum(increase(hsmproxy_hsm_requests_total{op="sign",outcome="ok"}[${w}]))`),
    q(`sum(increase(hsmproxy_hsm_requests_total{outcome="HSM_ERR_BUSY"}[${w}]))`),
    q('max by (hsm) (hsmproxy_hsm_utilisation_ratio)'),
    q('max by (hsm) (hsmproxy_hsm_up)'),
    q('sum by (hsm) (hsmproxy_hsm_keys)'),
    q('max by (hsm) (hsmproxy_hsm_keys_max)'),
    q(`sum(rate(hsmproxy_tls_handshake_duration_seconds_count{resumed="false"}[${w}]))`),
    q(`sum(rate(hsmproxy_tls_handshake_duration_seconds_count{resumed="true"}[${w}]))`),
    q(`min_over_time(${p99Of(sign, '1m')}[${range(cfg.sustainMs)}:15s])`),
    q(`min_over_time(sum(rate(hsmproxy_hsm_requests_total{outcome="HSM_ERR_BUSY"}[1m]))[${range(cfg.sustainMs)}:15s])`),
    q(`max_over_time(max(hsmproxy_hsm_utilisation_ratio)[${range(cfg.removeSustainMs)}:1m])`),
    q(`changes(hsmproxy_cluster_hsms[${range(cfg.cooldownMs)}])`),
  ]);
  const byHsm = (v: VectorSample[]) => new Map(v.map((s) => [s.metric.hsm ?? '', num(s)]));
  const u = byHsm(util);
  const upBy = byHsm(up);
  const k = byHsm(keys);
  const km = byHsm(keysMax);
  const ids = [...new Set([...upBy.keys(), ...u.keys()])].filter((id) => id !== '').sort();
  const hsms: HsmSample[] = ids.map((hsm) => {
    const s: HsmSample = { hsm, up: (upBy.get(hsm) ?? 0) > 0 };
    const uu = u.get(hsm);
    const kk = k.get(hsm);
    const mm = km.get(hsm);
    if (uu !== undefined) s.utilisation = uu;
    if (kk !== undefined) s.keysOccupied = kk;
    if (mm !== undefined) s.keysMax = mm;
    return s;
  });
  const ms = (v: VectorSample[]) => {
    const x = num(v[0]);
    return x === undefined ? undefined : x * 1000;
  };
  const fullRate = num(full[0]) ?? 0;
  const resumedRate = num(resumed[0]) ?? 0;
  const now = Date.now();
  const stats: ScalingStats = {
    atMs: now, windowMs, hsms, signs: Math.round(num(signs[0]) ?? 0), busyRejections: Math.round(num(busy[0]) ?? 0),
    handshakesPerSec: fullRate + resumedRate,
    resumedShare: fullRate + resumedRate > 0 ? resumedRate / (fullRate + resumedRate) : 0,
  };
  for (const [key, v] of [['signP50Ms', p50], ['signP99Ms', p99], ['queueP50Ms', qp50], ['queueP99Ms', qp99]] as const) {
    const x = ms(v);
    if (x !== undefined) stats[key] = x;
  }
  // Prometheus already watched for us: conditions that held over the whole period start the clocks then.
  const state: AdvisorState = { hsms: hsms.length, healthy: hsms.filter((h) => h.up).length };
  const lowest = ms(sustainedP99);
  if ((lowest !== undefined && lowest > cfg.sloP99Ms) || (num(sustainedBusy[0]) ?? 0) > 0) {
    state.pressureSince = now - cfg.sustainMs;
  }
  const peak = num(idleMax[0]);
  if (peak !== undefined && peak < cfg.removeBelow) state.idleSince = now - cfg.removeSustainMs;
  // The HSM count changed within the cool-down: when exactly is not known; assume one window ago.
  if ((num(changes[0]) ?? 0) > 0) state.changedAt = now - windowMs;
  return { stats, state };
}
