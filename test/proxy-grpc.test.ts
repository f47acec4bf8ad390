// gRPC end to end through the proxy: a grpc-js client over TLS (ALPN h2) to the proxy, which
// forwards to a grpc-js server over h2c (`protocol: h2c`). A unary call, a failing call whose
// status travels in the trailers, and a bidirectional stream whose replies arrive while the
// client is still sending.
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { h2connect, h2request } from './helpers/h2-client.js';
import { baseYaml, startHarness } from './helpers/proxy-harness.js';

interface Msg { text: string; n?: number; forwardedFor?: string }

const json = {
  serialize: (m: Msg) => Buffer.from(JSON.stringify(m)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()) as Msg,
};

// A hand-written service definition (what protoc would generate), with JSON messages.
const EchoService = {
  echo: {
    path: '/test.Echo/Echo', requestStream: false, responseStream: false,
    requestSerialize: json.serialize, requestDeserialize: json.deserialize,
    responseSerialize: json.serialize, responseDeserialize: json.deserialize,
  },
  chat: {
    path: '/test.Echo/Chat', requestStream: true, responseStream: true,
    requestSerialize: json.serialize, requestDeserialize: json.deserialize,
    responseSerialize: json.serialize, responseDeserialize: json.deserialize,
  },
} satisfies grpc.ServiceDefinition;

const server = new grpc.Server();
server.addService(EchoService, {
  echo: (call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
    if (call.request.text === 'fail') {
      cb({ code: grpc.status.NOT_FOUND, details: 'no such thing' });
      return;
    }
    const md = new grpc.Metadata();
    md.set('x-served-by', 'grpc-upstream');
    cb(null, {
      text: call.request.text.toUpperCase(),
      forwardedFor: String(call.metadata.get('x-forwarded-for')[0] ?? ''),
    }, md);
  },
  chat: (call: grpc.ServerDuplexStream<Msg, Msg>) => {
    call.on('data', (m: Msg) => call.write({ text: `echo ${m.text}`, n: m.n }));
    call.on('end', () => call.end());
  },
});
const upstreamPort = await new Promise<number>((resolve, reject) => {
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => err ? reject(err) : resolve(port));
});
t.teardown(() => new Promise<void>((r) => server.tryShutdown(() => r())));

const h = await startHarness(t, baseYaml('  - pathPrefix: /test.Echo/\n    upstream: grpc', `  grpc:\n    targets: [ "http://127.0.0.1:${upstreamPort}" ]\n    protocol: h2c\n`));
const Client = grpc.makeGenericClientConstructor(EchoService, 'Echo');
const client = new Client(`127.0.0.1:${h.port}`, grpc.credentials.createSsl(readFileSync(h.ca)), {
  'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost',
}) as unknown as grpc.Client & {
  echo(m: Msg, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: Msg) => void): grpc.ClientUnaryCall;
  chat(): grpc.ClientDuplexStream<Msg, Msg>;
};
t.teardown(() => client.close());

t.test('a unary call passes through, with the proxy\'s forwarding headers and the upstream\'s metadata', async (t) => {
  let initial: grpc.Metadata | undefined;
  let trailing: grpc.StatusObject | undefined;
  const res = await new Promise<Msg>((resolve, reject) => {
    const call = client.echo({ text: 'hello' }, new grpc.Metadata(), (err, r) => err ? reject(err) : resolve(r!));
    call.on('metadata', (m) => { initial = m; });
    call.on('status', (s) => { trailing = s; });
  });
  t.equal(res.text, 'HELLO');
  t.equal(res.forwardedFor, '127.0.0.1', 'X-Forwarded-For set by the proxy');
  t.same(initial?.get('content-type'), ['application/grpc+proto'], 'the response head');
  await new Promise((r) => setImmediate(r));
  t.equal(trailing?.code, grpc.status.OK, 'grpc-status 0 in the trailers');
  t.same(trailing?.metadata.get('x-served-by'), ['grpc-upstream'], 'trailing metadata');
  const access = h.logs.find((l) => l.type === 'access' && l.path === '/test.Echo/Echo');
  t.equal(access?.protocol, 'h2');
  t.equal(access?.status, 200);
});

t.test('an error status and its message reach the client (a Trailers-Only response: one HEADERS with END_STREAM)', async (t) => {
  const err = await new Promise<grpc.ServiceError>((resolve, reject) => {
    client.echo({ text: 'fail' }, new grpc.Metadata(), (e) => e ? resolve(e) : reject(new Error('the call succeeded')));
  });
  t.equal(err.code, grpc.status.NOT_FOUND);
  t.equal(err.details, 'no such thing');
});

t.test('a bidirectional stream: each reply arrives before the next message is sent', async (t) => {
  const call = client.chat();
  const replies: Msg[] = [];
  const next = () => new Promise<Msg>((resolve, reject) => {
    call.once('data', resolve);
    call.once('error', reject);
  });
  for (let i = 0; i < 5; i++) {
    const reply = next();
    call.write({ text: `m${i}`, n: i });
    replies.push(await reply);
  }
  const ended = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  call.end();
  t.equal((await ended).code, grpc.status.OK, 'the stream ends with grpc-status 0');
  t.same(replies.map((r) => r.text), ['echo m0', 'echo m1', 'echo m2', 'echo m3', 'echo m4']);
});

t.test('an h2c upstream gets TE: trailers, the forwarding headers and the client\'s authority', async (t) => {
  const seen: http2.IncomingHttpHeaders[] = [];
  const plain = http2.createServer((req, res) => { seen.push(req.headers); res.end('ok'); });
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => plain.close(() => r())));
  const port = (plain.address() as AddressInfo).port;
  const p = await startHarness(t, baseYaml('  - upstream: plain', `  plain:\n    targets: [ "http://127.0.0.1:${port}" ]\n    protocol: h2c\n`));
  const s = await h2connect(p.port, p.ca);
  t.teardown(() => s.close());
  const r = await h2request(s, { ':path': '/te', te: 'trailers', 'x-forwarded-for': '6.6.6.6' });
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'ok');
  t.equal(seen[0]?.te, 'trailers');
  t.equal(seen[0]?.['x-forwarded-for'], '127.0.0.1');
  t.equal(seen[0]?.[':authority'], `localhost:${p.port}`, 'the client\'s authority reaches the upstream');
});
