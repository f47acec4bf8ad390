// Request smuggling (issue 15) and pipelining (issue 28): raw bytes over one TLS connection to the
// proxy, and exactly which requests a strict upstream parses off its side. The corpus runs on both
// listeners — node:tls, and tls/ TlsServer signing through an engine — because each hands the
// HTTP layer a different socket implementation, and a framing hole must be closed on both.
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Engine, SimBackend, writeKeyReference } from '../src/engine/index.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';
import { offloadListenerFactory } from '../src/proxy/offload-listener.js';
import type { ProxyOptions } from '../src/proxy/index.js';
import { FakeHsm } from './helpers/fake-hsm.js';
import { startHarness, type Harness } from './helpers/proxy-harness.js';
import { startRecordingUpstream, type RecordedRequest, type RecordingUpstream } from './helpers/recording-upstream.js';

/** How to open a proxy listener of one kind. */
interface ListenerKind {
  /** The listener's `certificates:` value in YAML. */
  certificates: string;
  /** The CA file a client trusts for it. */
  caFile(h: Harness): string;
  proxy: Partial<ProxyOptions>;
}

/** A running proxy as the client sees it. */
interface Front { h: Harness; port: number; otherPort: number; ca: Buffer }

/** What one connection got back. */
interface Exchange { text: string; closedByServer: boolean }

const nodeTlsKind: ListenerKind = { certificates: '[{ cert: "{{cert}}", key: "{{key}}" }]', caFile: (h) => h.ca, proxy: {} };

/** The production listener: tls/ TlsServer whose certificate key lives in a FakeHsm behind an engine. */
async function offloadKind(t: Test): Promise<ListenerKind> {
  const hsm = new FakeHsm();
  const backend = new SimBackend({ client: hsm, clusterId: '6b'.repeat(32), credentials: { user: 'cu1', password: 'secret1' } });
  const engine = new Engine({ backends: { sim: backend } });
  t.teardown(() => engine.close());
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-smuggling-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const made = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'front' });
  const key = join(dir, 'front.key.pem');
  await writeKeyReference(made, key);
  const cert = join(dir, 'front.pem');
  writeFileSync(cert, certPem(await selfSign(await signingKey(await engine.signer(key), engine.webcrypto()), { subject: 'CN=localhost', sans: ['DNS:localhost'], days: 1 })));
  return { certificates: `[{ cert: "${cert}", key: "${key}" }]`, caFile: () => cert, proxy: { tlsListenerFactory: offloadListenerFactory({ engine }) } };
}

/**
 * Two listeners: `main` (the default client-certificate header names) and `other`, which renames
 * them, so a test can check that names configured elsewhere are stripped too.
 */
function proxyYaml(kind: ListenerKind, routes: string, extra = ''): string {
  return `
listeners:
  - { name: main, address: 127.0.0.1, port: 0, certificates: ${kind.certificates} }
  - name: other
    address: 127.0.0.1
    port: 0
    certificates: ${kind.certificates}
    clientAuth: { mode: none, headers: { verify: x-other-verify, subject: x-other-subject, san: x-other-san, fingerprint: x-other-fp } }
routes:
${routes}
admin: { address: 127.0.0.1, port: 0 }
${extra}
`;
}

async function startFront(t: Test, kind: ListenerKind, yaml: string): Promise<Front> {
  const h = await startHarness(t, yaml, { upstreamCount: 0, proxy: kind.proxy });
  return { h, port: h.port, otherPort: h.proxy.listenerAddress('other')!.port, ca: readFileSync(kind.caFile(h)) };
}

const HTTP_STATUS = /HTTP\/1\.1 (\d{3}) /g; // no ^: an answer's status line follows the last body byte
const STATUS_LEN = 'HTTP/1.1 200 '.length;

