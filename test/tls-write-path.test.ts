// How many socket writes and TLS records a connection costs: each write is a system call and
// usually a wakeup of the peer, each record an AEAD seal. The server counts the writes it hands to
// TCP; a relay between client and server counts the records on the wire.
import t from 'tap';
import { once } from 'node:events';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { createServer, type TlsServerOptions, type TlsSocket } from '../src/tls/index.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { softCertifiedKey } from './helpers/soft-signer.js';

const certs = makeTestCerts();
t.teardown(() => certs.cleanup());
const ca = readFileSync(certs.ec.caFile);

/** A TLS server whose handler answers one request with a head and a body in two writes, then ends. */
async function start(opts: Partial<TlsServerOptions>, reply: (s: TlsSocket) => void) {
  const ck = softCertifiedKey(certs.ec.chain, certs.ec.key, { latencyMs: 5 });
  const server = createServer({ certificates: [ck], ...opts }, (s) => {
    s.on('error', () => undefined);
    s.once('data', () => reply(s));
  });
  const writes: number[] = [];
  server.netServer.on('connection', (raw: Socket) => {
    const i = writes.push(0) - 1;
    // Every batch net.Socket hands to libuv goes through _write or _writev: one write each.
    const w = raw as Socket & { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
    const origWrite = w._write.bind(raw);
    const origWritev = w._writev.bind(raw);
    w._write = (...a: unknown[]) => { writes[i]!++; origWrite(...a); };
    w._writev = (...a: unknown[]) => { writes[i]!++; origWritev(...a); };
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const relay = await startRelay((server.address() as AddressInfo).port);
  return {
    port: relay.port, writes, records: relay.records,
    close: async () => { relay.server.close(); await new Promise<void>((r) => server.close(() => r())); },
  };
}

/** Forwards TCP both ways; splits the server-to-client stream into TLS records (lengths). */
async function startRelay(target: number): Promise<{ server: Server; port: number; records: number[][] }> {
  const records: number[][] = [];
  const server = createNetServer((down) => {
    const lens: number[] = [];
    records.push(lens);
    const up = netConnect(target, '127.0.0.1');
    let buf = Buffer.alloc(0);
    up.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
        lens.push(buf.readUInt16BE(3));
        buf = buf.subarray(5 + buf.readUInt16BE(3));
      }
      down.write(d);
    });
    down.pipe(up);
    up.on('end', () => down.end());
    for (const s of [up, down]) s.on('error', () => { up.destroy(); down.destroy(); });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, records };
}

/** One connection: handshake, one request, read to the end; resolves with the body and the session. */
function request(port: number, session?: Buffer): Promise<{ body: string; session: Buffer | undefined; reused: boolean }> {
  return new Promise((resolve, reject) => {
    let saved: Buffer | undefined;
    let reused = false;
    const c = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, session, minVersion: 'TLSv1.3' }, () => {
      reused = c.isSessionReused();
      c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    c.on('session', (s: Buffer) => { saved ??= s; });
    const got: Buffer[] = [];
    c.on('data', (d: Buffer) => got.push(d));
    c.on('error', reject);
    c.on('close', () => resolve({ body: Buffer.concat(got).toString(), session: saved, reused }));
  });
}

const HEAD = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n';
const headThenBody = (s: TlsSocket): void => { s.write(HEAD); s.write('ok'); s.end(); };

t.test('a full TLS 1.3 handshake, one request and close: two writes, the response in one record', async (t) => {
  // A long ticket hold so a loaded machine cannot make the tickets leave before the request arrives.
  const s = await start({ ticketHoldMs: 10_000 }, headThenBody);
  t.teardown(s.close);
  const r = await request(s.port);
  t.equal(r.body, `${HEAD}ok`);
  t.ok(r.session, 'the client got a ticket');
  t.equal(s.writes[0], 2, 'the whole server flight in one write; tickets, response and close_notify in another');
  // ServerHello, the compatibility CCS, EncryptedExtensions..Finished; the tickets, the response, close_notify.
  t.same(s.records[0]!.length, 6, 'six records');
  t.ok(s.records[0]![4]! < 100, 'head and body share one small record');
});

t.test('a resumed handshake: two writes as well', async (t) => {
  const s = await start({ ticketHoldMs: 10_000 }, headThenBody);
  t.teardown(s.close);
  const first = await request(s.port);
  const second = await request(s.port, first.session);
  t.ok(second.reused, 'resumed');
  t.equal(second.body, `${HEAD}ok`);
  t.equal(s.writes[1], 2);
});

t.test("serverFlight 'split': ServerHello..Certificate leave before the signature, one write more", async (t) => {
  const s = await start({ ticketHoldMs: 10_000, serverFlight: 'split' }, headThenBody);
  t.teardown(s.close);
  const r = await request(s.port);
  t.equal(r.body, `${HEAD}ok`);
  t.equal(s.writes[0], 3);
});

t.test('tickets still reach a client that sends nothing, once the hold ends', async (t) => {
  const s = await start({ ticketHoldMs: 30 }, headThenBody);
  t.teardown(s.close);
  const c = tls.connect({ host: '127.0.0.1', port: s.port, servername: 'localhost', ca });
  c.on('error', () => undefined);
  const [ticket] = await once(c, 'session') as [Buffer];
  t.ok(ticket.length > 0, 'a ticket arrived without any application data');
  c.destroy();
});

t.test('many small writes in one turn are packed into full records, none over 2^14', async (t) => {
  const piece = Buffer.alloc(1000, 0x61);
  const total = 40 * piece.length;
  const s = await start({ ticketHoldMs: 0 }, (sock) => {
    sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${total}\r\nConnection: close\r\n\r\n`);
    for (let i = 0; i < 40; i++) sock.write(piece);
    sock.end();
  });
  t.teardown(s.close);
  const r = await request(s.port);
  t.equal(r.body.length, total + r.body.indexOf('\r\n\r\n') + 4, 'the whole body arrived');
  const lens = s.records[0]!;
  t.ok(lens.every((n) => n <= 2 ** 14 + 256), 'every record within the TLS 1.3 limit');
  // After the handshake records and the tickets: ceil((head + 40,000) / 16,384) = 3 data records, close_notify.
  const appRecords = lens.filter((n) => n > 1000);
  t.equal(appRecords.length, 3, 'three data records for ~40 KB written in 41 pieces');
});

t.test('data written just before destroy() still reaches the peer', async (t) => {
  const s = await start({ ticketHoldMs: 0 }, (sock) => { sock.write(`${HEAD}ok`); sock.destroy(); });
  t.teardown(s.close);
  const r = await request(s.port);
  t.equal(r.body, `${HEAD}ok`);
});
