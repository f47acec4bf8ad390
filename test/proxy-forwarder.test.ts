// The undici forwarder end to end (node:tls listener): bodies streamed both ways, client aborts
// reaching the upstream, upstream resets and a full queue answered with the right status, and
// the HTTP/1.1 details a client notices (100-continue, HTTP/1.0, HEAD).
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { baseYaml, startHarness, type Harness } from './helpers/proxy-harness.js';

interface TestUpstream { url: string; aborted: string[]; seen: string[]; close(): Promise<void> }

const MiB = 1024 * 1024;

/** An upstream with the endpoints these tests need. */
async function startUpstream(): Promise<TestUpstream> {
  const aborted: string[] = [];
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    seen.push(`${req.method} ${url}`);
    res.on('close', () => { if (!res.writableFinished) aborted.push(url); });
    if (url === '/sink') {
      const h = createHash('sha256');
      let n = 0;
      req.on('data', (c: Buffer) => { h.update(c); n += c.length; });
      req.on('end', () => res.end(JSON.stringify({ bytes: n, sha256: h.digest('hex'), framing: req.headers['transfer-encoding'] ?? 'content-length' })));
      return;
    }
    if (url.startsWith('/source')) {
      const total = Number(new URL(url, 'http://x').searchParams.get('bytes'));
      res.writeHead(200, { 'content-type': 'application/octet-stream' }); // chunked
      let sent = 0;
      const block = Buffer.alloc(64 * 1024);
      const pump = () => {
        while (sent < total) {
          const n = Math.min(block.length, total - sent);
          block.fill(sent & 0xff, 0, n);
          sent += n;
          if (!res.write(n === block.length ? block : block.subarray(0, n))) { res.once('drain', pump); return; }
        }
        res.end();
      };
      pump();
      return;
    }
    if (url === '/hang') return; // never answers
    if (url === '/reset') { req.socket.destroy(); return; }
    if (url === '/reset-mid-body') {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('x'.repeat(10), () => setTimeout(() => req.socket.destroy(), 20));
      return;
    }
    if (url === '/close') { res.writeHead(200, { connection: 'close', 'content-length': '2' }); res.end('ok'); return; }
    if (url === '/head') { res.writeHead(200, { 'content-length': '1234', 'content-type': 'text/plain' }); res.end(req.method === 'HEAD' ? undefined : 'x'.repeat(1234)); return; }
    req.resume();
    req.on('end', () => res.end(`${req.method} ${url} ${req.headers['content-length'] ?? '-'}\n`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, aborted, seen,
    close: () => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }),
  };
}

async function harness(t: Test, upstreams = ''): Promise<{ h: Harness; up: TestUpstream }> {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const h = await startHarness(t, baseYaml(upstreams ? '  - upstream: pool' : `  - upstream: [ "${up.url}" ]`, upstreams.replaceAll('{{test}}', up.url)));
  return { h, up };
}

/** Raw exchange on one TLS connection: writes `parts` (waiting `gapMs` between them), collects until close or `ms`. */
function raw(h: Harness, parts: Array<string | Buffer>, opts: { ms?: number; gapMs?: number; until?: (text: string) => boolean } = {}): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: h.port, servername: 'localhost', ca: readFileSync(h.ca) }, async () => {
      for (const p of parts) {
        s.write(p);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
    });
    let text = '';
    const done = (closed: boolean) => { clearTimeout(timer); s.destroy(); resolve({ text, closed }); };
    s.setEncoding('latin1').on('data', (d: string) => { text += d; if (opts.until?.(text)) done(false); });
    const timer = setTimeout(() => done(false), opts.ms ?? 3000);
    s.once('end', () => done(true));
    s.once('error', reject);
  });
}

