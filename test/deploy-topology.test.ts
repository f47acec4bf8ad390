// The compose topology without containers: the very files deploy/compose.yaml mounts, with paths
// and ports rewritten to a temp dir and loopback ports. setup.sh init, three `hsm serve`
// processes, setup.sh activate, the demo upstream (deploy/upstream/server.mjs) and
// `hsmproxy serve --config` from deploy/hsmproxy/hsmproxy.yaml; then requests through it. The
// proxy is given its client bundle (the hsm-client volume), never the cluster directory.
import t from 'tap';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { cliEntry, repoRoot, runCli } from './helpers/cli.js';
import { createServer } from 'node:net';
import { freePort, killChild } from './helpers/hsm-cluster.js';
import { curl } from './helpers/proxy-harness.js';

const work = await mkdtemp(join(tmpdir(), 'hsmproxy-topology-'));
const children: ChildProcess[] = [];
t.teardown(async () => {
  for (const c of children.reverse()) await killChild(c, 'SIGKILL');
  await rm(work, { recursive: true, force: true });
});

/**
 * A base port with `n` free consecutive ports (the HSMs' manifest ports), below Linux's ephemeral
 * range so outgoing connections of other processes cannot take them in between.
 */
async function freePortRange(n: number): Promise<number> {
  const free = (port: number) => new Promise<boolean>((resolve) => {
    const s = createServer().once('error', () => resolve(false)).listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 12_000);
    let ok = true;
    for (let i = 0; i < n && ok; i++) ok = await free(base + i);
    if (ok) return base;
  }
  throw new Error(`no ${n} consecutive free ports found`);
}

const clusterDir = join(work, 'data', 'cluster');
const certDir = join(work, 'certs');
const bundleDir = join(work, 'hsm-client');
const setupEnv = {
  ...process.env,
  CLUSTER_DIR: clusterDir, CERT_DIR: certDir, BUNDLE_DIR: bundleDir, BASE_PORT: String(await freePortRange(3)),
  HSMPROXY: `${process.execPath} --import=tsx ${cliEntry}`,
  HSMPROXY_PIN: '', HSMPROXY_NEW_PASSWORD: '',
};

/** Runs deploy/cluster/setup.sh STEP as compose's one-shot containers do. */
function setup(step: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('sh', [join(repoRoot, 'deploy', 'cluster', 'setup.sh'), step], { cwd: repoRoot, env: setupEnv, timeout: 120_000, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
    });
  });
}

