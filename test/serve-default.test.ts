// The README's first command: `hsmproxy serve` with no config starts the embedded default
// (simulated cluster, dev CA and localhost certificates with HSM keys, demo upstream) and
// proxies HTTPS; a second start reuses everything; SIGTERM drains and leaves no HSM processes.
// Uses the default's fixed ports (8443, 9464, 8080): no other test binds them.
import t from 'tap';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { cliEntry } from './helpers/cli.js';

const tsxLoader = createRequire(import.meta.url).resolve('tsx');

function run(cmd: string, args: string[], input = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = execFile(cmd, args, { timeout: 20_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
    // A command that exits without reading (pgrep) must not fail the test with EPIPE.
    c.stdin?.on('error', () => undefined);
    c.stdin?.end(input);
  });
}

interface Served { child: ChildProcess; stderr: () => string; exited: Promise<number | null> }

async function serve(cwd: string): Promise<Served> {
  const child = spawn(process.execPath, [`--import=${tsxLoader}`, cliEntry, 'serve', '--log-level', 'warn'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  child.stdout!.resume();
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 60_000;
  while (!/hsmproxy is serving/.test(err)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`serve did not start:\n${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, stderr: () => err, exited };
}

/** Every file under certs/ (the demo PKI: CA, chains, key references) with its bytes. */
async function certFiles(cwd: string): Promise<Map<string, Buffer>> {
  const dir = join(cwd, 'certs');
  const files = new Map<string, Buffer>();
  for (const name of (await readdir(dir)).sort()) files.set(name, await readFile(join(dir, name)));
  return files;
}

/** Token keys per HSM, as /metrics reports them (after the HSMs' first report: up to 15 s). */
/**
 * Token keys per HSM as /metrics reports them. The gauge comes with each HSM's health check (every
 * second), so it can lag keys made at start: read until two readings a health interval apart agree.
 */
async function tokenKeys(): Promise<string[]> {
  const deadline = Date.now() + 15_000;
  const read = async (): Promise<string[]> => {
    const text = await fetch('http://127.0.0.1:9464/metrics').then((r) => r.text());
    return text.split('\n').filter((l) => /^hsmproxy_hsm_keys\{[^}]*kind="token"/.test(l)).sort();
  };
  let prev = await read();
  for (;;) {
    await new Promise((r) => setTimeout(r, 1_200));
    const cur = await read();
    if ((cur.length > 0 && cur.join() === prev.join()) || Date.now() > deadline) return cur;
    prev = cur;
  }
}

function hsmNodePids(dir: string): Promise<number[]> {
  return run('pgrep', ['-f', dir]).then((r) => r.stdout.split('\n').filter(Boolean).map(Number));
}

t.test('npm start on a fresh directory serves HTTPS with HSM-held keys, then restarts fast and stops cleanly', async (t) => {
  const cwd = await mkdtemp(join(tmpdir(), 'hsmproxy-serve-'));
  t.teardown(() => rm(cwd, { recursive: true, force: true }));

  const first = await serve(cwd);
  t.teardown(() => { if (first.child.exitCode === null) first.child.kill('SIGKILL'); });
  t.match(first.stderr(), /made a dev CA and localhost certificates/);
  t.match(first.stderr(), /curl --cacert certs\/dev-ca\.crt https:\/\/localhost:8443\//, 'prints a curl command that works');
  t.match(first.stderr(), /admin: http:\/\/127\.0\.0\.1:9464\/metrics {2}\/healthz {2}\/readyz {2}\/scaling$/m, 'the admin line lists every endpoint');

  const ca = join(cwd, 'certs', 'dev-ca.crt');
  const got = await run('curl', ['-sS', '--cacert', ca, 'https://localhost:8443/hello?x=1', '-H', 'X-Test: 1']);
  t.equal(got.code, 0, got.stderr);
  const echoed = JSON.parse(got.stdout) as { path: string; headers: Record<string, string> };
  t.equal(echoed.path, '/hello?x=1', 'the demo upstream saw the request');
  t.equal(echoed.headers['x-forwarded-proto'], 'https');

  // Certificate selection by what the client can verify: ECDSA when offered, RSA otherwise.
  const ec = await run('openssl', ['s_client', '-connect', '127.0.0.1:8443', '-servername', 'localhost', '-CAfile', ca]);
  t.match(ec.stdout, /Peer signature type: ECDSA/);
  t.match(ec.stdout, /Verify return code: 0 \(ok\)/);
  const rsa = await run('openssl', ['s_client', '-connect', '127.0.0.1:8443', '-servername', 'localhost', '-CAfile', ca, '-sigalgs', 'rsa_pss_rsae_sha256']);
  t.match(rsa.stdout, /Peer signature type: RSA-PSS/);
  t.match(rsa.stdout, /Verify return code: 0 \(ok\)/);

  const metrics = await fetch('http://127.0.0.1:9464/metrics').then((r) => r.text());
  t.match(metrics, /hsmproxy_tls_handshake_duration_seconds_count\{[^}]*\} [1-9]/, 'handshakes are measured');
  t.match(metrics, /hsmproxy_hsm_request_duration_seconds_count\{[^}]*op="sign"[^}]*\} [1-9]/, 'HSM signatures are measured');
  const ready = await fetch('http://127.0.0.1:9464/readyz');
  t.equal(ready.status, 200);

  t.ok((await hsmNodePids(join(cwd, 'data'))).length >= 2, 'the embedded cluster runs its HSMs as processes');
  const filesBefore = await certFiles(cwd);
  const keysBefore = await tokenKeys();
  t.ok(keysBefore.length >= 2, 'token keys are reported per HSM');
  first.child.kill('SIGTERM');
  t.equal(await first.exited, 0, 'SIGTERM drains and exits 0');
  t.same(await hsmNodePids(join(cwd, 'data')), [], 'no HSM node processes are left behind');

  const second = await serve(cwd);
  t.teardown(() => { if (second.child.exitCode === null) second.child.kill('SIGKILL'); });
  // Reuse, not speed, is what a test can assert: the same cluster, CA and certificates, no new keys.
  t.match(second.stderr(), /reused the dev CA/);
  t.notMatch(second.stderr(), /made a dev CA/);
  const filesAfter = await certFiles(cwd);
  t.same([...filesAfter.keys()], [...filesBefore.keys()], 'no certificate or key reference is added');
  for (const [name, bytes] of filesBefore) t.ok(filesAfter.get(name)!.equals(bytes), `${name} is unchanged`);
  t.same(await tokenKeys(), keysBefore, 'no key is generated in the HSMs');
  const again = await run('curl', ['-sS', '--cacert', ca, 'https://localhost:8443/', '-o', '/dev/null', '-w', '%{http_code}']);
  t.equal(again.stdout, '200');
  second.child.kill('SIGTERM');
  t.equal(await second.exited, 0);
});
