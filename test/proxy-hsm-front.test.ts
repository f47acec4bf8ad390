// curl through the proxy on the listener hsmproxy serves with — tls/ TlsServer, the certificate's
// key behind the engine (a FakeHsm here) — to the demo upstream: GET, POST with a body, a chunked
// response, a WebSocket echo, and the X-Forwarded-* headers the upstream sees.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { Engine, SimBackend, writeKeyReference } from '../src/engine/index.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';
import { offloadListenerFactory } from '../src/proxy/offload-listener.js';
import { FakeHsm } from './helpers/fake-hsm.js';
import { curl, startHarness, type Harness } from './helpers/proxy-harness.js';

const hsm = new FakeHsm();
const backend = new SimBackend({ client: hsm, clusterId: '6b'.repeat(32), credentials: { user: 'cu1', password: 'secret1' } });
const engine = new Engine({ backends: { sim: backend } });
t.teardown(() => engine.close());

let h: Harness;
let certFile: string;
t.before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-hsm-front-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const made = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'front' });
  const key = join(dir, 'front.key.pem');
  await writeKeyReference(made, key);
  certFile = join(dir, 'front.pem');
  writeFileSync(certFile, certPem(await selfSign(await signingKey(await engine.signer(key), engine.webcrypto()), { subject: 'CN=localhost', sans: ['DNS:localhost'], days: 1 })));
  h = await startHarness(t, `
listeners: [{ name: main, address: 127.0.0.1, port: 0, certificates: [{ cert: "${certFile}", key: "${key}" }] }]
routes: [{ upstream: [ "{{up0}}" ] }]
admin: { address: 127.0.0.1, port: 0 }
`, { proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } });
});

const get = (path: string, args: string[] = []) => curl(['--cacert', certFile, '--resolve', `localhost:${h.port}:127.0.0.1`, ...args, `https://localhost:${h.port}${path}`]);

t.test('GET reaches the upstream with Host kept, and the handshake was signed in the HSM', async (t) => {
  const before = hsm.signCalls;
  const r = await get('/hello?x=1');
  t.equal(r.status, 200, r.stderr);
  const echo = JSON.parse(r.body);
  t.equal(echo.path, '/hello?x=1');
  t.equal(echo.headers.host, `localhost:${h.port}`);
  t.ok(hsm.signCalls > before, 'the CertificateVerify signature came from the HSM');
});

t.test('POST forwards a 48 KB body intact', async (t) => {
  const body = randomBytes(36 * 1024).toString('base64');
  const file = join(h.dir, 'post.txt');
  writeFileSync(file, body);
  const r = await get('/submit', ['--data-binary', `@${file}`, '-H', 'content-type: text/plain']);
  t.equal(r.status, 200, r.stderr);
  const echo = JSON.parse(r.body);
  t.equal(echo.method, 'POST');
  t.equal(echo.body, body);
});

t.test('a chunked upstream response arrives whole and chunked', async (t) => {
  const r = await get('/chunked?n=50', ['--http1.1']);
  t.equal(r.status, 200, r.stderr);
  t.match(r.headers, /transfer-encoding: chunked/);
  t.equal(r.body.split('\n').filter(Boolean).length, 50);
});

t.test('the upstream sees X-Forwarded-For, -Proto, -Host and a request id', async (t) => {
  const echo = JSON.parse((await get('/')).body);
  t.equal(echo.headers['x-forwarded-for'], '127.0.0.1');
  t.equal(echo.headers['x-forwarded-proto'], 'https');
  t.equal(echo.headers['x-forwarded-host'], `localhost:${h.port}`);
  t.match(echo.headers['x-request-id'], /^[0-9a-f-]{36}$/);
});

t.test('a WebSocket echoes through the HSM-backed listener', async (t) => {
  const { readFileSync } = await import('node:fs');
  const ws = new WebSocket(`wss://localhost:${h.port}/ws`, { ca: readFileSync(certFile) });
  t.teardown(() => ws.terminate());
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
  const got = new Promise<string>((resolve) => ws.once('message', (d) => resolve(String(d))));
  ws.send('ping through the HSM front');
  t.equal(await got, 'ping through the HSM front');
});
