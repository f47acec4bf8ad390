// curl through the proxy (node:tls front) to the demo upstream: what a client and the upstream see.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import WebSocket from 'ws';
import { baseYaml, startHarness, type Harness } from './helpers/proxy-harness.js';

let h: Harness;
t.before(async () => {
  h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]'));
});

t.test('GET is proxied with the Host header preserved', async (t) => {
  const r = await h.curl('/hello?x=1');
  t.equal(r.status, 200, r.stderr);
  const echo = JSON.parse(r.body);
  t.equal(echo.method, 'GET');
  t.equal(echo.path, '/hello?x=1');
  t.equal(echo.headers.host, `localhost:${h.port}`);
});

t.test('POST forwards the request body intact', async (t) => {
  const file = join(h.dir, 'body.bin');
  const payload = randomBytes(48 * 1024).toString('base64');
  writeFileSync(file, payload);
  const r = await h.curl('/submit', ['--data-binary', `@${file}`, '-H', 'content-type: text/plain']);
  t.equal(r.status, 200, r.stderr);
  const echo = JSON.parse(r.body);
  t.equal(echo.method, 'POST');
  t.equal(echo.body, readFileSync(file, 'utf8'));
});

t.test('a chunked upstream response reaches the client whole and chunked', async (t) => {
  const r = await h.curl('/chunked?n=200', ['--http1.1']);
  t.equal(r.status, 200, r.stderr);
  t.match(r.headers, /transfer-encoding: chunked/);
  const lines = r.body.trim().split('\n');
  t.equal(lines.length, 200);
  t.equal(lines[199], 'chunk 199');
});

t.test('the upstream sees X-Forwarded-For, -Proto, -Host and a generated X-Request-Id', async (t) => {
  const r = await h.curl('/');
  const echo = JSON.parse(r.body);
  t.equal(echo.headers['x-forwarded-for'], '127.0.0.1');
  t.equal(echo.headers['x-forwarded-proto'], 'https');
  t.equal(echo.headers['x-forwarded-host'], `localhost:${h.port}`);
  t.match(echo.headers['x-request-id'], /^[0-9a-f-]{36}$/);
  t.match(r.headers, `x-request-id: ${echo.headers['x-request-id']}`, 'the client gets the same id back');
});

t.test('a client-supplied X-Request-Id is kept; an untrusted client\'s X-Forwarded-For is replaced, not appended to', async (t) => {
  const r = await h.curl('/', ['-H', 'x-request-id: abc-123', '-H', 'x-forwarded-for: 10.1.2.3']);
  const echo = JSON.parse(r.body);
  t.equal(echo.headers['x-request-id'], 'abc-123');
  t.equal(echo.headers['x-forwarded-for'], '127.0.0.1');
});

t.test('a trusted proxy\'s X-Forwarded-For chain is kept and the peer appended', async (t) => {
  const h2 = await startHarness(t, `${baseYaml('  - upstream: [ "{{up0}}" ]')}trustedProxies: [ 127.0.0.0/8 ]\n`);
  const r = await h2.curl('/', ['-H', 'x-forwarded-for: 10.1.2.3', '-H', 'x-forwarded-proto: http']);
  const echo = JSON.parse(r.body);
  t.equal(echo.headers['x-forwarded-for'], '10.1.2.3, 127.0.0.1');
  t.equal(echo.headers['x-forwarded-proto'], 'http', 'what the trusted proxy saw is kept');
});

t.test('hop-by-hop headers and those the client lists in Connection do not reach the upstream', async (t) => {
  const r = await h.curl('/', ['--http1.1', '-H', 'connection: keep-alive, x-secret', '-H', 'x-secret: 1', '-H', 'proxy-authorization: Basic Zm9vOmJhcg==', '-H', 'te: trailers', '-H', 'x-kept: yes']);
  const seen = JSON.parse(r.body).headers;
  t.equal(seen['x-secret'], undefined);
  t.equal(seen['proxy-authorization'], undefined);
  t.equal(seen.te, undefined);
  t.equal(seen['x-kept'], 'yes', 'end-to-end headers pass');
});

t.test('a malformed X-Request-Id is replaced', async (t) => {
  const r = await h.curl('/', ['-H', 'x-request-id: bad id with spaces']);
  t.match(JSON.parse(r.body).headers['x-request-id'], /^[0-9a-f-]{36}$/);
});

t.test('a WebSocket echoes through the proxy', async (t) => {
  const ws = new WebSocket(`wss://localhost:${h.port}/ws`, { ca: readFileSync(h.ca) });
  const reply = await new Promise<string>((resolve, reject) => {
    ws.once('open', () => ws.send('ping through hsmproxy'));
    ws.once('message', (data) => resolve(String(data)));
    ws.once('error', reject);
  });
  ws.close();
  t.equal(reply, 'ping through hsmproxy');
  t.ok(h.logs.some((l) => l.type === 'access' && l.status === 101 && l.upgrade === 'websocket' && l.path === '/ws'), 'the upgrade is in the access log');
});

t.test('each request writes one access log line with the documented fields', async (t) => {
  const r = await h.curl('/logged', ['-H', 'x-request-id: log-me']);
  t.equal(r.status, 200);
  await new Promise((res) => setTimeout(res, 50));
  const line = h.logs.find((l) => l.type === 'access' && l.requestId === 'log-me');
  t.ok(line, 'access line found');
  t.match(line, { method: 'GET', host: `localhost:${h.port}`, path: '/logged', status: 200, upstream: h.upstreams[0]!.url, tlsVersion: 'TLSv1.3', resumed: false });
  t.ok((line!.bytes as number) > 0, 'bytes counted');
  t.type(line!.durationMs, 'number');
});

t.test('a request matching no route gets a 404 that says so', async (t) => {
  const h2 = await startHarness(t, baseYaml('  - { pathPrefix: /only, upstream: [ "{{up0}}" ] }'));
  const r = await h2.curl('/elsewhere');
  t.equal(r.status, 404);
  t.match(r.body, /no route matches this host and path/);
});

/** Sends raw requests on one TLS connection; resolves with everything read until the server closes (or 3 s pass). */
function rawExchange(requests: string): Promise<{ text: string; closedByServer: boolean }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: h.port, servername: 'localhost', ca: readFileSync(h.ca) }, () => s.write(requests));
    let text = '';
    s.setEncoding('utf8').on('data', (d: string) => { text += d; });
    const timer = setTimeout(() => { s.destroy(); resolve({ text, closedByServer: false }); }, 3000);
    s.once('end', () => { clearTimeout(timer); s.destroy(); resolve({ text, closedByServer: true }); });
    s.once('error', reject);
  });
}

t.test('a client\'s Connection: close ends its connection after the response, whatever the upstream says', async (t) => {
  const r = await rawExchange('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
  t.match(r.text, /^HTTP\/1\.1 200/);
  t.match(r.text.toLowerCase(), /\r\nconnection: close\r\n/, 'the response says close');
  t.ok(r.closedByServer, 'the proxy closed the connection');
});

t.test('the upstream\'s own Connection and Keep-Alive headers do not reach the client', async (t) => {
  const r = await rawExchange('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
  const head = r.text.toLowerCase().split('\r\n\r\n')[0]!;
  t.notMatch(head, /\r\nkeep-alive:/, 'no upstream Keep-Alive header');
  t.match(head, /\r\nconnection: keep-alive/, 'the client connection stays open (HTTP/1.1 default)');
  t.notOk(r.closedByServer);
});
