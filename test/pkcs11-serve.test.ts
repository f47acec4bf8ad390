// `hsmproxy serve` with `hsm.mode: pkcs11`: certificates whose keys are on a SoftHSMv2 token,
// TLS 1.3 handshakes from curl and openssl s_client, requests proxied to an upstream.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliEntry } from './helpers/cli.js';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import { openPkcs11Backend } from '../src/engine/pkcs11/backend.js';
import { Engine } from '../src/engine/engine.js';
import { writeKeyReference } from '../src/engine/keyref.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';

const tsxLoader = createRequire(import.meta.url).resolve('tsx');

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = execFile(cmd, args, { timeout: 20_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
    c.stdin?.end('');
  });
}

const skip = softhsmSkipReason();
if (skip) {
  t.test('SoftHSM serve test', { skip }, async () => {});
} else {
  t.test('serve with hsm.mode pkcs11 completes TLS 1.3 handshakes for curl and openssl with token keys', async (t) => {
    const hsm = createSoftHsm();
    hsm.addToken('serve');
    const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-pkcs11-serve-'));
    t.teardown(() => { rmSync(dir, { recursive: true, force: true }); hsm.cleanup(); });

    // Keys on the token and self-signed localhost certificates made through the engine.
    const backend = await openPkcs11Backend({ module: hsm.module, token: 'serve', pin: TEST_PIN, poolSize: 2 });
    const engine = new Engine({ backends: { pkcs11: backend } });
    const files: Array<{ cert: string; key: string }> = [];
    for (const [name, algorithm] of [['ec', { type: 'ec', curve: 'P-256' }], ['rsa', { type: 'rsa', bits: 2048 }]] as const) {
      const handle = engine.adopt(await backend.generateKeyPair({ algorithm, label: `localhost-${name}` }), backend);
      const key = join(dir, `${name}.key.pem`);
      await writeKeyReference(handle, key);
      const cert = await selfSign(await signingKey(await engine.signer(handle), engine.webcrypto()), { subject: 'CN=localhost', sans: ['DNS:localhost', 'IP:127.0.0.1'], days: 2 });
      writeFileSync(join(dir, `${name}.crt`), certPem(cert));
      files.push({ cert: join(dir, `${name}.crt`), key });
    }
    await engine.close();
    const bundle = join(dir, 'trust.pem');
    writeFileSync(bundle, files.map((f) => readFileSync(f.cert, 'utf8')).join(''));

    const upstream = createServer((req, res) => { res.end(`upstream saw ${req.url}`); });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    t.teardown(() => new Promise<void>((r) => upstream.close(() => r())));
    const upstreamPort = (upstream.address() as AddressInfo).port;

    const config = join(dir, 'hsmproxy.yaml');
    writeFileSync(config, [
      'listeners:',
      '  - name: main',
      '    address: 127.0.0.1',
      '    port: 0',
      '    certificates:',
      ...files.map((f) => `      - { cert: ${f.cert}, key: ${f.key} }`),
      '    minVersion: "1.3"',
      'routes:',
      '  - { pathPrefix: /, upstream: app }',
      'upstreams:',
      `  app: { targets: ["http://127.0.0.1:${upstreamPort}"] }`,
      'hsm:',
      '  mode: pkcs11',
      `  module: ${hsm.module}`,
      '  token: serve',
      'admin: { address: 127.0.0.1, port: 0 }',
      'log: { level: warn }',
      '',
    ].join('\n'));

    const child = spawn(process.execPath, [`--import=${tsxLoader}`, cliEntry, 'serve', '--config', config, '--json', '--log-level', 'warn'], {
      env: { ...process.env, ...hsm.env, HSMPROXY_PIN: TEST_PIN }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const deadline = Date.now() + 45_000;
    let summary: { listeners: Array<{ address: AddressInfo }>; hsm: string } | undefined;
    while (!summary) {
      try { summary = JSON.parse(out) as typeof summary; } catch { /* not all printed yet */ }
      if (child.exitCode !== null || Date.now() > deadline) { t.fail(`serve did not start:\n${err}`); return; }
      if (!summary) await new Promise((r) => setTimeout(r, 100));
    }
    t.match(summary.hsm, /PKCS#11 token "serve"/);
    const port = summary.listeners[0]!.address.port;

    const got = await run('curl', ['-sS', '--tlsv1.3', '--cacert', bundle, `https://localhost:${port}/hello`]);
    t.equal(got.code, 0, got.stderr);
    t.equal(got.stdout, 'upstream saw /hello', 'curl got the upstream response over TLS 1.3');

    const ec = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-tls1_3', '-CAfile', bundle]);
    t.match(ec.stdout, /Peer signature type: ECDSA/);
    t.match(ec.stdout, /Verify return code: 0 \(ok\)/);
    const rsa = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-tls1_3', '-CAfile', bundle, '-sigalgs', 'rsa_pss_rsae_sha256']);
    t.match(rsa.stdout, /Peer signature type: RSA-PSS/);
    t.match(rsa.stdout, /Verify return code: 0 \(ok\)/);

    child.kill('SIGTERM');
    t.equal(await exited, 0, 'SIGTERM drains and exits 0');
  });
}