/**
 * Writes `parts` on one TLS connection — part i once i answers have begun, so an array makes a
 * keep-alive conversation and one string a pipeline — and collects everything sent back until
 * the proxy closes the connection or `timeoutMs` (a hang-catching bound) passes. With
 * `responses`, it stops earlier: once that many answers have begun and 200 ms pass quietly.
 */
function send(f: Front, parts: string | string[], opts: { responses?: number; timeoutMs?: number; port?: number } = {}): Promise<Exchange> {
  const list = typeof parts === 'string' ? [parts] : parts;
  return new Promise((resolve) => {
    let text = '';
    let seen = 0; // answers begun so far (status lines), counted incrementally: a pipeline sends thousands
    let scanFrom = 0;
    let written = 0;
    let done = false;
    let quiet: NodeJS.Timeout | undefined;
    const status = new RegExp(HTTP_STATUS.source, 'g'); // its own lastIndex
    const s = tls.connect({ host: '127.0.0.1', port: opts.port ?? f.port, servername: 'localhost', ca: f.ca }, () => writeDue());
    const finish = (closedByServer: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(bound);
      clearTimeout(quiet);
      s.destroy();
      resolve({ text, closedByServer });
    };
    const bound = setTimeout(() => finish(false), opts.timeoutMs ?? 3000);
    const writeDue = () => {
      while (written < list.length && written <= seen) s.write(Buffer.from(list[written++]!, 'latin1'));
    };
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      status.lastIndex = scanFrom;
      let end = 0;
      for (let m = status.exec(text); m; m = status.exec(text)) {
        seen++;
        end = status.lastIndex;
      }
      // A status line split across reads is found next time: rescan the tail that could hold its start.
      scanFrom = Math.max(end, text.length - STATUS_LEN + 1);
      writeDue();
      clearTimeout(quiet);
      if (opts.responses !== undefined && seen >= opts.responses && written === list.length) quiet = setTimeout(() => finish(false), 200);
    });
    s.once('end', () => finish(true));
    s.once('close', () => finish(true));
    // A reset after the answer (we may still be writing a large refused request) is the server closing.
    s.on('error', (err: NodeJS.ErrnoException) => finish(err.code === 'ECONNRESET' || err.code === 'EPIPE'));
  });
}

/** Lets anything the proxy forwarded reach the upstream before it is inspected. */
const settle = () => new Promise((r) => setTimeout(r, 150));

/** Status codes of the answers, in order. */
const statuses = (text: string) => [...text.matchAll(HTTP_STATUS)].map((m) => Number(m[1]));

/** The first answer's head, lower-cased, every header line ending in CRLF. */
const firstHead = (text: string) => {
  const end = text.indexOf('\r\n\r\n');
  return (end >= 0 ? text.slice(0, end + 2) : text).toLowerCase();
};

/** A request head from its lines (CRLF line ends, the empty line after). */
const head = (...lines: string[]) => `${lines.join('\r\n')}\r\n\r\n`;

/** A chunked body holding `chunks` (latin1 strings), then the last chunk. */
const chunked = (...chunks: string[]) => `${chunks.map((c) => `${Buffer.byteLength(c, 'latin1').toString(16)}\r\n${c}\r\n`).join('')}0\r\n\r\n`;

const len = (s: string) => Buffer.byteLength(s, 'latin1');
const described = (r: RecordedRequest) => `${r.method} ${r.target}`;

/** The proxy refused the request: one answer with `status`, `connection: close`, and it closed. */
function expectRefused(t: Test, r: Exchange, status: number | readonly number[]): void {
  const allowed = typeof status === 'number' ? [status] : status;
  const got = statuses(r.text);
  t.ok(got.length === 1 && allowed.includes(got[0]!), `one ${allowed.join(' or ')} answer (got ${got.join(', ') || 'none'})`);
  t.match(firstHead(r.text), /\r\nconnection: close\r\n/, 'the answer says connection: close');
  t.ok(r.closedByServer, 'the proxy closed the connection');
}

