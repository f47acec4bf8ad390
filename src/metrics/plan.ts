// Capacity planning: how many HSMs a handshake rate needs. A full handshake costs one signature
// with the server key; a resumed one costs none. Each HSM signs at the rate its capacity profile
// publishes (or a `bench hsm` run measured); running it at `headroom` of that rate keeps queues
// short, which is what keeps p99 flat. Never fewer than `min` HSMs (availability).

/** The key types a TLS server signs with, as `cluster plan --key` names them. */
export const PLAN_KEY_TYPES = ['rsa-2048', 'rsa-3072', 'rsa-4096', 'ec-p256', 'ec-p384'] as const;
/** One of PLAN_KEY_TYPES. */
export type PlanKeyType = (typeof PLAN_KEY_TYPES)[number];

/** CloudHSM's limit of HSMs per cluster. */
export const MAX_CLUSTER_HSMS = 28;

/** What the planner needs. */
export interface PlanInput {
  handshakesPerSec: number;
  /** Share of handshakes resumed (0..1). */
  resumption: number;
  keyType: PlanKeyType;
  /** Signatures per second one HSM sustains for `keyType`. */
  perHsmSignsPerSec: number;
  /** Where that figure comes from (a profile name, or a bench file and the point used). */
  capacitySource: string;
  /** Fraction of an HSM's capacity to plan for (0..1], default 0.7. */
  headroom: number;
  min: number;
}

/** The plan and its reasoning. */
export interface CapacityPlan {
  hsms: number;
  signsPerSec: number;
  perHsmSignsPerSec: number;
  usablePerHsm: number;
  /** HSMs the load needs at full capacity, without headroom (fractional). */
  hsmsAtFullCapacity: number;
  /** Expected utilisation of each HSM at the planned count. */
  utilisation: number;
  /** What limited the answer: the load, or the minimum. */
  limitedBy: 'load' | 'min';
  /** Over CloudHSM's 28 HSMs per cluster: split the load over several clusters. */
  overClusterLimit: boolean;
  reasons: string[];
}

const fmt = (n: number): string => (n >= 100 ? Math.round(n).toLocaleString('en-US') : Number(n.toFixed(1)).toString());

/** Plans the HSM count for a handshake rate. */
export function planCapacity(p: PlanInput): CapacityPlan {
  const signsPerSec = p.handshakesPerSec * (1 - p.resumption);
  const usablePerHsm = p.perHsmSignsPerSec * p.headroom;
  const needed = signsPerSec === 0 ? 0 : Math.ceil(signsPerSec / usablePerHsm);
  const hsms = Math.max(p.min, needed);
  const utilisation = signsPerSec / (hsms * p.perHsmSignsPerSec);
  const limitedBy = needed >= p.min && needed > 0 ? 'load' : 'min';
  const reasons = [
    `${fmt(p.handshakesPerSec)} handshakes/s with ${Math.round(p.resumption * 100)}% resumed = ${fmt(signsPerSec)} full handshakes/s, one ${p.keyType} signature each (resumed handshakes sign nothing)`,
    `one HSM signs ${fmt(p.perHsmSignsPerSec)} ${p.keyType}/s (${p.capacitySource}); planned at ${Math.round(p.headroom * 100)}% of that = ${fmt(usablePerHsm)}/s so queues stay short and p99 stays flat`,
    limitedBy === 'load'
      ? `${fmt(signsPerSec)} / ${fmt(usablePerHsm)} = ${(signsPerSec / usablePerHsm).toFixed(2)} → ${needed} HSMs`
      : `the load needs ${needed} HSM${needed === 1 ? '' : 's'}; the minimum of ${p.min} (availability across zones) decides`,
    `expected utilisation ${utilisation.toFixed(2)} per HSM at ${hsms} HSMs; with one HSM down, ${hsms - 1 > 0 ? (signsPerSec / ((hsms - 1) * p.perHsmSignsPerSec)).toFixed(2) : '∞'} on the rest`,
  ];
  // N+1: losing one HSM (or one zone) must not put the rest over capacity.
  if (signsPerSec > 0 && (hsms - 1) * p.perHsmSignsPerSec <= signsPerSec) reasons.push(`with one HSM down the rest would be at or over capacity: ${Math.floor(signsPerSec / p.perHsmSignsPerSec) + 2} HSMs survive the loss of one`);
  const overClusterLimit = hsms > MAX_CLUSTER_HSMS;
  if (overClusterLimit) reasons.push(`${hsms} HSMs is over the ${MAX_CLUSTER_HSMS} a cluster may hold: split the listeners' keys over several clusters`);
  return {
    hsms, signsPerSec, perHsmSignsPerSec: p.perHsmSignsPerSec, usablePerHsm,
    hsmsAtFullCapacity: signsPerSec / p.perHsmSignsPerSec, utilisation, limitedBy, overClusterLimit, reasons,
  };
}

/** The `bench hsm` operation that measures signing with a key type (any padding). */
function benchOpPrefix(k: PlanKeyType): string {
  return k.startsWith('rsa-') ? `sign-rsa${k.slice(4)}` : `sign-${k}`;
}

/** A point of a `bench hsm --json` result, as far as planning reads it. */
interface BenchPointLike { op?: unknown; hsms?: unknown; concurrency?: unknown; opsPerSec?: unknown; errors?: unknown }

/**
 * Per-HSM signs/s for `keyType` from a `bench hsm --json` document: the best point of a
 * matching `sign-…` operation, divided by the HSMs it ran on. Undefined when none matches.
 */
export function capacityFromBench(
  doc: unknown, keyType: PlanKeyType,
): { perHsmSignsPerSec: number; source: string } | undefined {
  const root = doc as { points?: unknown; scaling?: unknown } | null;
  const lists = [root?.points, root?.scaling].filter(Array.isArray) as BenchPointLike[][];
  const prefix = benchOpPrefix(keyType);
  let best: { perHsmSignsPerSec: number; source: string } | undefined;
  for (const list of lists) {
    for (const pt of list) {
      if (typeof pt.op !== 'string' || !pt.op.startsWith(prefix) || typeof pt.opsPerSec !== 'number' || !(pt.opsPerSec > 0)) continue;
      if (typeof pt.errors === 'number' && pt.errors > 0) continue;
      const hsms = typeof pt.hsms === 'number' && pt.hsms > 0 ? pt.hsms : 1;
      const per = pt.opsPerSec / hsms;
      if (!best || per > best.perHsmSignsPerSec) {
        const at = typeof pt.concurrency === 'number' ? ` at concurrency ${pt.concurrency}` : '';
        best = { perHsmSignsPerSec: per, source: `measured: ${pt.op} ${fmt(pt.opsPerSec)}/s on ${hsms} HSM${hsms === 1 ? '' : 's'}${at}` };
      }
    }
  }
  return best;
}
