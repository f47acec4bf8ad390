// `hsmproxy bench hsm`: a short run against a temporary embedded cluster yields points whose
// figures hang together (ops/s, ordered percentiles, a latency split that adds up), scaling
// mode gives one point per HSM count, the temporary cluster is removed, and bad flags are one
// line each. Counts are tiny: this checks behaviour, not speed.
import t, { type Test } from 'tap';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { cliEntry, repoRoot, runCli } from './helpers/cli.js';
import { planHsmBench, type HsmBenchResult } from '../src/bench/hsm.js';
import { findKnee, latencyStats } from '../src/bench/stats.js';
import { UsageError } from '../src/app/errors.js';

async function scratch(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-bench-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Temporary clusters left in `tmp` (tsx keeps its own cache there too). */
async function benchDirs(tmp: string): Promise<string[]> {
  return (await readdir(tmp)).filter((n) => n.startsWith('hsmproxy-bench-hsm-'));
}

t.test('a count-bounded sweep on a 1-HSM embedded cluster reports consistent points and removes its cluster', async (t) => {
  const tmp = await scratch(t);
  const r = await runCli(['bench', 'hsm', '--embedded', '--hsms', '1', '--op', 'sign-ec-p256', '--count', '200', '--concurrency', '1,8', '--json'], { env: { TMPDIR: tmp } });
  t.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout) as HsmBenchResult;
  t.same(result.points.map((p) => p.concurrency), [1, 8], 'one point per concurrency, in order');
  for (const p of result.points) {
    t.equal(p.ops, 200, `${p.concurrency} in flight: every operation counted`);
    t.equal(p.errors, 0, 'no errors');
    t.ok(p.opsPerSec > 0, 'ops/s > 0');
    t.ok(p.splitReported, 'the embedded HSMs report queue and service times');
    const l = p.latency;
    t.ok(l.p50.totalMs <= l.p95.totalMs && l.p95.totalMs <= l.p99.totalMs && l.p99.totalMs <= l.max.totalMs, `p50 ≤ p95 ≤ p99 ≤ max (${l.p50.totalMs}, ${l.p95.totalMs}, ${l.p99.totalMs}, ${l.max.totalMs})`);
    for (const [name, s] of Object.entries(l)) {
      t.ok(s.networkMs >= 0 && s.queueMs >= 0 && s.serviceMs >= 0, `${name}: no negative part`);
      t.ok(Math.abs(s.networkMs + s.queueMs + s.serviceMs - s.totalMs) <= 0.01, `${name}: network + queue + service ≈ total (${s.networkMs} + ${s.queueMs} + ${s.serviceMs} vs ${s.totalMs})`);
    }
    t.ok(l.mean.serviceMs > 0, 'the HSM spent measurable time serving');
  }
  t.equal(result.knees.length, 1, 'a knee verdict for the sweep');
  t.same(await benchDirs(tmp), [], 'the temporary cluster directory is gone');
});

t.test('scaling mode returns one point per HSM count', async (t) => {
  const tmp = await scratch(t);
  const r = await runCli(['bench', 'hsm', '--scaling', '1,2', '--op', 'sign-ec-p256', '--count', '100', '--concurrency', '4', '--json'], { env: { TMPDIR: tmp } });
  t.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout) as HsmBenchResult;
  t.same(result.scaling?.map((s) => s.hsms), [1, 2], 'HSM counts 1 and 2');
  for (const s of result.scaling ?? []) t.ok(s.opsPerSec > 0 && s.p99Ms > 0, `${s.hsms} HSM(s): throughput and p99 reported`);
  t.same(await benchDirs(tmp), [], 'every temporary cluster is removed');
});

t.test('human output is a table per operation with the knee rule; --out also saves the JSON', async (t) => {
  const tmp = await scratch(t);
  const r = await runCli(['bench', 'hsm', '--op', 'random', '--count', '50', '--concurrency', '1,2', '--out', join(tmp, 'result.json')], { env: { TMPDIR: tmp } });
  t.equal(r.code, 0, r.stderr);
  const saved = JSON.parse(await readFile(join(tmp, 'result.json'), 'utf8')) as HsmBenchResult;
  t.same(saved.points.map((p) => p.concurrency), [1, 2], '--out keeps the JSON result next to the table');
  t.match(r.stdout, /random on 1 HSM/);
  t.match(r.stdout, /p99 = network \+ queue \+ service/);
  t.match(r.stdout, /knee: /);
  t.equal(r.stderr, '', 'no progress line when stderr is not a terminal');
});

