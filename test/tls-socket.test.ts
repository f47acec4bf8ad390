// TlsSocket/TlsServer behaviour over real loopback sockets: the asynchronous signature
// (deadline, rejection, abort on disconnect), handshake timeout, load shedding, plain HTTP on
// the TLS port, backpressure, half-close, and the handshake observation channel.
import t from 'tap';
import diagnosticsChannel from 'node:diagnostics_channel';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { HANDSHAKE_CHANNEL, type HandshakeObservation } from '../src/tls/observe.js';
import { createServer, type TlsServerOptions, type TlsSocket } from '../src/tls/index.js';
import type { TlsError } from '../src/tls/alert.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { softCertifiedKey, type SoftSignerOptions } from './helpers/soft-signer.js';

const certs = makeTestCerts();
t.teardown(() => certs.cleanup());
const ca = readFileSync(certs.ec.caFile);

const observations: HandshakeObservation[] = [];
const onObs = (m: unknown): void => { observations.push(m as HandshakeObservation); };
diagnosticsChannel.subscribe(HANDSHAKE_CHANNEL, onObs);
t.teardown(() => diagnosticsChannel.unsubscribe(HANDSHAKE_CHANNEL, onObs));

async function start(signer: SoftSignerOptions, opts: Partial<TlsServerOptions> = {}, onSecure?: (s: TlsSocket) => void, cert: 'ec' | 'rsa' = 'ec') {
  const ck = softCertifiedKey(certs[cert].chain, certs[cert].key, signer);
  const errors: TlsError[] = [];
  const server = createServer({ certificates: [ck], name: 'test', ...opts }, onSecure ?? ((s) => { s.on('error', () => undefined); s.on('data', (d: Buffer) => s.write(d)); s.on('end', () => s.end()); }));
  server.on('tlsClientError', (e: TlsError) => errors.push(e));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { server, port, signer: ck.signer, errors, close: () => new Promise<void>((r) => server.close(() => r())) };
}

function client(port: number, opts: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, ...opts }, () => resolve(c));
    c.on('error', reject);
  });
}

const until = async (cond: () => boolean, ms = 3000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
};

t.test('a completed handshake is observed with suite, group, key type and signature wait', async (t) => {
  const seen: HandshakeObservation[] = [];
  const s = await start({ latencyMs: 20 }, { onHandshake: (o) => seen.push(o) });
  t.teardown(s.close);
  const c = await client(s.port);
  c.end();
  await until(() => observations.some((o) => o.result === 'ok'));
  const o = observations.find((x) => x.result === 'ok')!;
  t.match(o, { version: 'TLSv1.3', suite: 'TLS_AES_128_GCM_SHA256', group: 'x25519', keyType: 'ec', resumed: false, servername: 'localhost', listener: 'test' });
  t.ok(o.signWaitMs >= 15, `signWaitMs ${o.signWaitMs} covers the signer latency`);
  t.ok(o.durationMs >= o.signWaitMs);
  t.same(seen, [o], 'the onHandshake observer got the same observation');
});

t.test('a signer past its deadline fails only that handshake with internal_error and is aborted', async (t) => {
  const s = await start({ fault: 'hang' }, { signTimeoutMs: 100 });
  t.teardown(s.close);
  const err = await client(s.port).then(() => null, (e: Error) => e);
  t.match(err?.message ?? '', /internal error/, 'client saw internal_error');
  await until(() => s.signer.aborted === 1);
  t.equal(s.signer.aborted, 1, 'the sign was aborted through its AbortSignal');
  t.equal(s.signer.inFlight, 0);
  t.match(observations.at(-1), { result: 'sign_error', alert: 'internal_error' });
  t.equal(s.server.handshakesInProgress, 0);
});

for (const [name, cert, opts] of [
  ['by default every RSA signature is verified before it is sent', 'rsa', {}],
  ['verifyAfterSign: true verifies ECDSA signatures too', 'ec', { verifyAfterSign: true }],
] as const) {
  t.test(name, async (t) => {
    const s = await start({ fault: 'garbage' }, opts, undefined, cert);
    t.teardown(s.close);
    const err = await client(s.port).then(() => null, (e: Error) => e);
    t.match(err?.message ?? '', /internal error/, 'the client got internal_error, not a bad CertificateVerify');
    await until(() => s.errors.length > 0);
    t.match(s.errors.at(-1)?.message ?? '', /does not verify under the certificate key/);
  });
}

