// A real browser through the proxy: headless Chromium (the Debian package) loads a page over
// `hsmproxy serve` (embedded HSM cluster, demo PKI), once on a listener with the RSA certificate and
// once with the ECDSA one. The dev CA is trusted the way a user would trust it, in an NSS database
// (certutil) under a throwaway HOME, never with a flag that ignores certificate errors: the upstream
// receiving the request proves Chromium accepted the chain. The proxy's metrics must show the
// handshakes negotiated X25519MLKEM768, which Chromium offers first, and the requests came over h2. Screenshots go to the test's temp dir.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { prepareServeDir, sample, serveYaml, startServe } from './helpers/serve-fixture.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = ''; let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
    // Chromium forks helpers into its own process group: kill the group, by the PID we started.
    const kill = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { child.kill('SIGKILL'); } }, timeoutMs);
    child.on('close', (code) => { clearTimeout(kill); resolve({ code, stdout, stderr }); });
  });
}

t.test('headless Chromium loads a page through the proxy with the RSA and the ECDSA certificate, over X25519MLKEM768', {
  skip: CHROMIUM ? false : 'chromium is not installed (.ci/run installs the Debian package)',
}, async (t) => {
  const requests: IncomingMessage[] = [];
  const upstream = createServer((req, res) => {
    requests.push(req);
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end('<!doctype html><title>hsmproxy</title><h1 id="ok">served through hsmproxy</h1>');
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => upstream.close(() => resolve())));

  const d = await prepareServeDir();
  t.teardown(() => d.cleanup());
  const up = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  const yaml = serveYaml(d, up).replace(/listeners:[\s\S]*?routes:/, `listeners:
  - name: rsa
    address: 127.0.0.1
    port: 0
    certificates: [{ cert: ${d.pki.rsaChain}, key: ${d.pki.rsaKey} }]
  - name: ecdsa
    address: 127.0.0.1
    port: 0
    certificates: [{ cert: ${d.pki.ecdsaChain}, key: ${d.pki.ecdsaKey} }]
routes:`);
  const proc = await startServe(d, yaml);
  t.teardown(() => proc.stop());
  const ecdsaPort = Number(/and https:\/\/[^/]+:(\d+)\/ \(listener "ecdsa"\)/.exec(proc.stderr())?.[1]);
  t.ok(ecdsaPort > 0, 'the second listener is bound');

  // HOME is where Chromium finds the NSS database ($HOME/.pki/nssdb).
  const home = join(d.dir, 'home');
  const nssdb = join(home, '.pki', 'nssdb');
  mkdirSync(nssdb, { recursive: true });
  const env = { ...process.env, HOME: home };
  const certutil = (args: string[]) => new Promise<void>((resolve, reject) => execFile('certutil', ['-d', `sql:${nssdb}`, ...args], { env, timeout: 30_000 }, (err, _o, stderr) => (err ? reject(new Error(`certutil ${args[0]}: ${stderr}`)) : resolve())));
  await certutil(['-N', '--empty-password']);
  await certutil(['-A', '-t', 'C,,', '-n', 'hsmproxy dev CA', '-i', d.pki.caCert]);

  for (const [listener, port] of [['rsa', proc.port], ['ecdsa', ecdsaPort]] as const) {
    const before = requests.length;
    const shot = join(d.dir, `chromium-${listener}.png`);
    const profile = join(d.dir, `profile-${listener}`);
    mkdirSync(profile);
    const r = await run(CHROMIUM!, [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`, '--window-size=800,600',
      `--screenshot=${shot}`, `https://localhost:${port}/`,
    ], env, 90_000);
    t.ok(existsSync(shot) && statSync(shot).size > 0, `${listener}: screenshot saved (${shot}; exit ${r.code}) ${existsSync(shot) ? '' : r.stderr.slice(-2000)}`);
    const req = requests.slice(before).find((q) => q.url === '/');
    t.ok(req, `${listener}: the page request reached the upstream (Chromium trusted the chain)`);
    t.match(req?.headers['user-agent'] ?? '', /HeadlessChrome|Chrome/, `${listener}: from Chromium`);
  }

  const metrics = await fetch(`http://127.0.0.1:${proc.admin}/metrics`).then((r) => r.text());
  for (const listener of ['rsa', 'ecdsa']) {
    t.ok((sample(metrics, 'hsmproxy_tls_handshakes_total', { result: 'ok', listener, group: 'X25519MLKEM768' }) ?? 0) >= 1,
      `${listener}: handshakes negotiated X25519MLKEM768`);
  }
  // ALPN offers h2 first by default, and Chromium takes it: the pages came over HTTP/2.
  t.ok((sample(metrics, 'hsmproxy_http_request_duration_seconds_count', { method: 'GET', protocol: 'h2' }) ?? 0) >= 1,
    'the pages were served over HTTP/2');
  t.equal(sample(metrics, 'hsmproxy_http_request_duration_seconds_count', { method: 'GET', protocol: 'http1' }), undefined,
    'and none over HTTP/1.1');
  for (const keyType of ['rsa', 'ec']) {
    t.ok((sample(metrics, 'hsmproxy_tls_handshake_duration_seconds_count', { key_type: keyType, group: 'X25519MLKEM768' }) ?? 0) >= 1,
      `handshake duration recorded for the ${keyType} key with group X25519MLKEM768`);
  }
});
