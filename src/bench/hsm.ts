// `hsmproxy bench hsm`: checks the options, opens the target(s), runs each operation's
// concurrency sweep (or, with --scaling, the sweep on embedded clusters of 1…N HSMs) and
// returns one result document. Printing is the command's job (commands/bench.ts).
import os from 'node:os';
import type { ManifestProfile } from '../hsm/cluster/manifest.js';
import { UsageError } from '../app/errors.js';
import { BENCH_OPS, parseOp, type BenchOp } from './ops.js';
import { InterruptedError, runSweep, type BenchPoint, type PointBudget, type Progress } from './sweep.js';
import type { Knee } from './stats.js';
import { embeddedTarget, pkcs11Target, UnsupportedOpError, type BenchTarget } from './targets.js';
import { TimingCollector } from './timings.js';

/** The command's options as commander hands them over (strings, unchecked). */
export interface HsmBenchFlags {
  op?: string;
  concurrency?: string;
  duration?: string;
  count?: string;
  embedded?: boolean;
  hsms?: string;
  profile?: string;
  scaling?: string;
  dir?: string;
  backend?: string;
  module?: string;
  token?: string;
  credentials?: string;
}

/** Checked options of a run. */
export interface HsmBenchPlan {
  ops: BenchOp[];
  concurrencies: number[];
  budget: PointBudget;
  target:
    | { kind: 'embedded'; hsms: number[]; profile: ManifestProfile; scaling: boolean }
    | { kind: 'dir'; dir: string; credentials?: string }
    | { kind: 'pkcs11'; module: string; token: string; credentials?: string };
}

/** Throughput and p99 of one operation on one cluster size: the best point of its sweep. */
export interface ScalingPoint {
  op: string;
  hsms: number;
  concurrency: number;
  opsPerSec: number;
  p99Ms: number;
}

/** Everything a run measured, as `--json` prints it and bench/ stores it. */
export interface HsmBenchResult {
  kind: 'hsm';
  date: string;
  node: string;
  cpus: number;
  /** 1, 5 and 15 minute load averages at the start: a shared machine's figures need them. */
  loadavg: number[];
  targets: string[];
  profile?: string;
  budget: PointBudget;
  points: BenchPoint[];
  knees: Array<{ op: string; hsms: number | null } & Knee>;
  scaling?: ScalingPoint[];
}

const PROFILES: ManifestProfile[] = ['unlimited', 'hsm1.medium', 'hsm2m.medium'];
const MAX_CONCURRENCY = 4096;
const MAX_HSMS = 8;

function intList(flag: string, text: string, min: number, max: number): number[] {
  const parts = text.split(',').map((s) => s.trim());
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d+$/.test(p) || Number(p) < min || Number(p) > max) throw new UsageError(`${flag} takes a comma list of whole numbers from ${min} to ${max} (e.g. ${flag} ${min},${Math.min(max, min * 4)}), got "${text}"`);
    out.push(Number(p));
  }
  return [...new Set(out)].sort((a, b) => a - b);
}

/** Checks the flags; every mistake is a UsageError saying what to pass instead. */
export function planHsmBench(f: HsmBenchFlags): HsmBenchPlan {
  const ops = (f.op ?? 'sign-ec-p256').split(',').map((s) => s.trim()).map((name) => {
    const op = parseOp(name);
    if (!op) throw new UsageError(`unknown --op "${name}"; use one or more (comma-separated) of: ${BENCH_OPS.join(', ')}`);
    return op;
  });
  if (f.count !== undefined && f.duration !== undefined) throw new UsageError('pass either --count N or --duration S, not both');
  let budget: PointBudget = { seconds: 2 };
  if (f.count !== undefined) {
    if (!/^\d+$/.test(f.count) || Number(f.count) < 1 || Number(f.count) > 10_000_000) throw new UsageError(`--count takes the number of operations per point (1 to 10000000), got "${f.count}"`);
    budget = { count: Number(f.count) };
  } else if (f.duration !== undefined) {
    const s = Number(f.duration);
    if (!/^\d+(\.\d+)?$/.test(f.duration) || !(s > 0) || s > 3600) throw new UsageError(`--duration takes seconds per point (more than 0, at most 3600), got "${f.duration}"`);
    budget = { seconds: s };
  }
  const scaling = f.scaling !== undefined;
  const concurrencies = intList('--concurrency', f.concurrency ?? (scaling ? '64' : '1,4,16,64,256'), 1, MAX_CONCURRENCY);
  const chosen = [f.embedded ? '--embedded' : '', f.dir !== undefined ? '--dir' : '', f.backend !== undefined ? '--backend' : ''].filter(Boolean);
  if (chosen.length > 1) throw new UsageError(`choose one target: ${chosen.join(' or ')}`);
  if (scaling && chosen.length === 1 && !f.embedded) throw new UsageError('--scaling starts embedded clusters of each size; it cannot be combined with --dir or --backend');
  if (scaling && f.hsms !== undefined) throw new UsageError('pass either --hsms N or --scaling 1,2,3 (the HSM counts to compare), not both');
  if (f.profile !== undefined && !PROFILES.includes(f.profile as ManifestProfile)) throw new UsageError(`unknown --profile "${f.profile}"; use one of ${PROFILES.join(', ')}`);
  if (f.backend !== undefined) {
    if (f.backend !== 'pkcs11') throw new UsageError(`--backend takes pkcs11 (the simulated cluster is --embedded or --dir DIR), got "${f.backend}"`);
    if (!f.module) throw new UsageError('--backend pkcs11 needs --module PATH (e.g. /usr/lib/softhsm/libsofthsm2.so)');
    if (!f.token) throw new UsageError('--backend pkcs11 needs --token LABEL (`hsmproxy pkcs11 tokens --module M` lists them)');
    const notSign = ops.find((o) => o.kind !== 'sign');
    if (notSign) throw new UsageError(new UnsupportedOpError(notSign.name).message);
    return { ops, concurrencies, budget, target: { kind: 'pkcs11', module: f.module, token: f.token, ...(f.credentials ? { credentials: f.credentials } : {}) } };
  }
  if (f.dir !== undefined) {
    if (f.hsms !== undefined || f.profile !== undefined) throw new UsageError('--hsms and --profile shape an --embedded cluster; a running cluster (--dir) has its own');
    return { ops, concurrencies, budget, target: { kind: 'dir', dir: f.dir, ...(f.credentials ? { credentials: f.credentials } : {}) } };
  }
  const hsms = scaling ? intList('--scaling', f.scaling!, 1, MAX_HSMS) : intList('--hsms', f.hsms ?? '1', 1, MAX_HSMS);
  if (!scaling && hsms.length > 1) throw new UsageError('--hsms takes one number; to compare cluster sizes use --scaling 1,2,3');
  return { ops, concurrencies, budget, target: { kind: 'embedded', hsms, profile: (f.profile ?? 'unlimited') as ManifestProfile, scaling } };
}

