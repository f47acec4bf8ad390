// `hsmproxy serve` with listener limits, end to end over the embedded cluster: a client over its
// full-handshake rate is shed without an HSM signature while another client and its own
// resumptions pass; a client over its connection cap is refused at accept; a request body that
// stalls gets 408 after timeouts.bodyIdleMs; /metrics counts each by reason.
import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { devCa, prepareServeDir, sample, serveYaml, startServe, type ServeDir, type ServeProcess } from './helpers/serve-fixture.js';

let d: ServeDir;
let serve: ServeProcess;
let ca: Buffer;

t.before(async () => {
  // An upstream that answers once it has the whole body (so a stalled body is the client's fault).
  const upstream = http.createServer((req, res) => { req.resume(); req.on('end', () => res.end('ok')); });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  t.teardown(() => { upstream.closeAllConnections(); upstream.close(); });
  d = await prepareServeDir();
  ca = await devCa(d);
  const yaml = serveYaml(d, `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`, 'timeouts: { bodyIdleMs: 400 }\n').replace('    port: 0\n', `    port: 0
    limits: { perClient: { handshakesPerSecond: 1, handshakeBurst: 2, maxConnections: 3 } }
`);
  serve = await startServe(d, yaml);
});
t.teardown(async () => {
  await serve?.stop();
  await d?.cleanup();
});

const metrics = async (): Promise<string> => (await fetch(`http://127.0.0.1:${serve.admin}/metrics`)).text();
const signsOk = async (): Promise<number> => {
  const text = await metrics();
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('hsmproxy_engine_signs_total{') && line.includes('outcome="ok"')) n += Number(line.split(' ').pop());
  return n;
};

type Outcome = { ok: true; resumed: boolean; session?: Buffer } | { ok: false; error: string };

function handshake(from: string, session?: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port: serve.port, localAddress: from });
    const s = tls.connect({ socket: raw, servername: 'localhost', ca, ...(session ? { session } : {}) });
    let done = false;
    const finish = (o: Outcome): void => { if (!done) { done = true; s.destroy(); resolve(o); } };
    s.on('session', (sess: Buffer) => finish({ ok: true, resumed: s.isSessionReused(), session: sess }));
    s.on('secureConnect', () => { if (s.isSessionReused()) finish({ ok: true, resumed: true }); });
    s.on('error', (e: Error) => finish({ ok: false, error: e.message }));
    s.on('close', () => finish({ ok: false, error: 'closed' }));
  });
}

t.test('a client over its full-handshake rate is shed before any HSM signature; others and resumptions pass', async (t) => {
  const before = await signsOk();
  const first = await handshake('127.0.0.1');
  t.ok(first.ok, 'first');
  t.ok((await handshake('127.0.0.1')).ok, 'second (the burst is 2)');
  const signed = await signsOk();
  t.equal(signed - before, 2, 'two HSM signatures');
  const third = await handshake('127.0.0.1');
  t.notOk(third.ok, 'the third is shed');
  if (!third.ok) t.match(third.error, /internal error|alert number 80/);
  t.equal(await signsOk(), signed, 'no HSM signature for it');
  if (!first.ok || !first.session) throw new Error('no session');
  await new Promise((r) => setTimeout(r, 1100)); // past the refusal at accept that follows a shed
  const resumed = await handshake('127.0.0.1', first.session);
  t.ok(resumed.ok && resumed.resumed, 'the same client still resumes');
  t.ok((await handshake('127.0.0.2')).ok, 'another client is not affected');
  const text = await metrics();
  t.equal(sample(text, 'hsmproxy_tls_handshakes_shed_total', { listener: 'main', reason: 'client_rate' }), 1);
  t.equal(sample(text, 'hsmproxy_tls_handshakes_total', { result: 'shed', alert: 'internal_error' }), 1);
});

t.test('a client over its connection cap is refused at accept, and counted', async (t) => {
  const held: net.Socket[] = [];
  t.teardown(() => { for (const s of held) s.destroy(); });
  for (let i = 0; i < 3; i++) {
    const s = net.connect({ host: '127.0.0.1', port: serve.port, localAddress: '127.0.0.4' });
    s.on('error', () => undefined);
    await once(s, 'connect');
    held.push(s);
  }
  const fourth = net.connect({ host: '127.0.0.1', port: serve.port, localAddress: '127.0.0.4' });
  fourth.on('error', () => undefined);
  await once(fourth, 'close');
  t.pass('the fourth connection was closed by the proxy');
  const text = await metrics();
  t.equal(sample(text, 'hsmproxy_tls_connections_refused_total', { listener: 'main', reason: 'client_connections' }), 1);
});

t.test('a request body that stalls gets 408 after bodyIdleMs', async (t) => {
  const raw = net.connect({ host: '127.0.0.1', port: serve.port, localAddress: '127.0.0.5' });
  const s = tls.connect({ socket: raw, servername: 'localhost', ca });
  s.on('error', () => undefined);
  await once(s, 'secureConnect');
  const started = Date.now();
  s.write('POST / HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n0123456789');
  let text = '';
  s.setEncoding('utf8').on('data', (c: string) => { text += c; });
  await once(s, 'close');
  t.match(text, /^HTTP\/1\.1 408 /, '408 Request Timeout');
  t.match(text, /request body not received in time/);
  t.ok(Date.now() - started >= 350, 'not before bodyIdleMs');
});
