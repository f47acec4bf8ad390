// HTTP/2 to clients (ALPN h2) on both listeners (tls/ TlsServer with the key behind the engine,
// and node:tls): the same routing, header policy and forwarder as HTTP/1.1, checked with curl,
// node:http2, nghttp and h2load; response hop-by-hop fields dropped and trailers passed; the
// protocol label in metrics and logs; GOAWAY and drain on shutdown.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Engine, SimBackend, writeKeyReference } from '../src/engine/index.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';
import { offloadListenerFactory } from '../src/proxy/offload-listener.js';
import { FakeHsm } from './helpers/fake-hsm.js';
import { h2connect, h2request } from './helpers/h2-client.js';
import { baseYaml, curl, startHarness, type Harness } from './helpers/proxy-harness.js';

function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** An upstream whose answers carry hop-by-hop fields and trailers. */
async function startFieldsUpstream(t: Test): Promise<string> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, {
        connection: 'x-drop-me', 'x-drop-me': 'secret', 'keep-alive': 'timeout=5', 'x-kept': 'yes',
        trailer: 'x-checksum', 'content-type': 'text/plain',
      });
      res.write('first,');
      res.addTrailers({ 'x-checksum': 'abc123' });
      res.end('second');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const ROUTES = `
  - pathPrefix: /fields
    host: localhost
    upstream: [ "{{fields}}" ]
  - pathPrefix: /dead
    host: localhost
    upstream: [ "http://127.0.0.1:1" ]
  - pathPrefix: /
    host: localhost
    upstream: [ "{{up0}}" ]`;

async function nodeTlsFront(t: Test): Promise<Harness> {
  const fields = await startFieldsUpstream(t);
  return startHarness(t, baseYaml(ROUTES.replace('{{fields}}', fields)));
}

async function offloadFront(t: Test): Promise<Harness> {
  const fields = await startFieldsUpstream(t);
  const hsm = new FakeHsm();
  const backend = new SimBackend({ client: hsm, clusterId: '6c'.repeat(32), credentials: { user: 'cu1', password: 'secret1' } });
  const engine = new Engine({ backends: { sim: backend } });
  t.teardown(() => engine.close());
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-h2-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const made = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'h2front' });
  const key = join(dir, 'front.key.pem');
  await writeKeyReference(made, key);
  const cert = join(dir, 'front.pem');
  writeFileSync(cert, certPem(await selfSign(await signingKey(await engine.signer(key), engine.webcrypto()), { subject: 'CN=localhost', sans: ['DNS:localhost'], days: 1 })));
  const h = await startHarness(t, `
listeners: [{ name: main, address: 127.0.0.1, port: 0, certificates: [{ cert: "${cert}", key: "${key}" }] }]
routes:${ROUTES.replace('{{fields}}', fields)}
admin: { address: 127.0.0.1, port: 0 }
`, { proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } });
  // The self-signed leaf is its own trust anchor.
  return { ...h, ca: cert, curl: (path, args = [], host = 'localhost') => curl(['--cacert', cert, '--resolve', `${host}:${h.port}:127.0.0.1`, ...args, `https://${host}:${h.port}${path}`]) };
}

for (const [name, front] of [['tls/ TlsServer (offload)', offloadFront], ['node:tls', nodeTlsFront]] as const) {
  t.test(`${name}: HTTP/2 requests take the HTTP/1.1 path to the upstream`, async (t) => {
    const h = await front(t);

    t.test('curl --http2 negotiates h2 and gets the upstream answer with the header policy applied', async (t) => {
      const r = await h.curl('/hello?x=1', ['--http2', '-v', '-H', 'x-forwarded-for: 6.6.6.6', '-H', 'x-client-cert-verify: SUCCESS']);
      t.equal(r.exitCode, 0, r.stderr);
      t.match(r.stderr, /ALPN: server accepted h2/);
      t.match(r.headers, /^http\/2 200/);
      const echo = JSON.parse(r.body);
      t.equal(echo.path, '/hello?x=1');
      t.equal(echo.headers.host, `localhost:${h.port}`, ':authority becomes Host');
      t.equal(echo.headers['x-forwarded-for'], '127.0.0.1', 'an untrusted client cannot claim an address');
      t.equal(echo.headers['x-forwarded-proto'], 'https');
      t.equal(echo.headers['x-client-cert-verify'], 'NONE', 'a client-sent certificate header is replaced');
      t.match(echo.headers['x-request-id'], /^[0-9a-f-]{36}$/);
    });

    t.test('a 3 MiB upload streams through flow control intact; 20 streams share one connection', async (t) => {
      const s = await h2connect(h.port, h.ca);
      t.teardown(() => s.close());
      const body = randomBytes(3 << 20);
      const up = await h2request(s, { ':path': '/upload', 'content-type': 'application/octet-stream' }, body, 60_000);
      t.equal(up.status, 200);
      t.equal(JSON.parse(up.body.toString()).bytes, body.length);
      const all = await Promise.all(Array.from({ length: 20 }, (_, i) => h2request(s, { ':path': `/slow?ms=100&i=${i}` })));
      t.same(all.map((r) => r.status), Array(20).fill(200));
      t.same(all.map((r) => JSON.parse(r.body.toString()).path), Array.from({ length: 20 }, (_, i) => `/slow?ms=100&i=${i}`));
    });
  });
}