function expectNothingUpstream(t: Test, up: RecordingUpstream): void {
  t.same(up.requests.map(described), [], 'no request reached the upstream');
  t.equal(up.bytesReceived, 0, 'not one byte reached the upstream');
}

/** Exactly these requests reached the upstream, each parsed cleanly. */
function expectUpstreamSaw(t: Test, up: RecordingUpstream, requests: string[]): void {
  t.same(up.requests.map(described), requests, `the upstream saw exactly ${requests.join(', ')}`);
  t.same(up.parseErrors, [], 'the upstream parsed every byte it got');
}

/** The whole corpus against a proxy on listeners of `kind`. */
async function corpus(t: Test, kind: ListenerKind): Promise<void> {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const f = await startFront(t, kind, proxyYaml(kind, `  - upstream: [ "${up.url}" ]`));

  /** One exchange on `front` with the upstream's records cleared first and settled after. */
  const exchangeOn = async (front: Front, parts: string | string[], opts: Parameters<typeof send>[2] = {}) => {
    up.reset();
    const r = await send(front, parts, opts);
    await settle();
    return r;
  };
  const exchange = (parts: string | string[], opts: Parameters<typeof send>[2] = {}) => exchangeOn(f, parts, opts);
  /** A request that must be refused with `status` before anything is forwarded. */
  const refused = (behaviour: string, bytes: string, status: number | readonly number[] = 400) => t.test(behaviour, async (t) => {
    expectRefused(t, await exchange(bytes), status);
    expectNothingUpstream(t, up);
  });

  // a. Issue 15, reproduction 1.
  t.test('a chunked DELETE whose chunk is a whole request reaches the upstream as one request carrying that chunk', async (t) => {
    const inner = 'GET /smuggled HTTP/1.1\r\nHost: localhost\r\nX-Client-Cert-Verify: SUCCESS\r\n\r\n';
    const r = await exchange(head('DELETE /a HTTP/1.1', 'Host: localhost', 'Transfer-Encoding: chunked') + chunked(inner), { responses: 1 });
    t.same(statuses(r.text), [200], 'the client gets one 200');
    expectUpstreamSaw(t, up, ['DELETE /a']);
    t.equal(up.requests[0]?.body.toString('latin1'), inner, 'the body on the upstream connection is the chunk');
  });

  // b. Issue 15, reproduction 2.
  t.test('Connection: content-length does not strip the framing: the body stays the body of one request', async (t) => {
    const inner = 'GET /smuggled2 HTTP/1.1\r\nHost: localhost\r\n\r\n';
    const r = await exchange(head('GET /b HTTP/1.1', 'Host: localhost', 'Connection: content-length', `Content-Length: ${len(inner)}`) + inner, { responses: 1 });
    t.same(statuses(r.text), [200], 'the client gets one 200');
    expectUpstreamSaw(t, up, ['GET /b']);
    t.same(up.requests[0]?.headers.get('content-length'), [String(len(inner))], 'forwarded with its Content-Length');
    t.equal(up.requests[0]?.body.toString('latin1'), inner, 'and that body');
  });

  // c. Both framings at once: whichever the proxy picks, some parser downstream may pick the other.
  refused('CL.TE (Content-Length, then Transfer-Encoding: chunked) is refused with 400 and nothing reaches the upstream',
    head('POST /c HTTP/1.1', 'Host: localhost', 'Content-Length: 13', 'Transfer-Encoding: chunked') + '0\r\n\r\nSMUGGLED');
  refused('TE.CL (Transfer-Encoding: chunked, then Content-Length) is refused with 400 and nothing reaches the upstream',
    head('POST /c HTTP/1.1', 'Host: localhost', 'Transfer-Encoding: chunked', 'Content-Length: 3') + '8\r\nSMUGGLED\r\n0\r\n\r\n');

  // d. Transfer-Encoding that is not exactly one `chunked`, or a header some parser reads differently.
  const teBody = chunked('GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n');
  const teCases: Array<[string, string[]]> = [
    ['Transfer-Encoding: xchunked', ['Host: localhost', 'Transfer-Encoding: xchunked']],
    ['Transfer-Encoding: chunked, identity', ['Host: localhost', 'Transfer-Encoding: chunked, identity']],
    ['Transfer-Encoding sent twice', ['Host: localhost', 'Transfer-Encoding: chunked', 'Transfer-Encoding: chunked']],
    ['"Transfer-Encoding : chunked" (space before the colon)', ['Host: localhost', 'Transfer-Encoding : chunked']],
    ['a first header line starting with a space (" Transfer-Encoding: chunked")', [' Transfer-Encoding: chunked', 'Host: localhost']],
    ['a first header line starting with a tab', ['\tTransfer-Encoding: chunked', 'Host: localhost']],
    ['Transfer-Encoding: identity', ['Host: localhost', 'Transfer-Encoding: identity']],
  ];
  for (const [what, lines] of teCases) refused(`${what} is refused with 400 and nothing reaches the upstream`, head('POST /d HTTP/1.1', ...lines) + teBody);

  // e. A Content-Length that is not one plain decimal number.
  const clCases: Array<[string, string[]]> = [
    ['two equal Content-Length headers', ['Content-Length: 5', 'Content-Length: 5']],
    ['two different Content-Length headers', ['Content-Length: 5', 'Content-Length: 6']],
    ['Content-Length: +5', ['Content-Length: +5']],
    ['Content-Length: -1', ['Content-Length: -1']],
    ['Content-Length: 0x5', ['Content-Length: 0x5']],
    ['Content-Length: 5, 5', ['Content-Length: 5, 5']],
    ['Content-Length: 5 5', ['Content-Length: 5 5']],
  ];
  for (const [what, lines] of clCases) refused(`${what} is refused with 400 and nothing reaches the upstream`, head('POST /e HTTP/1.1', 'Host: localhost', ...lines) + 'hello');

  // f. Heads that parsers disagree about.
  refused('an obs-fold header continuation is refused with 400 and nothing reaches the upstream', head('GET /f HTTP/1.1', 'Host: localhost', 'X-Foo: a', ' b'));
  t.test('a head with bare LF line ends gets no 2xx, is refused or closed, and nothing reaches the upstream', async (t) => {
    const r = await exchange('GET /f HTTP/1.1\nHost: localhost\n\n', { responses: 1 });
    t.notOk(statuses(r.text).some((s) => s >= 200 && s < 300), `no 2xx answer (got ${statuses(r.text).join(', ') || 'none'})`);
    t.ok(statuses(r.text)[0] === 400 || r.closedByServer, 'a 400, or the connection closed');
    expectNothingUpstream(t, up);
  });
  refused('a bare CR inside a header value is refused with 400 and nothing reaches the upstream', head('GET /f HTTP/1.1', 'Host: localhost', 'X-Foo: a\rb'));
  refused('a NUL byte in a header value is refused with 400 and nothing reaches the upstream', head('GET /f HTTP/1.1', 'Host: localhost', 'X-Foo: a\0b'));
  refused('a control character (0x01) in a header name is refused with 400 and nothing reaches the upstream', head('GET /f HTTP/1.1', 'Host: localhost', 'X-F\x01oo: a'));

  // g. Framing and Host are not hop-by-hop, whatever Connection lists.
  t.test('Connection: transfer-encoding on a chunked POST still forwards one correctly framed request with the decoded body', async (t) => {
    const r = await exchange(head('POST /g HTTP/1.1', 'Host: localhost', 'Connection: transfer-encoding', 'Transfer-Encoding: chunked') + chunked('hello ', 'world'), { responses: 1 });
    t.same(statuses(r.text), [200]);
    expectUpstreamSaw(t, up, ['POST /g']);
    const req = up.requests[0];
    t.equal(req?.body.toString('latin1'), 'hello world', 'the decoded chunk data');
    t.not(req?.framing, 'none', 'framed by chunked or Content-Length');
    if (req?.framing === 'content-length') t.same(req.headers.get('content-length'), ['11']);
  });
  t.test('Connection: host still forwards a Host header', async (t) => {
    const r = await exchange(head('GET /g HTTP/1.1', 'Host: localhost', 'Connection: host'), { responses: 1 });
    t.same(statuses(r.text), [200]);
    expectUpstreamSaw(t, up, ['GET /g']);
    t.equal(up.requests[0]?.headers.get('host')?.length, 1, 'exactly one Host header');
  });

  // h. A body where few expect one is still just a body.
  for (const method of ['GET', 'HEAD', 'DELETE', 'OPTIONS']) {
    t.test(`${method === 'OPTIONS' ? 'an' : 'a'} ${method} with a Content-Length body that is itself a request reaches the upstream as one ${method} carrying that body`, async (t) => {
      const inner = 'GET /smuggled-h HTTP/1.1\r\nHost: localhost\r\n\r\n';
      const r = await exchange(head(`${method} /h HTTP/1.1`, 'Host: localhost', `Content-Length: ${len(inner)}`) + inner, { responses: 1 });
      t.same(statuses(r.text), [200], 'one answer');
      expectUpstreamSaw(t, up, [`${method} /h`]);
      t.equal(up.requests[0]?.body.toString('latin1'), inner, 'carrying the body');
    });
  }

  // i. Absolute-form targets.
  refused('an absolute-form target naming another host than Host is refused with 400 and nothing reaches the upstream',
    head('GET http://evil.example/x HTTP/1.1', 'Host: localhost'));
  t.test('an absolute-form target agreeing with Host is forwarded in origin-form', async (t) => {
    const r = await exchange(head(`GET https://localhost:${f.port}/x HTTP/1.1`, `Host: localhost:${f.port}`), { responses: 1 });
    t.same(statuses(r.text), [200]);
    expectUpstreamSaw(t, up, ['GET /x']);
  });

  // j. Forwarding headers: the default config trusts no peer, so a client's claims are not passed on.
  const spoofedForwarding = head('GET /j HTTP/1.1', 'Host: localhost', 'X-Forwarded-For: 6.6.6.6', 'X-Forwarded-Proto: http',
    'X-Forwarded-Host: evil', 'Forwarded: for=6.6.6.6', 'X-Real-IP: 6.6.6.6');
  const forwardedAs = async (t: Test, front = f) => {
    const r = await exchangeOn(front, spoofedForwarding, { responses: 1 });
    t.same(statuses(r.text), [200]);
    expectUpstreamSaw(t, up, ['GET /j']);
    return up.requests[0]?.headers ?? new Map<string, string[]>();
  };
  t.test('an untrusted peer\'s X-Forwarded-For is replaced by its own address', async (t) => {
    t.same((await forwardedAs(t)).get('x-forwarded-for'), ['127.0.0.1']);
  });
  t.test('an untrusted peer\'s X-Forwarded-Proto is replaced by https', async (t) => {
    t.same((await forwardedAs(t)).get('x-forwarded-proto'), ['https']);
  });
  t.test('an untrusted peer\'s X-Forwarded-Host is replaced by the request\'s Host', async (t) => {
    t.same((await forwardedAs(t)).get('x-forwarded-host'), ['localhost']);
  });
  t.test('an untrusted peer\'s Forwarded claims do not reach the upstream', async (t) => {
    const forwarded = (await forwardedAs(t)).get('forwarded') ?? [];
    t.notOk(forwarded.some((v) => v.includes('6.6.6.6')), `no Forwarded value names 6.6.6.6 (got ${JSON.stringify(forwarded)})`);
  });
  t.test('an untrusted peer\'s X-Real-IP does not reach the upstream', async (t) => {
    const realIp = (await forwardedAs(t)).get('x-real-ip') ?? [];
    t.notOk(realIp.some((v) => v.includes('6.6.6.6')), `no X-Real-IP names 6.6.6.6 (got ${JSON.stringify(realIp)})`);
  });
  t.test('a trusted peer\'s X-Forwarded-For chain is kept and its address appended', async (t) => {
    const yaml = proxyYaml(kind, `  - upstream: [ "${up.url}" ]`, 'trustedProxies: [ 127.0.0.0/8 ]');
    try {
      f.h.config(yaml); // checked first: a config the proxy refuses is this test's failure, not a crash
    } catch (err) {
      t.fail(`a config with trustedProxies: [127.0.0.0/8] is refused: ${(err as Error).message}`);
      return;
    }
    const trusted = await startFront(t, kind, yaml);
    t.same((await forwardedAs(t, trusted)).get('x-forwarded-for'), ['6.6.6.6, 127.0.0.1']);
  });

  // k. Client-certificate headers from a client without a certificate.
  const spoofedIdentity = head('GET /k HTTP/1.1', 'Host: localhost', 'X-Client-Cert-Verify: SUCCESS', 'X-Client-Cert-Subject: CN=admin',
    'X-Other-Verify: SUCCESS', 'X-Other-Subject: CN=admin', 'X-Other-San: DNS:admin', 'X-Other-Fp: 00');
  const identityAs = async (t: Test, port: number) => {
    const r = await exchange(spoofedIdentity, { responses: 1, port });
    t.same(statuses(r.text), [200]);
    expectUpstreamSaw(t, up, ['GET /k']);
    return up.requests[0]?.headers ?? new Map<string, string[]>();
  };
  t.test('a client without a certificate cannot claim one in its listener\'s identity headers', async (t) => {
    const seen = await identityAs(t, f.port);
    t.same(seen.get('x-client-cert-verify'), ['NONE']);
    t.equal(seen.get('x-client-cert-subject'), undefined, 'no subject');
  });
  t.test('identity headers named by another listener are stripped too', async (t) => {
    const seen = await identityAs(t, f.port);
    t.same([...seen.keys()].filter((n) => n.startsWith('x-other-')), [], 'no x-other-* header');
  });
  t.test('a listener with renamed identity headers strips the default names and sets its own', async (t) => {
    const seen = await identityAs(t, f.otherPort);
    t.same(seen.get('x-other-verify'), ['NONE']);
    t.same([...seen.keys()].filter((n) => n.startsWith('x-client-cert-') || n === 'x-other-subject'), [], 'no default-named or spoofed identity header');
  });

  // l. Heads too large to buffer.
  refused('a 20 KiB request line is refused with 431 (or 414) and nothing reaches the upstream',
    head(`GET /${'a'.repeat(20 * 1024)} HTTP/1.1`, 'Host: localhost'), [431, 414]);
  refused('100 headers of 1 KiB are refused with 431 and nothing reaches the upstream',
    head('GET /l HTTP/1.1', 'Host: localhost', ...Array.from({ length: 100 }, (_, i) => `X-Big-${i}: ${'b'.repeat(1024)}`)), 431);
  refused('one 80 KiB header is refused with 431 and nothing reaches the upstream',
    head('GET /l HTTP/1.1', 'Host: localhost', `X-Huge: ${'h'.repeat(80 * 1024)}`), 431);

  // m. Issue 28.
  t.test('1,000 pipelined requests are answered in order and sent upstream one at a time on one connection', async (t) => {
    const slow = await startRecordingUpstream({ delayMs: 1 });
    t.teardown(() => slow.close());
    const pf = await startFront(t, kind, proxyYaml(kind, `  - upstream: [ "${slow.url}" ]`));
    const n = 1000;
    let bytes = '';
    for (let i = 0; i < n; i++) bytes += head(`GET /p/${i} HTTP/1.1`, 'Host: localhost', `X-Request-Id: p-${i}`);
    const r = await send(pf, bytes, { responses: n, timeoutMs: 60_000 });
    await settle();
    t.equal(statuses(r.text).filter((s) => s === 200).length, n, 'every request answered 200');
    // The client's X-Request-Id comes back on its answer, so the answers' order is visible.
    const ids = [...r.text.matchAll(/\r\nx-request-id: ([^\r]*)\r\n/gi)].map((m) => m[1]);
    t.equal(ids.length, n, 'every answer carries its request id');
    t.equal(ids.findIndex((id, i) => id !== `p-${i}`), -1, 'no answer out of order (index of the first one that is)');
    const targets = slow.requests.map((q) => q.target);
    t.equal(targets.length, n, 'every request reached the upstream');
    t.equal(targets.findIndex((p, i) => p !== `/p/${i}`), -1, 'in order (index of the first one that is not)');
    t.same(slow.parseErrors, [], 'the upstream parsed every byte it got');
    t.equal(slow.peakInFlight, 1, 'one request in flight upstream at a time');
    const perConnection = new Map<number, number>();
    for (const q of slow.requests) perConnection.set(q.connectionIndex, (perConnection.get(q.connectionIndex) ?? 0) + 1);
    t.equal(perConnection.size, 1, `all on one upstream connection (requests per connection: ${JSON.stringify([...perConnection])})`);
  });

  // n. What must keep working.
  t.test('a second request on a kept-alive connection is forwarded', async (t) => {
    const r = await exchange([head('GET /n1 HTTP/1.1', 'Host: localhost'), head('GET /n2 HTTP/1.1', 'Host: localhost')], { responses: 2 });
    t.same(statuses(r.text), [200, 200]);
    t.notOk(r.closedByServer, 'the connection stays open');
    expectUpstreamSaw(t, up, ['GET /n1', 'GET /n2']);
  });
  t.test('a chunked POST is forwarded with its exact body', async (t) => {
    // Chunk data that looks like chunk framing, and every byte value.
    const parts = ['5\r\nfake\r\n0\r\n\r\n', Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('latin1'), 'end'];
    const r = await exchange(head('POST /n HTTP/1.1', 'Host: localhost', 'Transfer-Encoding: chunked') + chunked(...parts), { responses: 1 });
    t.same(statuses(r.text), [200]);
    expectUpstreamSaw(t, up, ['POST /n']);
    t.ok(up.requests[0]?.body.equals(Buffer.from(parts.join(''), 'latin1')), 'the upstream got the exact bytes');
  });

  // o. Routing sees the normalised path; encodings that hide a separator are refused.
  t.test('paths are normalised before routing', async (t) => {
    const pub = await startFront(t, kind, proxyYaml(kind, `  - { pathPrefix: /pub, upstream: [ "${up.url}" ] }`));
    for (const path of ['/pub/../admin', '/pub/%2e%2e/admin', '/pub/%2E%2E/admin']) {
      t.test(`${path} is routed as /admin: 404 and nothing reaches the upstream`, async (t) => {
        const r = await exchangeOn(pub, head(`GET ${path} HTTP/1.1`, 'Host: localhost'), { responses: 1 });
        t.same(statuses(r.text), [404]);
        expectNothingUpstream(t, up);
      });
    }
    t.test('/pub/a/../b reaches the upstream as /pub/b', async (t) => {
      const r = await exchangeOn(pub, head('GET /pub/a/../b HTTP/1.1', 'Host: localhost'), { responses: 1 });
      t.same(statuses(r.text), [200]);
      expectUpstreamSaw(t, up, ['GET /pub/b']);
    });
    for (const path of ['/pub/..%2fadmin', '/pub%2f..%2fadmin', '/pub/..%5cadmin', '/pub\\..\\admin']) {
      t.test(`${path} (a separator hiding a dot-segment) is refused with 400 and nothing reaches the upstream`, async (t) => {
        expectRefused(t, await exchangeOn(pub, head(`GET ${path} HTTP/1.1`, 'Host: localhost')), 400);
        expectNothingUpstream(t, up);
      });
    }
  });
}

