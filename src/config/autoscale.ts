// Validation of `hsm.autoscale`: the scaling advisor's knobs and whether the simulated cluster
// follows its advice by itself. Durations take milliseconds or a number with a unit ("30s", "5m").
import { at, type Reader } from './reader.js';

/** Where a new HSM is cloned from. */
export type AutoscaleSource = 'auto' | 'backup' | 'live';
const SOURCES: readonly AutoscaleSource[] = ['auto', 'backup', 'live'];

/** `hsm.autoscale`, validated, every duration in milliseconds. */
export interface AutoscaleConfig {
  /** Act on the advice (default true when the section is present); false: advise only. */
  enabled: boolean;
  min: number;
  max: number;
  sloP99Ms: number;
  cooldownMs: number;
  /** How long latency must stay over the SLO before adding. */
  sustainMs: number;
  /** How long every HSM must stay idle (< 0.3 utilisation) before removing one. */
  removeAfterMs: number;
  /** The sliding window p99 is computed over. */
  windowMs: number;
  /** How often the advisor is evaluated. */
  intervalMs: number;
  from: AutoscaleSource;
}

/** The advisor's defaults (also used without an `autoscale` section: advice only). */
export const AUTOSCALE_DEFAULTS: AutoscaleConfig = {
  enabled: false, min: 2, max: 8, sloP99Ms: 20, cooldownMs: 600_000, sustainMs: 300_000, removeAfterMs: 1_800_000,
  windowMs: 60_000, intervalMs: 1_000, from: 'auto',
};

const KEYS = ['enabled', 'min', 'max', 'sloP99Ms', 'cooldown', 'sustain', 'removeAfter', 'window', 'interval', 'from'] as const;
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 };
const DAY_MS = 86_400_000;

/** Reads `hsm.autoscale` (present: autoscaling on unless `enabled: false`). */
export function readAutoscale(r: Reader, v: unknown, path: string): AutoscaleConfig | undefined {
  const d = AUTOSCALE_DEFAULTS;
  const o = r.object(v, path, KEYS);
  if (!o) return undefined;
  let enabled = true;
  if (o.enabled !== undefined) {
    if (typeof o.enabled !== 'boolean') r.fail(at(path, 'enabled'), `expected true or false, got ${JSON.stringify(o.enabled)}`);
    else enabled = o.enabled;
  }
  const min = r.integer(o.min, at(path, 'min'), { def: d.min, min: 1, max: 28, what: 'a number of HSMs' });
  const max = r.integer(o.max, at(path, 'max'), { def: Math.max(d.max, min ?? d.min), min: 1, max: 28, what: 'a number of HSMs' });
  if (min !== undefined && max !== undefined && max < min) r.fail(at(path, 'max'), `must be at least min (${min})`);
  const sloP99Ms = r.integer(o.sloP99Ms, at(path, 'sloP99Ms'), { def: d.sloP99Ms, min: 1, max: 60_000, what: 'milliseconds' });
  const cooldownMs = duration(r, o.cooldown, at(path, 'cooldown'), d.cooldownMs, 0);
  const sustainMs = duration(r, o.sustain, at(path, 'sustain'), d.sustainMs, 0);
  const removeAfterMs = duration(r, o.removeAfter, at(path, 'removeAfter'), d.removeAfterMs, 0);
  const windowMs = duration(r, o.window, at(path, 'window'), d.windowMs, 1000);
  const intervalMs = duration(r, o.interval, at(path, 'interval'), d.intervalMs, 100);
  const from = r.string(o.from, at(path, 'from'), { def: d.from, oneOf: SOURCES }) as AutoscaleSource | undefined;
  if (min === undefined || max === undefined || max < min || sloP99Ms === undefined || cooldownMs === undefined
    || sustainMs === undefined || removeAfterMs === undefined || windowMs === undefined || intervalMs === undefined
    || !from) return undefined;
  return { enabled, min, max, sloP99Ms, cooldownMs, sustainMs, removeAfterMs, windowMs, intervalMs, from };
}

// Milliseconds as a number, or a number with a unit: "500ms", "30s", "5m", "1h".
function duration(r: Reader, v: unknown, path: string, def: number, minMs: number): number | undefined {
  if (v === undefined) return def;
  let msValue: number | undefined;
  if (typeof v === 'number' && Number.isInteger(v)) msValue = v;
  else if (typeof v === 'string') {
    const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)$/.exec(v.trim());
    if (m) msValue = Math.round(Number(m[1]) * (UNITS[m[2] ?? 'ms'] ?? 1));
  }
  if (msValue === undefined) return r.fail(path, `expected milliseconds or a duration like "30s", "5m", "1h", got ${JSON.stringify(v)}`);
  if (msValue < minMs || msValue > DAY_MS) return r.fail(path, `expected a duration from ${minMs} ms to 24 h, got ${JSON.stringify(v)}`);
  return msValue;
}
