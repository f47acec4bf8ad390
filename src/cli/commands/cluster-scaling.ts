// `hsmproxy cluster advise` (the scaling advisor's recommendation, read from a running proxy's
// admin port — given, or recorded in the cluster directory by the serve running on it — from
// Prometheus, or from the HSMs themselves) and `hsmproxy cluster plan`
// (capacity planning: HSMs needed for a handshake rate). Both add to the `cluster` group.
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { CAPACITY_PROFILES, type CapacityProfileName } from '../../hsm/device/capacity.js';
import { clusterStatus } from '../../hsm/cluster/status.js';
import {
  advise, ADVISOR_DEFAULTS, capacityFromBench, formatDuration, planCapacity, PLAN_KEY_TYPES, scalingFromPrometheus,
  type AdvisorConfig, type PlanKeyType, type Recommendation, type ScalingStats,
} from '../../metrics/index.js';
import { ADMIN_RECORD, readAdminRecord } from '../../app/admin-record.js';
import { clusterDir } from '../hsm-session.js';
import { UsageError, output } from '../run.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 };

function duration(v: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|min|h)?$/.exec(v.trim());
  if (!m) throw new UsageError(`${flag} takes a duration like 30s, 5m or 1h, got "${v}"`);
  return Math.round(Number(m[1]) * (UNITS[m[2] ?? 'ms'] ?? 1));
}

function int(v: string, flag: string, min: number, max: number): number {
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`${flag} takes a whole number from ${min} to ${max}, got "${v}"`);
  return Number(v);
}

function fraction(v: string, flag: string, opts: { allowZero: boolean }): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n > 1 || n < 0 || (!opts.allowZero && n === 0)) {
    throw new UsageError(`${flag} takes a fraction ${opts.allowZero ? 'from 0' : 'above 0'} to 1 (e.g. ${flag} 0.6), got "${v}"`);
  }
  return n;
}

/** What `cluster advise` prints with --json. */
interface AdviceDoc {
  source: string;
  recommendation: Recommendation;
  stats: ScalingStats;
  note?: string;
}

async function fromAdmin(url: string, timeoutMs = 5000): Promise<AdviceDoc> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new UsageError(`--admin takes the admin URL of a running hsmproxy, like http://127.0.0.1:9464, got "${url}"`);
  }
  if (!target.pathname.endsWith('/scaling')) target = new URL('scaling', target.href.endsWith('/') ? target.href : target.href + '/');
  let res: Response;
  try {
    res = await fetch(target, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    throw new UsageError(`cannot reach the admin endpoint ${target.href} (${cause?.code ?? (err as Error).message}); is hsmproxy serve running with its admin port there?`, 1);
  }
  const text = await res.text();
  if (!res.ok) throw new UsageError(`${target.href} answered HTTP ${res.status}: ${text.trim().split('\n')[0]}`, 1);
  let doc: { recommendation?: Recommendation; stats?: ScalingStats };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch {
    throw new UsageError(`${target.href} did not answer with the scaling JSON; is it an hsmproxy admin port?`, 1);
  }
  if (!doc.recommendation || !doc.stats) throw new UsageError(`${target.href} did not answer with the scaling JSON; is it an hsmproxy admin port?`, 1);
  return { source: target.href, recommendation: doc.recommendation, stats: doc.stats };
}

async function fromPrometheus(url: string, cfg: AdvisorConfig, windowMs: number): Promise<AdviceDoc> {
  try {
    new URL(url);
  } catch {
    throw new UsageError(`--prometheus takes the URL of a Prometheus server, like http://127.0.0.1:9090, got "${url}"`);
  }
  const { stats, state } = await scalingFromPrometheus(url, cfg, windowMs).catch((err: Error) => {
    throw new UsageError(err.message, 1);
  });
  if (stats.hsms.length === 0) throw new UsageError(`Prometheus at ${url} has no hsmproxy_hsm_up series: is it scraping hsmproxy's admin port?`, 1);
  return { source: url, recommendation: advise(stats, state, cfg).recommendation, stats };
}

async function fromDir(dir: string, cfg: AdvisorConfig): Promise<AdviceDoc> {
  const s = await clusterStatus(dir);
  const stats: ScalingStats = {
    atMs: Date.now(), windowMs: 5000, signs: 0, busyRejections: 0, handshakesPerSec: 0, resumedShare: 0,
    hsms: s.hsms.map((h) => ({
      hsm: h.id, up: h.up && h.inSync !== false,
      ...(h.utilisation !== undefined ? { utilisation: h.utilisation } : {}),
      ...(h.keysToken !== undefined ? { keysOccupied: h.keysToken + (h.keysSession ?? 0) } : {}),
      ...(h.keysMax !== undefined ? { keysMax: h.keysMax } : {}),
    })),
  };
  return {
    source: dir, stats, recommendation: advise(stats, {}, cfg).recommendation,
    note: 'read from the HSMs themselves: utilisation (last 5 s), keys and health; latency is seen by the proxy — use --admin or --prometheus for the full advice',
  };
}