t.test('bad arguments are one-line errors that say what to pass', async (t) => {
  const cases: Array<[Record<string, string | boolean>, RegExp]> = [
    [{ op: 'sign-dsa' }, /unknown --op "sign-dsa"; use one or more/],
    [{ count: '0' }, /--count takes/],
    [{ count: '10', duration: '1' }, /either --count N or --duration S/],
    [{ duration: 'soon' }, /--duration takes seconds/],
    [{ concurrency: '1,,4' }, /--concurrency takes a comma list/],
    [{ concurrency: '0' }, /--concurrency takes a comma list of whole numbers from 1/],
    [{ hsms: '0' }, /--hsms takes/],
    [{ hsms: '1,2' }, /use --scaling/],
    [{ profile: 'hsm9' }, /unknown --profile "hsm9"/],
    [{ embedded: true, dir: '/tmp/x' }, /choose one target/],
    [{ scaling: '1,2', dir: '/tmp/x' }, /cannot be combined with --dir/],
    [{ scaling: '1,2', hsms: '2' }, /either --hsms N or --scaling/],
    [{ dir: '/tmp/x', profile: 'unlimited' }, /running cluster \(--dir\) has its own/],
    [{ backend: 'sim' }, /--backend takes pkcs11/],
    [{ backend: 'pkcs11', token: 't' }, /needs --module/],
    [{ backend: 'pkcs11', module: '/m.so' }, /needs --token/],
    [{ backend: 'pkcs11', module: '/m.so', token: 't', op: 'aes-gcm' }, /sign operations only; aes-gcm/],
  ];
  for (const [flags, msg] of cases) {
    let caught: unknown;
    try {
      planHsmBench(flags);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof UsageError && msg.test(caught.message) && !caught.message.includes('\n'), `${JSON.stringify(flags)} → ${(caught as Error | undefined)?.message ?? 'no error'}`);
  }
  const out = await runCli(['bench', 'hsm', '--op', 'random', '--count', '5', '--out', '/nonexistent-dir/result.json']);
  t.equal(out.code, 2, 'an unwritable --out is refused before the run');
  t.match(out.stderr, /^hsmproxy: cannot write \/nonexistent-dir\/result\.json: .*pass --out with a writable path\n$/);
  const r = await runCli(['bench', 'hsm', '--op', 'nope', '--count', '5']);
  t.equal(r.code, 2, 'usage errors exit 2');
  t.match(r.stderr, /^hsmproxy: unknown --op "nope".*\n$/, 'one line on stderr, no stack trace');
  t.equal(r.stderr.split('\n').length, 2);
});

t.test('each percentile\'s split is its own sample\'s, so the parts add up exactly', async (t) => {
  const samples = Array.from({ length: 100 }, (_, i) => ({ totalMs: i + 1, queueMs: i / 2, serviceMs: 0.25 }));
  const s = latencyStats(samples);
  t.same(s.p50, { totalMs: 50, networkMs: 25.25, queueMs: 24.5, serviceMs: 0.25 });
  t.equal(s.p99.totalMs, 99);
  t.equal(s.max.totalMs, 100);
  t.same(latencyStats([{ totalMs: 2 }]).p50, { totalMs: 2, networkMs: 2, queueMs: 0, serviceMs: 0 }, 'without HSM timings everything is network');
  t.equal(latencyStats([{ totalMs: 1, queueMs: 0.7, serviceMs: 0.4 }]).p50.networkMs, 0, 'clock skew never yields a negative network time');
});

t.test('the knee is the first concurrency where p99 more than doubles while throughput stalls', async (t) => {
  const sweep = (rows: Array<[number, number, number]>) => rows.map(([concurrency, opsPerSec, p99Ms]) => ({ concurrency, opsPerSec, p99Ms }));
  t.equal(findKnee(sweep([[1, 1000, 1], [4, 3000, 1.5], [16, 3100, 2.5], [64, 3150, 9]])).concurrency, 16, 'p99 2.5x and +3% ops/s');
  t.equal(findKnee(sweep([[1, 1000, 1], [4, 3000, 2.5], [16, 6000, 5]])).concurrency, null, 'latency grows but so does throughput: no knee');
  t.equal(findKnee(sweep([[16, 3100, 2.5], [1, 1000, 1], [4, 3000, 1.5]])).concurrency, 16, 'order of the input does not matter');
  t.equal(findKnee(sweep([[1, 1000, 1]])).concurrency, null, 'one point has no knee');
});

const hasScript = spawnSync('script', ['--version']).status === 0;
t.test('a terminal sees a live progress line on stderr, erased before the results', { skip: hasScript ? false : 'util-linux `script` (a pseudo-terminal) is not installed' }, async (t) => {
  const tmp = await scratch(t);
  // `script` runs the CLI on a pseudo-terminal, so stderr.isTTY is true as for a user.
  const cmd = `${JSON.stringify(process.execPath)} --import=tsx ${JSON.stringify(cliEntry)} bench hsm --op random --duration 1 --concurrency 2`;
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd: repoRoot, env: { ...process.env, TMPDIR: tmp }, encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 0, r.stderr);
  const out = r.stdout.replaceAll('\u001b[K', '<erase>');
  t.match(out, /\r<erase>random x2: [\d.]+\/1 s, \d+ ops, \d+ ops\/s/, 'progress: operation, concurrency, elapsed of the budget, rate');
  t.match(out, /\r<erase>hsmproxy bench hsm:/, 'the line is erased before the results print');
});

t.test('Ctrl-C ends a run with exit 130, one line, and removes the temporary cluster', async (t) => {
  const { spawn } = await import('node:child_process');
  const tmp = await scratch(t);
  const child = spawn(process.execPath, ['--import=tsx', cliEntry, 'bench', 'hsm', '--duration', '60', '--concurrency', '4'], { cwd: repoRoot, env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  // Interrupt once the run has made its temporary cluster (so the handler is in place).
  for (let i = 0; i < 300 && (await benchDirs(tmp)).length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  t.equal((await benchDirs(tmp)).length, 1, 'the run made a temporary cluster');
  child.kill('SIGINT');
  t.equal(await closed, 130, 'exit code 130, as for an interrupted command');
  t.equal(stderr, 'hsmproxy: interrupted: the temporary cluster and the keys made for the run were removed\n');
  t.same(await benchDirs(tmp), [], 'the temporary cluster is gone');
});
