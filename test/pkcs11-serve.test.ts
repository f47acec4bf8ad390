// `hsmproxy serve` with `hsm.mode: pkcs11`: certificates whose keys are on a SoftHSMv2 token,
// TLS 1.3 handshakes from curl and openssl s_client, requests proxied to an upstream.
import t, { type Test } from 'tap';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { cliEntry } from './helpers/cli.js';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import { openPkcs11Backend } from '../src/engine/pkcs11/backend.js';
import { Engine } from '../src/engine/engine.js';
import { writeKeyReference, type KeyRef } from '../src/engine/keyref.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';

const tsxLoader = createRequire(import.meta.url).resolve('tsx');

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = execFile(cmd, args, { timeout: 20_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
    c.stdin?.end('');
  });
}

interface Summary { listeners: Array<{ name: string; address: AddressInfo }>; hsm: string; pkcs11?: { sessions: number; threadPool: number } }

const executable = fileURLToPath(new URL('../src/cli/entry.cjs', import.meta.url));

/** Spawns `hsmproxy serve --config FILE --json` and waits for its summary (undefined: it failed, test failed). */
async function startServe(t: Test, config: string, env: NodeJS.ProcessEnv, how: { executable?: boolean } = {}): Promise<{ summary: Summary; logs: string; exited: Promise<number | null>; child: ChildProcess } | undefined> {
  // The executable (entry.cjs) as installed, or main.ts under tsx as the other tests run the CLI.
  const entry = how.executable ? [executable] : [`--import=${tsxLoader}`, cliEntry];
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env, HSMPROXY_PIN: TEST_PIN };
  if (env.UV_THREADPOOL_SIZE === undefined) delete childEnv.UV_THREADPOOL_SIZE;
  const child = spawn(process.execPath, [...entry, 'serve', '--config', config, '--json', '--log-level', 'warn'], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const deadline = Date.now() + 45_000;
  for (;;) {
    // Warnings are log lines before the summary (an indented JSON document).
    const at = out.search(/^\{$/m);
    try { if (at >= 0) return { summary: JSON.parse(out.slice(at)) as Summary, logs: out.slice(0, at), exited, child }; } catch { /* not all printed yet */ }
    if (child.exitCode !== null || Date.now() > deadline) { t.fail(`serve did not start:\n${err}`); return undefined; }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const skip = softhsmSkipReason();
if (skip) {
  t.test('SoftHSM serve test', { skip }, async () => {});
} else {
  // Every token before the first backend opens: SoftHSM reads its config once per process.
  const hsm = createSoftHsm();
  for (const label of ['serve', 'site-a', 'site-b']) hsm.addToken(label);
  t.teardown(() => hsm.cleanup());

  t.test('serve with hsm.mode pkcs11 completes TLS 1.3 handshakes for curl and openssl with token keys', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-pkcs11-serve-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));

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

    const served = await startServe(t, config, hsm.env);
    if (!served) return;
    const { summary, exited, child } = served;
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

  t.test('serve with hsm.allowedModules opens the token each reference names; hsm.module overrides the recorded module', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-pkcs11-serve-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    // One key per token, each with a certificate for its own name.
    const sites: Record<string, { cert: string; key: string; moved: string; pem: string }> = {};
    for (const token of ['site-a', 'site-b']) {
      const backend = await openPkcs11Backend({ module: hsm.module, token, pin: TEST_PIN, poolSize: 1 });
      const engine = new Engine({ backends: { pkcs11: backend } });
      const handle = engine.adopt(await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: token }), backend);
      const key = join(dir, `${token}.key.pem`);
      await writeKeyReference(handle, key);
      // The same key as recorded on a machine where the module lives elsewhere.
      const moved = join(dir, `${token}.moved.key.pem`);
      await writeKeyReference({ ...handle.ref!, module: join(dir, 'elsewhere', 'libsofthsm2.so') } as KeyRef, moved);
      const pem = certPem(await selfSign(await signingKey(await engine.signer(handle), engine.webcrypto()), { subject: `CN=${token}.localhost`, sans: [`DNS:${token}.localhost`], days: 2 }));
      writeFileSync(join(dir, `${token}.crt`), pem);
      sites[token] = { cert: join(dir, `${token}.crt`), key, moved, pem };
      await engine.close();
    }
    let configs = 0;
    const configWith = (hsmLines: string[], keyOf: (s: { key: string; moved: string }) => string): string => {
      const file = join(dir, `serve-${++configs}.yaml`);
      writeFileSync(file, [
        'listeners:',
        ...Object.entries(sites).flatMap(([name, s]) => [
          `  - { name: ${name}, address: 127.0.0.1, port: 0, minVersion: "1.3", certificates: [{ cert: ${s.cert}, key: ${keyOf(s)} }] }`,
        ]),
        'routes:',
        '  - { pathPrefix: /, upstream: app }',
        'upstreams:',
        '  app: { targets: ["http://127.0.0.1:9"] }',
        'hsm:',
        ...hsmLines,
        'admin: { address: 127.0.0.1, port: 0 }',
        'log: { level: warn }',
        '',
      ].join('\n'));
      return file;
    };
    /** The certificate each listener presents in a TLS 1.3 handshake that the client verified. */
    const presented = async (summary: Summary, name: string): Promise<string> => {
      const port = summary.listeners.find((l) => l.name === name)!.address.port;
      return new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port, servername: `${name}.localhost`, ca: sites[name]!.pem, minVersion: 'TLSv1.3' }, () => {
          const raw = s.getPeerCertificate().raw;
          s.destroy();
          resolve(new X509Certificate(raw).toString());
        });
        s.on('error', reject);
      });
    };

    const plain = await startServe(t, configWith(['  mode: pkcs11', `  allowedModules: [${hsm.module}]`], (s) => s.key), hsm.env);
    if (!plain) return;
    t.match(plain.summary.hsm, /^PKCS#11 tokens "site-a" via .*, "site-b" via |^PKCS#11 tokens "site-b" via .*, "site-a" via /, 'both tokens opened');
    for (const name of Object.keys(sites)) t.equal(await presented(plain.summary, name), new X509Certificate(sites[name]!.pem).toString(), `${name} handshakes with its token's key`);
    plain.child.kill('SIGTERM');
    t.equal(await plain.exited, 0);

    const overridden = await startServe(t, configWith(['  mode: pkcs11', `  module: ${hsm.module}`], (s) => s.moved), hsm.env);
    if (!overridden) return;
    for (const name of Object.keys(sites)) t.equal(await presented(overridden.summary, name), new X509Certificate(sites[name]!.pem).toString(), `${name} through hsm.module, not the recorded path`);
    overridden.child.kill('SIGTERM');
    t.equal(await overridden.exited, 0);
  });

  t.test('the hsmproxy executable sizes the libuv thread pool for hsm.sessions, unless UV_THREADPOOL_SIZE is set', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-pkcs11-serve-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const backend = await openPkcs11Backend({ module: hsm.module, token: 'serve', pin: TEST_PIN, poolSize: 1 });
    const engine = new Engine({ backends: { pkcs11: backend } });
    const handle = engine.adopt(await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'threads' }), backend);
    const key = join(dir, 'threads.key.pem');
    await writeKeyReference(handle, key);
    writeFileSync(join(dir, 'threads.crt'), certPem(await selfSign(await signingKey(await engine.signer(handle), engine.webcrypto()), { subject: 'CN=localhost', sans: ['DNS:localhost'], days: 2 })));
    await engine.close();
    const configWith = (name: string, hsmLines: string[]): string => {
      const file = join(dir, `${name}.yaml`);
      writeFileSync(file, [
        'listeners:',
        `  - { name: main, address: 127.0.0.1, port: 0, certificates: [{ cert: ${join(dir, 'threads.crt')}, key: ${key} }] }`,
        'routes: [{ upstream: app }]',
        'upstreams: { app: { targets: ["http://127.0.0.1:9"] } }',
        'hsm:',
        '  mode: pkcs11',
        `  allowedModules: [${hsm.module}]`,
        ...hsmLines,
        'admin: { address: 127.0.0.1, port: 0 }',
        '',
      ].join('\n'));
      return file;
    };
    for (const [what, file, env, expected] of [
      ['defaults: 8 sessions, 16 threads', configWith('default', []), {}, { sessions: 8, threadPool: 16 }],
      ['30 sessions get 32 threads', configWith('thirty', ['  sessions: 30']), {}, { sessions: 30, threadPool: 32 }],
      ['a UV_THREADPOOL_SIZE the user set is kept', configWith('thirty', ['  sessions: 30']), { UV_THREADPOOL_SIZE: '6' }, { sessions: 30, threadPool: 6 }],
    ] as const) {
      const served = await startServe(t, file, { ...hsm.env, ...env }, { executable: true });
      if (!served) return;
      t.same(served.summary.pkcs11, expected, what);
      if (expected.threadPool < expected.sessions + 2) t.match(served.logs, /UV_THREADPOOL_SIZE 6 is below hsm\.sessions \+ 2: fewer than 30 signatures can run at once/, 'and serve warns');
      else t.equal(served.logs, '', 'no warning');
      served.child.kill('SIGTERM');
      t.equal(await served.exited, 0);
    }
  });
}
