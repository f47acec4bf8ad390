// HSM throughput and latency, the runs behind SUMMARY.md: `hsmproxy bench hsm` as a library,
// (1) concurrency sweeps on one HSM with the hardware profile (hsm2m.medium: where queueing
// starts) and with `unlimited` (the real crypto on this machine), (2) scaling over 1, 2, 3
// HSMs with both profiles, (3) every operation `bench hsm` knows (RSA-2048/3072 PSS and
// PKCS#1, P-256/P-384, their verifies, AES-GCM, random) on one HSM of each profile, and (4) the
// sign sweep on a throwaway SoftHSMv2 token, when softhsm2 is installed, for the side-by-side
// table, and (5) `hsm-vs-openssl`: P-256 and RSA-2048 signs on one `unlimited` HSM at 16 and 64 in
// flight next to `openssl speed` on one core, in the same run (the ratio issue 16 targets).
// Writes bench/results/hsm-*.json.
// Run: npm run bench:hsm   (env BENCH_SECONDS per point, default 2; BENCH_RUNS=hsm-vs-openssl for (5) alone)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatHsmResult } from '../src/bench/format.js';
import { planHsmBench, runHsmBench, type HsmBenchFlags } from '../src/bench/hsm.js';
import { BENCH_OPS } from '../src/bench/ops.js';
import { compareWithOpenssl, formatComparison } from './lib/openssl-speed.js';

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

// SoftHSMv2 on a token of its own (SoftHSM reads SOFTHSM2_CONF once, before the first open).
const SOFTHSM = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'].find((p) => existsSync(p));
// BENCH_RUNS=hsm-ops-unlimited,… re-runs only those (the others' files are kept).
const only = process.env.BENCH_RUNS?.split(',');
const wanted = (name: string): boolean => !only || only.includes(name);
let softhsmDir: string | undefined;
if (SOFTHSM && wanted('hsm-sweep-softhsm')) {
  softhsmDir = mkdtempSync(join(tmpdir(), 'hsmproxy-bench-softhsm-'));
  mkdirSync(join(softhsmDir, 'tokens'));
  process.env.SOFTHSM2_CONF = join(softhsmDir, 'softhsm2.conf');
  writeFileSync(process.env.SOFTHSM2_CONF, `directories.tokendir = ${join(softhsmDir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', 'bench', '--so-pin', '12345678', '--pin', '1234'], { stdio: 'ignore' });
  process.env.HSMPROXY_PIN = '1234';
  // The sim sweeps' sign operations and concurrencies (PKCS#11 measures sign operations only).
  RUNS.push(['hsm-sweep-softhsm', { backend: 'pkcs11', module: SOFTHSM, token: 'bench', op: 'sign-ec-p256,sign-rsa2048-pss', concurrency: '1,4,16,64,256' }]);
} else if (!SOFTHSM) {
  console.log('softhsm2 is not installed: no SoftHSM run');
}

const chosen = RUNS.filter(([name]) => wanted(name));
try {
  for (const [name, flags] of chosen) {
    const r = await runHsmBench(planHsmBench({ ...flags, duration: SECONDS }));
    process.stdout.write(`\n== ${name}\n${formatHsmResult(r)}`);
    writeFileSync(join(results, `${name}.json`), `${JSON.stringify(r, null, 2)}\n`);
  }
  if (wanted('hsm-vs-openssl')) {
    // 5 s per point and per openssl algorithm: openssl speed's own default length is 10 s.
    const c = await compareWithOpenssl([16, 64], Math.max(5, Number(SECONDS)), 5);
    process.stdout.write(`\n== hsm-vs-openssl\n${formatComparison(c)}`);
    writeFileSync(join(results, 'hsm-vs-openssl.json'), `${JSON.stringify(c, null, 2)}\n`);
    chosen.push(['hsm-vs-openssl', {}]);
  }
} finally {
  if (softhsmDir) rmSync(softhsmDir, { recursive: true, force: true });
}
console.log(`\nwrote ${chosen.map(([n]) => `bench/results/${n}.json`).join(', ')}`);