t.test('a 32 MiB chunked upload and a 32 MiB download stream through intact', async (t) => {
  const { h } = await harness(t);
  const agent = new https.Agent({ ca: readFileSync(h.ca), keepAlive: false });
  t.teardown(() => agent.destroy());
  const expected = createHash('sha256');
  const up = await new Promise<{ bytes: number; sha256: string; framing: string }>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: h.port, servername: 'localhost', path: '/sink', method: 'POST', agent, headers: { host: 'localhost' } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve(JSON.parse(body)));
    });
    req.on('error', reject);
    let sent = 0;
    const block = Buffer.alloc(256 * 1024);
    const pump = () => {
      while (sent < 32 * MiB) {
        block.fill((sent >> 18) & 0xff);
        expected.update(block);
        sent += block.length;
        if (!req.write(block)) { req.once('drain', pump); return; }
      }
      req.end();
    };
    pump();
  });
  t.equal(up.bytes, 32 * MiB, 'every byte of the upload reached the upstream');
  t.equal(up.sha256, expected.digest('hex'), 'in order and unchanged');
  t.equal(up.framing, 'chunked', 'a chunked request stays chunked towards the upstream (the proxy frames it)');

  const down = await new Promise<{ bytes: number; sha256: string }>((resolve, reject) => {
    https.get({ host: '127.0.0.1', port: h.port, servername: 'localhost', path: `/source?bytes=${32 * MiB}`, agent, headers: { host: 'localhost' } }, (res) => {
      const hash = createHash('sha256');
      let n = 0;
      res.on('data', (c: Buffer) => { hash.update(c); n += c.length; }).on('end', () => resolve({ bytes: n, sha256: hash.digest('hex') }));
    }).on('error', reject);
  });
  const want = createHash('sha256');
  const block = Buffer.alloc(64 * 1024);
  for (let sent = 0; sent < 32 * MiB; sent += block.length) want.update(block.fill(sent & 0xff));
  t.equal(down.bytes, 32 * MiB, 'every byte of the download reached the client');
  t.equal(down.sha256, want.digest('hex'), 'in order and unchanged');
});

t.test('a client that goes away aborts its upstream request, logged as 499', async (t) => {
  const { h, up } = await harness(t);
  const s = tls.connect({ host: '127.0.0.1', port: h.port, servername: 'localhost', ca: readFileSync(h.ca) }, () => s.write('GET /hang HTTP/1.1\r\nhost: localhost\r\nx-request-id: gone-1\r\n\r\n'));
  s.on('error', () => undefined);
  for (let i = 0; i < 100 && !up.seen.includes('GET /hang'); i++) await new Promise((r) => setTimeout(r, 20));
  t.ok(up.seen.includes('GET /hang'), 'the request reached the upstream');
  s.destroy();
  for (let i = 0; i < 150 && !up.aborted.includes('/hang'); i++) await new Promise((r) => setTimeout(r, 20));
  t.ok(up.aborted.includes('/hang'), 'the upstream saw its request abandoned');
  for (let i = 0; i < 50 && !h.logs.some((l) => l.requestId === 'gone-1'); i++) await new Promise((r) => setTimeout(r, 20));
  t.match(h.logs.find((l) => l.type === 'access' && l.requestId === 'gone-1'), { status: 499, complete: false });
});