async function openDirTarget(dir: string, credentials?: string): Promise<BenchTarget> {
  const { readManifest } = await import('../hsm/cluster/manifest.js');
  const { loadCredentials } = await import('../engine/credentials.js');
  const { openCluster } = await import('../app/cluster-session.js');
  const { clusterTarget } = await import('./targets.js');
  const m = await readManifest(dir);
  const c = await loadCredentials({ file: credentials });
  if (!c.user) throw new UsageError('the cluster needs HSMPROXY_PIN=user:password (a crypto user)');
  const client = await openCluster(dir, m, { user: c.user, password: c.password });
  return clusterTarget(client, `cluster in ${dir} (${m.hsms.length} HSM${m.hsms.length === 1 ? '' : 's'}, profile ${[...new Set(m.hsms.map((h) => h.profile))].join('/') || '?'})`, m.hsms.length, () => client.close());
}

async function sweepTarget(
  target: BenchTarget, plan: HsmBenchPlan, result: HsmBenchResult, onProgress?: (p: Progress) => void,
  signal?: AbortSignal,
): Promise<void> {
  const collector = target.reportsTimings ? new TimingCollector() : undefined;
  try {
    for (const op of plan.ops) {
      if (signal?.aborted) throw new InterruptedError();
      const prepared = await target.prepare(op);
      try {
        const { points, knee } = await runSweep(prepared, {
          op: op.name, hsms: target.hsms, concurrencies: plan.concurrencies, budget: plan.budget,
          ...(signal ? { signal } : {}),
        }, collector, onProgress);
        result.points.push(...points);
        result.knees.push({ op: op.name, hsms: target.hsms, ...knee });
      } finally {
        await prepared.cleanup();
      }
    }
  } finally {
    collector?.close();
  }
}

/**
 * Runs the plan; `onProgress` is called a few times a second while a point runs. Aborting
 * `signal` (Ctrl-C) ends the point in progress, cleans up, and rejects with InterruptedError.
 */
export async function runHsmBench(
  plan: HsmBenchPlan, onProgress?: (p: Progress) => void, signal?: AbortSignal,
): Promise<HsmBenchResult> {
  const result: HsmBenchResult = {
    kind: 'hsm', date: new Date().toISOString(), node: process.version, cpus: os.cpus().length,
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100), targets: [], budget: plan.budget, points: [],
    knees: [],
  };
  const t = plan.target;
  const sizes = t.kind === 'embedded' ? t.hsms : [0];
  if (t.kind === 'embedded') result.profile = t.profile;
  for (const hsms of sizes) {
    if (signal?.aborted) throw new InterruptedError();
    const target = t.kind === 'embedded' ? await embeddedTarget(hsms, t.profile)
      : t.kind === 'dir' ? await openDirTarget(t.dir, t.credentials)
        : await pkcs11Target({
          module: t.module, token: t.token, sessions: Math.min(64, Math.max(...plan.concurrencies)),
          ...(t.credentials ? { credentials: t.credentials } : {})
        });
    try {
      result.targets.push(target.description);
      await sweepTarget(target, plan, result, onProgress, signal);
    } finally {
      await target.close();
    }
  }
  if (t.kind === 'embedded' && t.scaling) result.scaling = scalingOf(result.points);
  return result;
}

/** Per operation and cluster size, the sweep point with the highest throughput. */
export function scalingOf(points: BenchPoint[]): ScalingPoint[] {
  const best = new Map<string, BenchPoint>();
  for (const p of points) {
    const k = `${p.op}/${p.hsms}`;
    const b = best.get(k);
    if (!b || p.opsPerSec > b.opsPerSec) best.set(k, p);
  }
  return [...best.values()].map((p) => ({
    op: p.op, hsms: p.hsms ?? 0, concurrency: p.concurrency, opsPerSec: p.opsPerSec, p99Ms: p.latency.p99.totalMs,
  }));
}
