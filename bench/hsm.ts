// HSM throughput and latency, the runs behind SUMMARY.md: `hsmproxy bench hsm` as a library,
// (1) concurrency sweeps on one HSM with the hardware profile (hsm2m.medium: where queueing
// starts) and with `unlimited` (the real crypto on this machine), (2) scaling over 1, 2, 3
// HSMs with both profiles, and (3) every operation `bench hsm` knows (RSA-2048/3072 PSS and
// PKCS#1, P-256/P-384, their verifies, AES-GCM, random) on one HSM of each profile.
// Writes bench/results/hsm-*.json.
// Run: npm run bench:hsm   (env BENCH_SECONDS per point, default 2)
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatHsmResult } from '../src/cli/bench/format.js';
import { planHsmBench, runHsmBench, type HsmBenchFlags } from '../src/cli/bench/hsm.js';
import { BENCH_OPS } from '../src/cli/bench/ops.js';

const SECONDS = process.env.BENCH_SECONDS ?? '2';
const results = join(dirname(fileURLToPath(import.meta.url)), 'results');
mkdirSync(results, { recursive: true });

const RUNS: Array<[string, HsmBenchFlags]> = [
  ['hsm-sweep-hsm2m.medium', { op: 'sign-ec-p256,sign-rsa2048-pss', profile: 'hsm2m.medium', hsms: '1', concurrency: '1,4,16,64,256' }],
  ['hsm-sweep-unlimited', { op: 'sign-ec-p256,sign-rsa2048-pss,verify-ec-p256,aes-gcm,random', profile: 'unlimited', hsms: '1', concurrency: '1,4,16,64,256' }],
  ['hsm-scaling-hsm2m.medium', { op: 'sign-ec-p256,sign-rsa2048-pss', profile: 'hsm2m.medium', scaling: '1,2,3', concurrency: '16,64,256' }],
  ['hsm-scaling-unlimited', { op: 'sign-ec-p256,sign-rsa2048-pss', profile: 'unlimited', scaling: '1,2,3', concurrency: '16,64,256' }],
  ['hsm-ops-hsm2m.medium', { op: BENCH_OPS.join(','), profile: 'hsm2m.medium', hsms: '1', concurrency: '1,16,64' }],
  ['hsm-ops-unlimited', { op: BENCH_OPS.join(','), profile: 'unlimited', hsms: '1', concurrency: '1,16,64' }],
];

// BENCH_RUNS=hsm-ops-unlimited,… re-runs only those (the others' files are kept).
const only = process.env.BENCH_RUNS?.split(',');
const chosen = RUNS.filter(([name]) => !only || only.includes(name));
for (const [name, flags] of chosen) {
  const r = await runHsmBench(planHsmBench({ ...flags, duration: SECONDS }));
  process.stdout.write(`\n== ${name}\n${formatHsmResult(r)}`);
  writeFileSync(join(results, `${name}.json`), `${JSON.stringify(r, null, 2)}\n`);
}
console.log(`\nwrote ${chosen.map(([n]) => `bench/results/${n}.json`).join(', ')}`);