/**
 * `--dir`: the advice of the proxy serving the cluster, when one recorded its admin URL there and
 * it answers; otherwise (none, or a stale record of a proxy that is gone) the HSMs' own figures.
 */
async function fromDirOrProxy(dir: string, cfg: AdvisorConfig): Promise<AdviceDoc> {
  const record = await readAdminRecord(dir);
  let stale = '';
  if (record) {
    try {
      const doc = await fromAdmin(record.url, 2000);
      return { ...doc, source: `${doc.source} (the proxy serving ${dir}, recorded in ${ADMIN_RECORD})` };
    } catch {
      stale = `${ADMIN_RECORD} names ${record.url}, which does not answer (the proxy that wrote it is gone); `;
    }
  }
  const doc = await fromDir(dir, cfg);
  return { ...doc, note: stale + doc.note! };
}

function printAdvice(d: AdviceDoc): void {
  const r = d.recommendation;
  const s = d.stats;
  const ms = (v: number | undefined) => (v === undefined ? '-' : `${v.toFixed(1)} ms`);
  const lines = [
    `${r.action.toUpperCase()}: ${r.reason}`,
    `HSMs: ${r.currentHsms} (${r.healthyHsms} in rotation) → recommended ${r.targetHsms}`,
    `last ${formatDuration(s.windowMs)}: ${s.signs} signs, p50 ${ms(s.signP50Ms)}, p99 ${ms(s.signP99Ms)}, queue wait p99 ${ms(s.queueP99Ms)}, ${s.busyRejections} busy answers`,
    `handshakes: ${s.handshakesPerSec.toFixed(1)}/s, ${Math.round(s.resumedShare * 100)}% resumed`,
    ...s.hsms.map((h) => `  ${h.hsm.padEnd(8)} ${h.up ? 'in rotation' : 'OUT       '}  utilisation ${(h.utilisation ?? 0).toFixed(2)}  keys ${h.keysOccupied ?? '-'}/${h.keysMax ?? 3500}`),
    ...(d.note ? [`note: ${d.note}`] : []),
    `source: ${d.source}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

/** Registers `cluster advise` and `cluster plan`. */
export function register(program: Command): void {
  const cluster = program.commands.find((c) => c.name() === 'cluster') ?? program.command('cluster').description('create and manage a cluster of simulated HSMs');

  cluster.command('advise')
    .description('the scaling advisor\'s recommendation (add, remove or hold HSMs) and why')
    .option('--admin <url>', 'a running hsmproxy\'s admin URL (reads GET /scaling)')
    .option('--prometheus <url>', 'a Prometheus server scraping hsmproxy')
    .option('--dir <dir>', 'a cluster directory: the advice of the proxy serving it (its admin URL is recorded there), else ask the HSMs directly (utilisation, keys, health); default $HSMPROXY_DIR when no other source is given')
    .option('--min <n>', 'never fewer HSMs than this', String(ADVISOR_DEFAULTS.min))
    .option('--max <n>', 'never more HSMs than this', String(ADVISOR_DEFAULTS.max))
    .option('--slo-ms <ms>', 'p99 sign latency objective', String(ADVISOR_DEFAULTS.sloP99Ms))
    .option('--window <duration>', 'p99 window (--prometheus)', '5m')
    .option('--sustain <duration>', 'how long latency must stay over the SLO (--prometheus)', '5m')
    .option('--remove-after <duration>', 'how long HSMs must stay idle before removing one (--prometheus)', '30m')
    .option('--json', 'print one JSON document')
    .action(async (opts: {
      admin?: string; prometheus?: string; dir?: string; min: string; max: string; sloMs: string; window: string;
      sustain: string; removeAfter: string; json?: boolean;
    }) => {
      // No source named: the cluster of $HSMPROXY_DIR, as every other command takes it.
      const fromEnv = opts.admin === undefined && opts.prometheus === undefined;
      const dir = opts.dir ?? (fromEnv ? process.env.HSMPROXY_DIR || undefined : undefined);
      const sources = [opts.admin, opts.prometheus, dir].filter((v) => v !== undefined).length;
      if (sources !== 1) throw new UsageError('give exactly one of --admin URL, --prometheus URL or --dir DIR (or set HSMPROXY_DIR)');
      const min = int(opts.min, '--min', 1, 28);
      const max = int(opts.max, '--max', 1, 28);
      if (max < min) throw new UsageError(`--max (${max}) must be at least --min (${min})`);
      const cfg: AdvisorConfig = {
        ...ADVISOR_DEFAULTS, min, max, sloP99Ms: int(opts.sloMs, '--slo-ms', 1, 60_000),
        sustainMs: duration(opts.sustain, '--sustain'), removeSustainMs: duration(opts.removeAfter, '--remove-after'),
      };
      const windowMs = duration(opts.window, '--window');
      if (windowMs < 1000) throw new UsageError('--window must be at least 1s');
      const doc = opts.admin !== undefined ? await fromAdmin(opts.admin)
        : opts.prometheus !== undefined ? await fromPrometheus(opts.prometheus, cfg, windowMs)
          : await fromDirOrProxy(clusterDir({ dir }), cfg);
      output(opts, doc, () => printAdvice(doc));
    });

  const profiles = Object.keys(CAPACITY_PROFILES).filter((p) => p !== 'unlimited');
  cluster.command('plan')
    .description('how many HSMs a handshake rate needs, and why (from a capacity profile or a bench hsm result)')
    .requiredOption('--handshakes-per-sec <n>', 'TLS handshakes per second to plan for')
    .option('--resumption <fraction>', 'share of handshakes resumed (they need no signature)', '0')
    .option('--profile <profile>', `HSM capacity profile: ${profiles.join('|')}`, 'hsm2m.medium')
    .option('--key <type>', `server key type: ${PLAN_KEY_TYPES.join('|')}`, 'rsa-2048')
    .option('--from-bench <file>', 'per-HSM capacity measured by `hsmproxy bench hsm --json` instead of the profile')
    .option('--headroom <fraction>', 'share of an HSM\'s capacity to plan for', '0.7')
    .option('--min <n>', 'never fewer HSMs than this (availability)', '2')
    .option('--json', 'print one JSON document')
    .action(async (opts: {
      handshakesPerSec: string; resumption: string; profile: string; key: string; fromBench?: string; headroom: string;
      min: string; json?: boolean;
    }) => {
      const hps = Number(opts.handshakesPerSec);
      if (!/^\d+(\.\d+)?$/.test(opts.handshakesPerSec.trim()) || !(hps >= 0) || hps > 1e7) throw new UsageError(`--handshakes-per-sec takes a number of handshakes per second (e.g. 2000), got "${opts.handshakesPerSec}"`);
      const resumption = fraction(opts.resumption, '--resumption', { allowZero: true });
      const headroom = fraction(opts.headroom, '--headroom', { allowZero: false });
      const min = int(opts.min, '--min', 1, 28);
      if (!(PLAN_KEY_TYPES as readonly string[]).includes(opts.key)) throw new UsageError(`--key must be one of ${PLAN_KEY_TYPES.join(', ')}, got "${opts.key}"`);
      const keyType = opts.key as PlanKeyType;
      let capacity: { perHsmSignsPerSec: number; source: string };
      if (opts.fromBench !== undefined) {
        let doc: unknown;
        try {
          doc = JSON.parse(await readFile(opts.fromBench, 'utf8'));
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          throw new UsageError(`--from-bench ${opts.fromBench}: ${code === 'ENOENT' ? 'no such file' : code ? `cannot read it (${code})` : 'not JSON; give the file `hsmproxy bench hsm --json` wrote'}`);
        }
        const found = capacityFromBench(doc, keyType);
        if (!found) throw new UsageError(`--from-bench ${opts.fromBench} has no error-free sign point for ${keyType}; run \`hsmproxy bench hsm --op ${keyType.startsWith('rsa') ? `sign-rsa${keyType.slice(4)}-pss` : `sign-${keyType}`} --json\` or pick another --key`);
        capacity = found;
      } else {
        type Profile = (typeof CAPACITY_PROFILES)[CapacityProfileName];
        const profile = CAPACITY_PROFILES[opts.profile as CapacityProfileName] as Profile | undefined;
        if (!profile || opts.profile === 'unlimited') throw new UsageError(`--profile must be one of ${profiles.join(', ')} (unlimited has no capacity to plan with), got "${opts.profile}"`);
        const rate = profile.rates[`sign:${keyType}`];
        if (!rate) throw new UsageError(`the ${profile.name} profile has no sign rate for ${keyType}`);
        capacity = { perHsmSignsPerSec: rate, source: `${profile.name} published figure` };
      }
      const plan = planCapacity({
        handshakesPerSec: hps, resumption, keyType, perHsmSignsPerSec: capacity.perHsmSignsPerSec,
        capacitySource: capacity.source, headroom, min,
      });
      output(opts, {
        input: { handshakesPerSec: hps, resumption, keyType, headroom, min, capacitySource: capacity.source }, ...plan
      }, () => {
        process.stdout.write([`${plan.hsms} HSMs`, ...plan.reasons.map((r) => `  - ${r}`)].join('\n') + '\n');
      });
    });
}