t.test('an upstream that resets before answering gives 502, logged and counted as reset', async (t) => {
  const { h } = await harness(t);
  const r = await h.curl('/reset', ['-H', 'x-request-id: reset-1']);
  t.equal(r.status, 502);
  t.match(r.body, /the upstream server refused or dropped the connection/);
  t.ok(h.logs.some((l) => l.msg === 'upstream request failed' && l.reason === 'reset' && l.requestId === 'reset-1'), 'logged with reason reset');
  const metrics = await h.registry.metrics();
  t.match(metrics, /hsmproxy_http_upstream_errors_total\{route="[^"]*",reason="reset"\} 1/);
});

t.test('an upstream that resets mid-body drops the client connection instead of ending the body short', async (t) => {
  const { h } = await harness(t);
  const r = await raw(h, ['GET /reset-mid-body HTTP/1.1\r\nhost: localhost\r\n\r\n']);
  t.match(r.text, /^HTTP\/1\.1 200 /);
  t.match(r.text, /content-length: 1000\r\n/);
  t.ok(r.closed, 'the connection was closed');
  t.ok(r.text.length < r.text.indexOf('\r\n\r\n') + 4 + 1000, 'fewer body bytes than announced: the client can tell the body is cut');
});

t.test('with the pool\'s connections and queue full, the next request gets 503 queue_full', async (t) => {
  const { h } = await harness(t, '  pool: { targets: [ "{{test}}" ], maxConnections: 1, maxQueue: 0 }');
  const hang = raw(h, ['GET /hang HTTP/1.1\r\nhost: localhost\r\n\r\n'], { ms: 1500 });
  await new Promise((r) => setTimeout(r, 300));
  const r = await h.curl('/other');
  t.equal(r.status, 503);
  t.match(r.body, /too many requests waiting/);
  t.match(await h.registry.metrics(), /hsmproxy_http_upstream_errors_total\{route="[^"]*",reason="queue_full"\} 1/);
  await hang;
});

t.test('Expect: 100-continue gets 100 Continue before the body is sent, then the answer', async (t) => {
  const { h } = await harness(t);
  const head = 'POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n';
  const r = await raw(h, [head, 'hello'], { gapMs: 300, until: (x) => x.includes('\n/echo 5\n') || x.includes('POST /echo 5') });
  t.match(r.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /, '100 Continue first, then the response');
  t.match(r.text, /POST \/echo 5/, 'the upstream got the 5-byte body with its length');
});

t.test('an Expect the proxy cannot meet gets 417', async (t) => {
  const { h } = await harness(t);
  const r = await raw(h, ['GET / HTTP/1.1\r\nhost: localhost\r\nexpect: something-else\r\n\r\n'], { until: (x) => x.includes('\r\n\r\n') });
  t.match(r.text, /^HTTP\/1\.1 417 /);
});

t.test('an HTTP/1.0 client gets its answer and the connection closes', async (t) => {
  const { h } = await harness(t);
  const r = await raw(h, ['GET /one HTTP/1.0\r\nhost: localhost\r\n\r\n']);
  t.match(r.text, /^HTTP\/1\.1 200 /);
  t.match(r.text, /connection: close\r\n/);
  t.match(r.text, /GET \/one -\n$/);
  t.ok(r.closed);
});

t.test('HEAD keeps the upstream\'s Content-Length and sends no body, so the next response on the connection parses', async (t) => {
  const { h } = await harness(t);
  const r = await raw(h, ['HEAD /head HTTP/1.1\r\nhost: localhost\r\n\r\nGET /after HTTP/1.1\r\nhost: localhost\r\n\r\n'], { until: (x) => x.includes('GET /after') });
  const [first, second] = r.text.split(/(?=HTTP\/1\.1 )/);
  t.match(first, /^HTTP\/1\.1 200 [^]*content-length: 1234\r\n[^]*\r\n\r\n$/, 'HEAD: length announced, no body');
  t.match(second, /^HTTP\/1\.1 200 [^]*GET \/after -\n$/);
});

t.test('an upstream\'s Connection: close does not close the client\'s connection', async (t) => {
  const { h } = await harness(t);
  const r = await raw(h, ['GET /close HTTP/1.1\r\nhost: localhost\r\n\r\nGET /next HTTP/1.1\r\nhost: localhost\r\n\r\n'], { until: (x) => x.includes('GET /next') });
  t.match(r.text, /^HTTP\/1\.1 200 [^]*connection: keep-alive\r\n\r\nokHTTP\/1\.1 200 /);
  t.notOk(r.closed);
});

t.test('a chunked body that breaks its framing in the first packet gets 400, and the proxy keeps serving', async (t) => {
  const { h, up } = await harness(t);
  const r = await raw(h, ['POST /sink HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n']);
  t.match(r.text, /^HTTP\/1\.1 400 /);
  t.ok(r.closed, 'the connection is closed');
  t.notOk(up.seen.includes('POST /sink'), 'nothing reached the upstream');
  const later = await raw(h, ['POST /sink HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab'], { ms: 300 });
  t.equal(later.text, '', 'a body still arriving is waited for');
  t.equal((await h.curl('/after')).status, 200, 'the proxy is still up');
});

t.test('5,000 pipelined requests in one write: the proxy reads ahead a bounded amount, and answers all in order', async (t) => {
  const { h, up } = await harness(t);
  const n = 5_000;
  const batch = Array.from({ length: n }, (_, i) => `GET /p${i} HTTP/1.1\r\nhost: localhost\r\n\r\n`).join('');
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, h.proxy.inputBufferedBytes); }, 5);
  t.teardown(() => clearInterval(sampler));
  const r = await raw(h, [batch], { ms: 120_000, until: (x) => x.endsWith(`GET /p${n - 1} -\n`) }); // endsWith: the text grows to MBs
  clearInterval(sampler);
  t.equal((r.text.match(/HTTP\/1\.1 200 /g) ?? []).length, n, 'every request answered');
  t.ok(r.text.indexOf(`GET /p${n - 2} -`) < r.text.indexOf(`GET /p${n - 1} -`), 'in order');
  t.equal(up.seen.length, n);
  t.ok(batch.length > 150_000, `the batch (${batch.length} bytes) is well over the 64 KiB read-ahead cap`);
  t.ok(peak <= 160 * 1024, `read ahead at most ${peak} bytes (64 KiB cap plus what one read brings)`);
});

t.test('TRACE and CONNECT get 405 and OPTIONS * gets 400, none reaching the upstream', async (t) => {
  const { h, up } = await harness(t);
  for (const [line, status] of [['TRACE / HTTP/1.1', 405], ['CONNECT localhost:443 HTTP/1.1', 405], ['OPTIONS * HTTP/1.1', 400]] as const) {
    const r = await raw(h, [`${line}\r\nhost: localhost\r\n\r\n`]);
    t.match(r.text, new RegExp(`^HTTP/1\\.1 ${status} `), line);
  }
  t.same(up.seen, [], 'nothing reached the upstream');
});