// The corpus is only as good as the upstream's parser: check it against node:http first.
t.test('the recording upstream', async (t) => {
  t.test('parses keep-alive requests from node:http with their headers, bodies and framing', async (t) => {
    const up = await startRecordingUpstream();
    t.teardown(() => up.close());
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => agent.destroy());
    const call = (opts: http.RequestOptions, body: string[]) => new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: up.port, agent, ...opts }, (res) => {
        let text = '';
        res.setEncoding('latin1').on('data', (d: string) => { text += d; }).on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      for (const b of body) req.write(b);
      req.end();
    });
    t.same(await call({ path: '/one?x=1', headers: { 'x-dup': ['a', 'b'] } }, []), { status: 200, text: 'ok' });
    // Written in two parts without a length: node sends it chunked.
    t.same(await call({ method: 'POST', path: '/two' }, ['hello ', 'world']), { status: 200, text: 'ok' });
    t.same(await call({ method: 'PUT', path: '/three', headers: { 'content-length': 3 } }, ['abc']), { status: 200, text: 'ok' });
    t.same(up.requests.map(described), ['GET /one?x=1', 'POST /two', 'PUT /three']);
    const [one, two, three] = up.requests;
    t.same(one?.headers.get('x-dup'), ['a', 'b'], 'repeated headers keep their order');
    t.same(one?.headers.get('host'), [`127.0.0.1:${up.port}`]);
    t.match(one, { framing: 'none', version: 'HTTP/1.1' });
    t.equal(one?.body.length, 0);
    t.match(two, { framing: 'chunked' });
    t.equal(two?.body.toString(), 'hello world', 'chunks decoded');
    t.match(three, { framing: 'content-length' });
    t.equal(three?.body.toString(), 'abc');
    t.equal(new Set(up.requests.map((r) => r.connectionIndex)).size, 1, 'one kept-alive connection');
    t.equal(up.raw.get(one!.connectionIndex)?.toString('latin1').startsWith('GET /one?x=1 HTTP/1.1\r\n'), true, 'the raw bytes are kept');
    t.same(up.parseErrors, []);
    t.equal(up.peakInFlight, 1);
  });

  t.test('records what it cannot parse as an error, not as a request', async (t) => {
    const up = await startRecordingUpstream();
    t.teardown(() => up.close());
    const bad = [
      'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'GET / HTTP/1.1\nHost: x\n\n',
      'GET / HTTP/1.1\r\nHost: x\r\nX-Foo: a\r\n b\r\n\r\n',
    ];
    for (const bytes of bad) {
      await new Promise<void>((resolve) => {
        const s = net.connect(up.port, '127.0.0.1', () => s.write(bytes));
        s.on('error', () => undefined).resume().once('close', () => resolve());
        setTimeout(() => s.destroy(), 3000).unref(); // hang-catching bound: the upstream closes on a parse error
      });
    }
    t.same(up.requests, []);
    t.equal(up.parseErrors.length, bad.length, up.parseErrors.map((e) => e.message).join('; '));
  });

  t.test('counts requests in flight when its answers are delayed', async (t) => {
    const up = await startRecordingUpstream({ delayMs: 100 });
    t.teardown(() => up.close());
    const get = () => fetch(`${up.url}/`).then((r) => r.text());
    t.same(await Promise.all([get(), get()]), ['ok', 'ok']);
    t.equal(up.peakInFlight, 2, 'two connections, both waiting');
    t.equal(up.inFlight, 0);
    up.reset();
    t.equal(up.peakInFlight, 0, 'reset forgets the peak');
  });
});

t.test('on the node:tls listener', (t) => corpus(t, nodeTlsKind));
t.test('on the offload listener (tls/ TlsServer, key in an HSM)', async (t) => corpus(t, await offloadKind(t)));
