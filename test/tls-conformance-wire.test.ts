// Conformance over real loopback TCP, byte for byte as a test suite sees it: the exact fatal
// alert record and then the server's FIN, close_notify answered with close_notify, a peer's
// fatal alert answered with silence (RFC 8446 §6).
import t from 'tap';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { createServer, type TlsServer } from '../src/tls/index.js';
import { ContentType, RecordOpener, RecordSealer, plaintextRecords } from '../src/tls/record.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { softCertifiedKey } from './helpers/soft-signer.js';
import { encodeClientHello, goodHello, readServerFlight, records, type ClientSide } from './helpers/tls13-client.js';
import { trafficKeys } from '../src/tls/keyschedule.js';

const certs = makeTestCerts();
t.teardown(() => certs.cleanup());

let server: TlsServer;
let port = 0;
t.before(async () => {
  server = createServer({ certificates: [softCertifiedKey(certs.ec.chain, certs.ec.key, { latencyMs: 2 })], handshakeTimeoutMs: 5000 }, (s) => {
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => s.write(d));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
t.teardown(() => new Promise<void>((r) => server.close(() => r())));

/** A raw TCP client that collects everything the server sends and notices its FIN. */
class Raw {
  readonly chunks: Buffer[] = [];
  ended = false;
  private waiters: Array<() => void> = [];
  constructor(readonly sock: Socket) {
    sock.on('data', (d: Buffer) => { this.chunks.push(d); this.wake(); });
    sock.on('end', () => { this.ended = true; this.wake(); });
    sock.on('close', () => { this.ended = true; this.wake(); });
    sock.on('error', () => undefined);
  }

  static open(): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => resolve(new Raw(s)));
      s.once('error', reject);
    });
  }

  get bytes(): Buffer { return Buffer.concat(this.chunks); }

  private wake(): void { for (const w of this.waiters.splice(0)) w(); }

  /** Resolves once `cond` holds (checked on every chunk and at FIN); rejects after 5 s. */
  async until(cond: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 5000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${this.bytes.toString('hex').slice(0, 200)}`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, 200);
        this.waiters.push(() => { clearTimeout(timer); r(); });
      });
    }
  }

  close(): void { this.sock.destroy(); }
}

/** Completes a handshake over TCP with the hand-rolled client. */
async function handshake(raw: Raw): Promise<ClientSide & { sealer: RecordSealer; seen: number }> {
  const { spec, key } = goodHello();
  const ch = encodeClientHello(spec);
  raw.sock.write(plaintextRecords(ContentType.handshake, ch));
  let c: ClientSide | undefined;
  await raw.until(() => {
    try { c = readServerFlight(ch, key, raw.bytes); return true; } catch { return false; }
  }, 'the server flight');
  const side = c!;
  const seen = raw.bytes.length;
  raw.sock.write(side.sealer.seal(ContentType.handshake, side.finished));
  const ak = trafficKeys(side.suite, side.app.client);
  return { ...side, sealer: new RecordSealer(side.suite, ak.key, ak.iv), seen };
}

/** Decrypts (from sequence 0) the complete records the server sent after its handshake flight. */
function afterFlight(raw: Raw, c: ClientSide & { seen: number }): Array<{ type: number; content: Buffer }> {
  const k = trafficKeys(c.suite, c.app.server);
  const opener = new RecordOpener(c.suite, k.key, k.iv);
  return records(raw.bytes.subarray(c.seen)).map((r) => opener.open({ type: r.type, version: 0x0303, fragment: r.fragment }));
}

t.test('a malformed ClientHello gets exactly one plaintext fatal alert, then FIN', async (t) => {
  const raw = await Raw.open();
  t.teardown(() => raw.close());
  raw.sock.write(plaintextRecords(ContentType.handshake, encodeClientHello({ ...goodHello().spec, compression: [1, 0] })));
  await raw.until(() => raw.ended, 'FIN');
  t.same([...raw.bytes], [21, 3, 3, 0, 2, 2, 47], 'illegal_parameter, nothing else');
});

t.test('a record with an unknown content type: unexpected_message, then FIN', async (t) => {
  const raw = await Raw.open();
  t.teardown(() => raw.close());
  raw.sock.write(Buffer.from([0x19, 3, 3, 0, 1, 0]));
  await raw.until(() => raw.ended, 'FIN');
  t.same([...raw.bytes], [21, 3, 3, 0, 2, 2, 10]);
});

t.test('the client close_notify is answered with close_notify, then FIN', async (t) => {
  const raw = await Raw.open();
  t.teardown(() => raw.close());
  const c = await handshake(raw);
  raw.sock.write(c.sealer.seal(ContentType.application_data, Buffer.from('ping')));
  await raw.until(() => afterFlight(raw, c).some((r) => r.type === ContentType.application_data), 'the echo');
  raw.sock.write(c.sealer.seal(ContentType.alert, Buffer.from([1, 0])));
  await raw.until(() => raw.ended, 'FIN');
  const recs = afterFlight(raw, c);
  const data = recs.filter((r) => r.type === ContentType.application_data).map((r) => r.content.toString());
  t.same(data, ['ping'], 'the echo came back');
  const last = recs.at(-1)!;
  t.same([last.type, ...last.content], [ContentType.alert, 1, 0], 'the last record is a close_notify');
});

t.test('a fatal alert from the client is answered with silence and a close', async (t) => {
  const raw = await Raw.open();
  t.teardown(() => raw.close());
  const c = await handshake(raw);
  raw.sock.write(c.sealer.seal(ContentType.alert, Buffer.from([2, 40])));
  await raw.until(() => raw.ended, 'FIN');
  const recs = afterFlight(raw, c);
  t.notOk(recs.some((r) => r.type === ContentType.alert), 'no alert sent back');
});

t.test('a tampered record after the handshake: encrypted bad_record_mac, then FIN', async (t) => {
  const raw = await Raw.open();
  t.teardown(() => raw.close());
  const c = await handshake(raw);
  const rec = c.sealer.seal(ContentType.application_data, Buffer.from('x'));
  rec[rec.length - 1]! ^= 1;
  raw.sock.write(rec);
  await raw.until(() => raw.ended, 'FIN');
  const last = afterFlight(raw, c).at(-1)!;
  t.same([last.type, ...last.content], [ContentType.alert, 2, 20]);
});

// RFC 8446 §6: every alert but close_notify and user_canceled ends the connection, whatever its level.
for (const [name, level, desc] of [['a warning-level handshake_failure', 1, 40], ['an unknown alert (200) at fatal level', 2, 200], ['an unknown alert (200) at warning level', 1, 200]] as const) {
  t.test(`${name} closes the connection, during and after the handshake`, async (t) => {
    const during = await Raw.open();
    t.teardown(() => during.close());
    const { spec, key } = goodHello();
    const ch = encodeClientHello(spec);
    during.sock.write(plaintextRecords(ContentType.handshake, ch));
    let c: ClientSide | undefined;
    await during.until(() => { try { c = readServerFlight(ch, key, during.bytes); return true; } catch { return false; } }, 'the server flight');
    during.sock.write(c!.sealer.seal(ContentType.alert, Buffer.from([level, desc])));
    await during.until(() => during.ended, 'FIN during the handshake');
    t.ok(during.ended, 'closed during the handshake');

    const after = await Raw.open();
    t.teardown(() => after.close());
    const c2 = await handshake(after);
    after.sock.write(c2.sealer.seal(ContentType.alert, Buffer.from([level, desc])));
    await after.until(() => after.ended, 'FIN after the handshake');
    t.notOk(afterFlight(after, c2).some((r) => r.type === ContentType.alert), 'closed without answering with an alert');
  });
}