t.test('node:tls listener: protocol details a client notices', async (t) => {
  const h = await nodeTlsFront(t);
  const s = await h2connect(h.port, h.ca);
  t.teardown(() => s.close());

  t.test('an h2-only client is served, and HTTP/1.1 clients still get HTTP/1.1', async (t) => {
    const only = await h2connect(h.port, h.ca, { ALPNProtocols: ['h2'] });
    t.teardown(() => only.close());
    t.equal((only.socket as tls.TLSSocket).alpnProtocol, 'h2');
    t.equal((await h2request(only, { ':path': '/a' })).status, 200);
    const r = await h.curl('/a', ['--http1.1']);
    t.match(r.headers, /^http\/1\.1 200/);
  });

  t.test('HTTP/2 with prior knowledge in cleartext is refused: this port speaks TLS only', async (t) => {
    const r = await curl(['--http2-prior-knowledge', `http://127.0.0.1:${h.port}/a`], 10_000);
    t.not(r.exitCode, 0);
    t.equal(r.status, 0, 'no HTTP answer');
  });

  t.test('connection-specific response fields are dropped (RFC 9113 §8.2.2) and trailers pass', async (t) => {
    const r = await h2request(s, { ':path': '/fields' });
    t.equal(r.status, 200);
    t.equal(r.body.toString(), 'first,second');
    t.equal(r.headers['x-kept'], 'yes');
    for (const f of ['connection', 'keep-alive', 'x-drop-me', 'transfer-encoding', 'trailer']) t.equal(r.headers[f], undefined, f);
    t.equal(r.trailers['x-checksum'], 'abc123');
  });

  t.test('no route is a 404 and a dead upstream a 502 on their stream; the connection carries on', async (t) => {
    const nohost = await h2request(s, { ':path': '/a', ':authority': `other.example:${h.port}` });
    t.equal(nohost.status, 404);
    const dead = await h2request(s, { ':path': '/dead' });
    t.equal(dead.status, 502);
    t.equal((await h2request(s, { ':path': '/a' })).status, 200, 'same session still serves');
  });

  t.test('nghttp fetches over h2', async (t) => {
    const r = await run('nghttp', ['-nv', '-H', `:authority: localhost:${h.port}`, `https://127.0.0.1:${h.port}/nghttp`]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /:status: 200/);
  });

  t.test('h2load -c 16 -m 10: every request answered 2xx', async (t) => {
    const r = await run('h2load', ['-c', '16', '-m', '10', '-n', '1600', '-H', `:authority: localhost:${h.port}`, `https://127.0.0.1:${h.port}/load`], 120_000);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /requests: 1600 total, 1600 started, 1600 done, 1600 succeeded, 0 failed, 0 errored/);
    t.match(r.stdout, /status codes: 1600 2xx/);
  });

  t.test('metrics and the access log say which protocol each request used', async (t) => {
    const admin = h.proxy.adminAddress()!;
    const text = await (await fetch(`http://127.0.0.1:${admin.port}/metrics`)).text();
    t.match(text, /hsmproxy_http_request_duration_seconds_count\{[^}]*protocol="h2"[^}]*\} \d+/);
    t.match(text, /hsmproxy_http_request_duration_seconds_count\{[^}]*protocol="http1"[^}]*\} \d+/);
    const access = h.logs.filter((l) => l.type === 'access');
    t.ok(access.some((l) => l.protocol === 'h2' && l.path === '/fields'));
    t.ok(access.some((l) => l.protocol === 'http1'));
  });
});

t.test('graceful shutdown sends GOAWAY and lets open streams finish', async (t) => {
  const h = await nodeTlsFront(t);
  const s = await h2connect(h.port, h.ca);
  t.teardown(() => s.destroy());
  const goaway = new Promise<number>((resolve) => s.once('goaway', (code: number) => resolve(code)));
  const slow = h2request(s, { ':path': '/slow?ms=600' });
  // The stream is open at the upstream before shutdown starts.
  await h2request(s, { ':path': '/ready' });
  const report = h.proxy.shutdown(10_000);
  t.equal(await goaway, 0, 'GOAWAY with NO_ERROR');
  const r = await slow;
  t.equal(r.status, 200, 'the stream in flight completed');
  t.equal(JSON.parse(r.body.toString()).path, '/slow?ms=600');
  const done = await report;
  t.equal(done.drained, true, 'nothing had to be forced');
  t.equal(done.forcedConnections, 0);
});

t.test('a reload that closes a listener sends its HTTP/2 clients GOAWAY; their open streams finish', async (t) => {
  const h = await nodeTlsFront(t);
  const s = await h2connect(h.port, h.ca);
  t.teardown(() => s.destroy());
  const goaway = new Promise<number>((resolve) => s.once('goaway', (code: number) => resolve(code)));
  const slow = h2request(s, { ':path': '/slow?ms=600' });
  await h2request(s, { ':path': '/ready' });
  const fields = h.proxy.config.routes.find((r) => r.pathPrefix === '/fields')!;
  const next = baseYaml(ROUTES.replace('{{fields}}', h.proxy.config.upstreams[fields.upstream]!.targets[0]!)).replace('name: main', 'name: moved');
  await h.proxy.reload(h.config(next));
  t.equal(await goaway, 0, 'GOAWAY with NO_ERROR');
  t.equal((await slow).status, 200, 'the stream in flight completed');
  const moved = await h2connect(h.proxy.listenerAddress('moved')!.port, h.ca);
  t.teardown(() => moved.close());
  t.equal((await h2request(moved, { ':path': '/again' })).status, 200, 'the new listener serves h2');
});
