// Validation of `hsm.signing.hedge`: hedged signs on the simulated cluster (a sign not answered
// after its HSM's recent p95 is sent to a second HSM too; hsm/client/hedge.ts). PKCS#11 reaches
// one module, so there the section is accepted and ignored (docs/configuration.md says so).
import { at, type Reader } from './reader.js';

/** `hsm.signing.hedge`, validated. */
export interface HedgeConfig {
  enabled: boolean;
  /** At most this share of signs is hedged (0 < maxShare ≤ 0.5). */
  maxShare: number;
  /** The hedge delay's floor in milliseconds (the delay is the HSM's recent p95, at least this). */
  minDelayMs: number;
}

/** Defaults: on, 5% of signs at most, a 5 ms floor (several loopback signs; far below a handshake timeout). */
export const HEDGE_DEFAULTS: HedgeConfig = { enabled: true, maxShare: 0.05, minDelayMs: 5 };

/** Reads `hsm.signing.hedge` (absent: the defaults). */
export function readHedge(r: Reader, v: unknown, path: string): HedgeConfig | undefined {
  const d = HEDGE_DEFAULTS;
  if (v === undefined) return { ...d };
  const o = r.object(v, path, ['enabled', 'maxShare', 'minDelayMs']);
  if (!o) return undefined;
  const enabled = r.boolean(o.enabled, at(path, 'enabled'), { def: d.enabled });
  let maxShare: number | undefined = d.maxShare;
  if (o.maxShare !== undefined) {
    // Above one half, hedging could more than double the HSMs' load in a slow spell: never what is meant.
    const s = o.maxShare;
    if (typeof s !== 'number' || !Number.isFinite(s) || s <= 0 || s > 0.5) {
      maxShare = r.fail(at(path, 'maxShare'), `expected a share of signs above 0 and at most 0.5 (e.g. 0.05 for 5%), got ${JSON.stringify(s)}`);
    } else maxShare = s;
  }
  const minDelayMs = r.integer(o.minDelayMs, at(path, 'minDelayMs'), { def: d.minDelayMs, min: 0, max: 60_000, what: 'milliseconds' });
  if (enabled === undefined || maxShare === undefined || minDelayMs === undefined) return undefined;
  return { enabled, maxShare, minDelayMs };
}