/** Spawns a long-running process (killed by PID at teardown); resolves when its output matches `ready`. */
function start(args: string[], ready: RegExp, env: NodeJS.ProcessEnv = {}): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')} not ready within 40 s: ${out}`)), 40_000);
    const onData = (d: string) => {
      out = (out + d).slice(-8000);
      if (ready.test(out)) { clearTimeout(timer); resolve(child); }
    };
    child.stdout!.setEncoding('utf8').on('data', onData);
    child.stderr!.setEncoding('utf8').on('data', onData);
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${args.join(' ')} exited (${code}): ${out}`)); });
  });
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

// Bring the topology up in compose's order, once, before the tests.
let hsmCount = 0;
let hsms: ChildProcess[] = [];
let port = 0;
let admin = '';
const caFile = join(certDir, 'dev-ca.crt');
let proxyConfig = '';
const metrics = async (): Promise<string> => (await fetch(`${admin}/metrics`)).text();

t.before(async () => {
  const init = await setup('init');
  if (init.code !== 0) throw new Error(`setup.sh init failed: ${init.out}`);
  hsmCount = (JSON.parse(await readFile(join(clusterDir, 'cluster.json'), 'utf8')) as { hsms: unknown[] }).hsms.length;
  hsms = await Promise.all([1, 2, 3].map((i) => start(['--import=tsx', cliEntry, 'hsm', 'serve', '--dir', clusterDir, '--hsm', `hsm-${i}`], /HSM listening/)));
  const activate = await setup('activate');
  if (activate.code !== 0) throw new Error(`setup.sh activate failed: ${activate.out}`);

  const upstreamPort = await freePort();
  await start([join(repoRoot, 'deploy', 'upstream', 'server.mjs')], /demo upstream listening/, { HOST: '127.0.0.1', PORT: String(upstreamPort) });

  port = await freePort();
  const adminPort = await freePort();
  const composeConfig = await readFile(join(repoRoot, 'deploy', 'hsmproxy', 'hsmproxy.yaml'), 'utf8');
  const configFile = join(work, 'hsmproxy.yaml');
  proxyConfig = composeConfig
    .replaceAll('/app/data', join(work, 'data')).replaceAll('/app/certs', certDir).replaceAll('/app/hsm-client', bundleDir)
    .replaceAll('address: 0.0.0.0', 'address: 127.0.0.1')
    .replace('port: 8443', `port: ${port}`).replace('port: 9464', `port: ${adminPort}`)
    .replace('http://upstream:8080', `http://127.0.0.1:${upstreamPort}`);
  await writeFile(configFile, proxyConfig);
  const serve = spawn(process.execPath, ['--import=tsx', cliEntry, 'serve', '--config', configFile], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(serve);
  let log = '';
  serve.stderr.setEncoding('utf8').on('data', (d: string) => { log = (log + d).slice(-4000); });
  admin = `http://127.0.0.1:${adminPort}`;
  await waitFor('hsmproxy /readyz', async () => {
    if (serve.exitCode !== null) throw new Error(`hsmproxy serve exited: ${log}`);
    return (await fetch(`${admin}/readyz`)).ok ? true : undefined;
  });
});

t.test('setup.sh made a 3-HSM cluster, and the crypto user credentials are 0600, in the bundle only', async (t) => {
  t.equal(hsmCount, 3);
  t.equal((await stat(join(bundleDir, 'crypto-user.pin'))).mode & 0o777, 0o600);
  t.match(await readFile(join(bundleDir, 'crypto-user.pin'), 'utf8'), /^hsmproxy:\S{16,}$/);
  await t.rejects(stat(join(clusterDir, 'preco.pin')), 'the one-time password file is gone after activation');
  t.same((await readdir(clusterDir)).filter((f) => f.startsWith('crypto-user.pin')), [], 'no copy left in the cluster volume');
});

t.test("the proxy's directory holds only its client bundle: CA certificate, manifest, its own certificate and key, its credentials", async (t) => {
  t.same((await readdir(bundleDir)).sort(), ['client.crt', 'client.key', 'cluster.json', 'crypto-user.pin', 'customer-ca.crt']);
  const keys: string[] = [];
  for (const f of await readdir(bundleDir)) if ((await readFile(join(bundleDir, f), 'utf8')).includes('PRIVATE KEY')) keys.push(f);
  t.same(keys, ['client.key'], 'no private key but its own client key');
  t.equal((await stat(join(bundleDir, 'client.key'))).mode & 0o777, 0o600);
  const cert = new X509Certificate(await readFile(join(bundleDir, 'client.crt')));
  t.match(cert.subject, /CN=hsmproxy/);
  const cluster = JSON.parse(await readFile(join(clusterDir, 'cluster.json'), 'utf8')) as { clientCert: string };
  t.not(cert.fingerprint256, new X509Certificate(await readFile(join(clusterDir, cluster.clientCert))).fingerprint256, "not the cluster's shared client certificate");
  const register = JSON.parse(await readFile(join(clusterDir, 'pki', 'clients.json'), 'utf8')) as { clients: Array<{ name: string; fingerprint256: string }> };
  t.same(register.clients.map((c) => [c.name, c.fingerprint256]), [['hsmproxy', cert.fingerprint256]], 'recorded in the cluster, so it can be revoked');
  t.notOk(proxyConfig.includes(join(work, 'data')), 'the proxy config names nothing in the cluster volume');
});