t.test('verifyAfterSign: false sends what the signer returned', async (t) => {
  const s = await start({ fault: 'garbage' }, { verifyAfterSign: false });
  t.teardown(s.close);
  const err = await client(s.port).then(() => null, (e: Error) => e);
  t.ok(err, 'the client refuses the handshake');
  t.notMatch(err?.message ?? '', /internal error/, `the client found the bad signature itself (${err?.message})`);
});

t.test('a rejecting signer → internal_error; the next good handshake works', async (t) => {
  const s = await start({ fault: 'reject' });
  t.teardown(s.close);
  const err = await client(s.port).then(() => null, (e: Error) => e);
  t.match(err?.message ?? '', /internal error/);
  s.signer.opts = {};
  const c = await client(s.port);
  t.equal(c.getProtocol(), 'TLSv1.3');
  c.end();
});

t.test('a client that disconnects while its signature is pending leaks nothing', async (t) => {
  const s = await start({ fault: 'hang' }, { signTimeoutMs: 60_000 });
  t.teardown(s.close);
  const c = tls.connect({ host: '127.0.0.1', port: s.port, servername: 'localhost', ca });
  c.on('error', () => undefined);
  await until(() => s.signer.inFlight === 1);
  c.destroy();
  await until(() => s.signer.aborted === 1 && s.server.handshakesInProgress === 0);
  t.equal(s.signer.aborted, 1, 'sign aborted');
  t.equal(s.server.handshakesInProgress, 0);
  t.match(observations.at(-1), { result: 'closed' });
});

t.test('an encrypted fatal alert while the signature is pending aborts the sign and closes', async (t) => {
  const { encodeClientHello, goodHello, handshakeSecretsFromServerHello, records } = await import('./helpers/tls13-client.js');
  const { trafficKeys } = await import('../src/tls/keyschedule.js');
  const { ContentType, RecordSealer, plaintextRecords } = await import('../src/tls/record.js');
  // 'split': the client has ServerHello..Certificate while the signature is pending.
  const s = await start({ fault: 'hang' }, { signTimeoutMs: 60_000, serverFlight: 'split' });
  t.teardown(s.close);
  const { spec, key } = goodHello();
  const ch = encodeClientHello(spec);
  const raw = netConnect(s.port, '127.0.0.1');
  raw.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => raw.on('close', () => resolve()));
  let got = Buffer.alloc(0);
  raw.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); });
  raw.write(plaintextRecords(ContentType.handshake, ch));
  // The client has SH, EE and Certificate (flushed before the signature in 'split').
  await until(() => s.signer.inFlight === 1 && records(got).length >= 2);
  const { suite, hs } = handshakeSecretsFromServerHello(ch, key, got);
  const k = trafficKeys(suite, hs.client);
  raw.write(new RecordSealer(suite, k.key, k.iv).seal(ContentType.alert, Buffer.from([2, 48]))); // fatal unknown_ca
  await until(() => s.signer.aborted === 1 && s.server.handshakesInProgress === 0);
  t.equal(s.signer.aborted, 1, 'the sign was aborted through its AbortSignal');
  await closed;
  t.pass('the server closed the connection');
  t.match(observations.at(-1), { result: 'alert_received' });
  t.match(s.errors.at(-1)?.message ?? '', /unknown_ca/);
});

t.test('a silent client is cut off by the handshake timeout', async (t) => {
  const s = await start({}, { handshakeTimeoutMs: 150 });
  t.teardown(s.close);
  const raw = netConnect(s.port, '127.0.0.1');
  const closed = await new Promise<boolean>((resolve) => { raw.on('close', () => resolve(true)); raw.on('error', () => undefined); setTimeout(() => resolve(false), 3000); });
  t.ok(closed, 'server closed the connection');
  t.match(observations.at(-1), { result: 'timeout' });
  t.equal(s.errors.at(-1)?.code, 'TLS_ERR_HANDSHAKE_TIMEOUT');
});