t.test('a request through hsmproxy reaches the demo upstream, over TLS 1.3 with the demo CA', async (t) => {
  const r = await curl(['--cacert', caFile, '--resolve', `localhost:${port}:127.0.0.1`, '--tlsv1.3', `https://localhost:${port}/hello?x=1`]);
  t.equal(r.status, 200, r.stderr);
  const body = JSON.parse(r.body) as { upstream: string; path: string };
  t.equal(body.upstream, 'demo');
  t.equal(body.path, '/hello?x=1');
});

t.test('a client that offers only RSA signatures gets the RSA certificate, an ECDSA one the ECDSA certificate', async (t) => {
  const ca = await readFile(caFile);
  const keyType = (sigalgs: string) => new Promise<string>((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, sigalgs, minVersion: 'TLSv1.3' }, () => {
      const cert = new X509Certificate(s.getPeerX509Certificate()!.raw);
      s.destroy();
      resolve(cert.publicKey.asymmetricKeyType ?? '');
    });
    s.once('error', reject);
  });
  t.equal(await keyType('rsa_pss_rsae_sha256'), 'rsa');
  t.equal(await keyType('ecdsa_secp256r1_sha256'), 'ec');
});

t.test('/metrics shows the three HSMs up and both certificates with their expiry', async (t) => {
  const text = await waitFor('3 HSMs up', async () => {
    const m = await metrics();
    return [1, 2, 3].every((i) => m.includes(`hsmproxy_hsm_up{hsm="hsm-${i}"} 1`)) ? m : undefined;
  });
  const expiries = [...text.matchAll(/^hsmproxy_certificate_not_after_seconds\{[^}]*\} (\d+)$/gm)].map((m) => Number(m[1]));
  t.equal(expiries.length, 2, 'ECDSA and RSA');
  for (const e of expiries) t.ok(e - Date.now() / 1000 > 390 * 86400 && e - Date.now() / 1000 < 398 * 86400, 'issued for 397 days (demo-pki\'s default)');
});

t.test('running the setup steps again changes nothing (restarting the stack is safe)', async (t) => {
  const pin = await readFile(join(bundleDir, 'crypto-user.pin'), 'utf8');
  const cert = await readFile(join(bundleDir, 'client.crt'), 'utf8');
  for (const step of ['init', 'activate']) {
    const r = await setup(step);
    t.equal(r.code, 0, r.out);
    t.match(r.out, /already/);
  }
  t.equal(await readFile(join(bundleDir, 'crypto-user.pin'), 'utf8'), pin, 'same credentials');
  t.equal(await readFile(join(bundleDir, 'client.crt'), 'utf8'), cert, 'same client certificate');
});

t.test('demo-pki mistakes are one-line errors: no crypto-user credentials, bad --days', async (t) => {
  const out = join(work, 'other-certs');
  for (const [args, pattern] of [
    [['demo-pki', '--dir', clusterDir, '--out', out], /HSMPROXY_PIN/],
    [['demo-pki', '--dir', clusterDir, '--out', out, '--days', '1000'], /--days must be a whole number from 1 to 397/],
  ] as const) {
    const r = await runCli([...args], { env: { HSMPROXY_PIN: '', HSMPROXY_CREDENTIALS: '' } });
    t.not(r.code, 0);
    t.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
    t.match(r.stderr, pattern);
  }
  await t.rejects(stat(out), 'nothing written');
});

t.test('an unknown setup step is a usage error', async (t) => {
  const r = await setup('nope');
  t.equal(r.code, 2);
  t.match(r.out, /usage: setup\.sh init\|activate/);
});

t.test('with one HSM container gone, requests still succeed and the HSM shows as down', async (t) => {
  await killChild(hsms[1]!, 'SIGKILL');
  await waitFor('hsm-2 down', async () => ((await metrics()).includes('hsmproxy_hsm_up{hsm="hsm-2"} 0') ? true : undefined));
  for (let i = 0; i < 3; i++) {
    const r = await curl(['--cacert', caFile, '--resolve', `localhost:${port}:127.0.0.1`, `https://localhost:${port}/after-${i}`]);
    t.equal(r.status, 200, `request ${i}: ${r.stderr}`);
  }
});