t.test('plain HTTP on the TLS port is closed without a TLS alert', async (t) => {
  const s = await start({});
  t.teardown(s.close);
  const raw = netConnect(s.port, '127.0.0.1', () => raw.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  const got: Buffer[] = [];
  raw.on('data', (d: Buffer) => got.push(d));
  await new Promise((r) => raw.on('close', r));
  t.equal(Buffer.concat(got).length, 0, 'nothing sent back');
  t.equal(s.errors.at(-1)?.code, 'TLS_ERR_HTTP_ON_TLS_PORT');
});

t.test('maxConcurrentHandshakes sheds connections beyond the cap', async (t) => {
  const s = await start({ fault: 'hang' }, { maxConcurrentHandshakes: 1, signTimeoutMs: 60_000 });
  t.teardown(s.close);
  const a = tls.connect({ host: '127.0.0.1', port: s.port, servername: 'localhost', ca });
  a.on('error', () => undefined);
  await until(() => s.signer.inFlight === 1);
  const err = await client(s.port).then(() => null, (e: Error) => e);
  t.ok(err, 'second connection refused');
  t.equal(s.server.shedConnections, 1);
  a.destroy();
  await until(() => s.server.handshakesInProgress === 0);
});

t.test('backpressure: a paused TlsSocket stops reading TCP; all bytes arrive after resume', async (t) => {
  let serverSocket: TlsSocket | undefined;
  const s = await start({}, {}, (sock) => { serverSocket = sock; sock.on('error', () => undefined); sock.pause(); });
  t.teardown(s.close);
  const c = await client(s.port);
  const chunk = Buffer.alloc(64 * 1024, 7);
  const total = 16 * 1024 * 1024;
  let written = 0;
  const writeMore = (): void => { while (written < total) { written += chunk.length; if (!c.write(chunk)) { c.once('drain', writeMore); return; } } };
  writeMore();
  await until(() => serverSocket !== undefined);
  await new Promise((r) => setTimeout(r, 300));
  t.ok(written < total, `the client was held back (${written} of ${total} bytes written while the server was paused)`);
  t.ok(serverSocket!.readableLength < 2 * 1024 * 1024, `server buffered ${serverSocket!.readableLength} bytes, bounded`);
  let received = 0;
  serverSocket!.on('data', (d: Buffer) => { received += d.length; });
  serverSocket!.resume();
  await until(() => received === total, 20_000);
  t.equal(received, total, 'every byte delivered');
  c.destroy();
});

t.test('a large server-to-client stream respects socket write backpressure', async (t) => {
  const total = 16 * 1024 * 1024;
  let sawFalse = false;
  const s = await start({}, {}, (sock) => {
    const chunk = Buffer.alloc(256 * 1024, 1);
    let sent = 0;
    const pump = (): void => {
      while (sent < total) {
        sent += chunk.length;
        if (!sock.write(chunk)) { sawFalse = true; sock.once('drain', pump); return; }
      }
      sock.end();
    };
    pump();
  });
  t.teardown(s.close);
  const c = await client(s.port);
  let received = 0;
  c.pause();
  await new Promise((r) => setTimeout(r, 200));
  c.on('data', (d: Buffer) => { received += d.length; });
  c.resume();
  await new Promise((r) => c.on('end', r));
  t.equal(received, total);
  t.ok(sawFalse, 'write() returned false while the client was not reading');
});

t.test('half-close: after the client close_notify the server can still send', async (t) => {
  const s = await start({}, {}, (sock) => {
    let got = '';
    sock.on('data', (d: Buffer) => { got += d.toString(); });
    sock.on('end', () => { sock.end(`you said ${got}`); });
  });
  t.teardown(s.close);
  const c = await client(s.port, { allowHalfOpen: true } as tls.ConnectionOptions);
  let reply = '';
  c.on('data', (d: Buffer) => { reply += d.toString(); });
  c.end('ping');
  await new Promise((r) => c.on('end', r));
  t.equal(reply, 'you said ping');
  c.destroy();
});
