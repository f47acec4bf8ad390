// Clients that vanish with a TCP reset at every stage of a connection, on the HSM-backed listener:
// before and inside the ClientHello, while the handshake's signature is in the HSM, right after
// the handshake, after a request head, halfway through a request body, during the response, over
// HTTP/1.1 and HTTP/2. The process must survive all of them (an unheard 'error' would end it), the
// connections must all be released, and the next client must be served.
import t from 'tap';
import { connect, type Socket } from 'node:net';
import tls from 'node:tls';
import { startHsmBackedHarness } from './helpers/proxy-harness.js';

type Stage = 'connect' | 'hello-part' | 'signing' | 'handshake' | 'head' | 'body-part' | 'response' | 'h2-request';
const STAGES: Stage[] = ['connect', 'hello-part', 'signing', 'handshake', 'head', 'body-part', 'response', 'h2-request'];

/** One client that resets its connection at `stage`; resolves once the reset was sent (false: the stage was never reached). */
function resetAt(port: number, stage: Stage, delayMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const raw: Socket = connect(port, '127.0.0.1');
    raw.on('error', () => undefined);
    let done = false;
    const reset = (reached = true): void => {
      if (done) return;
      done = true;
      setTimeout(() => {
        if (!raw.destroyed) raw.resetAndDestroy();
        resolve(reached);
      }, delayMs);
    };
    raw.setTimeout(5000, () => reset(false));
    if (stage === 'connect') { raw.once('connect', reset); return; }
    if (stage === 'hello-part') {
      // A record header promising a ClientHello, and a few of its bytes.
      raw.once('connect', () => { raw.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])); reset(); });
      return;
    }
    const alpn = stage === 'h2-request' ? ['h2'] : ['http/1.1'];
    const s = tls.connect({ socket: raw, servername: 'localhost', ALPNProtocols: alpn, rejectUnauthorized: false });
    s.on('error', () => undefined);
    // Each signature takes 50 ms (the fake HSM's delay): 20 ms after connecting, the ClientHello
    // is in and its signature is pending. Handshake done first means the stage was missed.
    if (stage === 'signing') {
      raw.once('connect', () => setTimeout(reset, 20));
      s.once('secureConnect', () => reset(false));
      return;
    }
    s.once('secureConnect', () => {
      switch (stage) {
        case 'handshake': reset(); return;
        case 'head': s.write('GET /slow?ms=300 HTTP/1.1\r\nHost: localhost\r\n\r\n'); reset(); return;
        case 'body-part': s.write('POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n' + 'x'.repeat(5000)); reset(); return;
        case 'response': s.write('GET /chunked?n=200 HTTP/1.1\r\nHost: localhost\r\n\r\n'); s.once('data', reset); return;
        case 'h2-request': {
          // The connection preface, an empty SETTINGS, then a reset before any stream completes.
          s.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
          reset();
          return;
        }
        default: reset();
      }
    });
  });
}

t.test('resets at every stage leave the proxy serving, with every connection released', async (t) => {
  const h = await startHsmBackedHarness(t, { alpn: ['h2', 'http/1.1'] });
  h.hsm.signDelayMs = 50;
  // 8 stages × 3 delays (at once, next turn, a few ms later), 3 rounds: 72 clients, 8 at a time.
  const jobs: Array<[Stage, () => Promise<boolean>]> = [];
  for (let round = 0; round < 3; round++) for (const stage of STAGES) for (const d of [0, 1, 5]) jobs.push([stage, () => resetAt(h.port, stage, d)]);
  const missed: string[] = [];
  for (let i = 0; i < jobs.length; i += 8) {
    const batch = jobs.slice(i, i + 8);
    const reached = await Promise.all(batch.map(([, j]) => j()));
    batch.forEach(([stage], k) => { if (!reached[k]) missed.push(stage); });
  }
  t.same(missed, [], 'every client reached its stage before resetting');

  const open = async (): Promise<number> => Number(/^hsmproxy_http_connections (\d+)/m.exec(await h.registry.metrics())?.[1] ?? -1);
  const deadline = Date.now() + 10_000;
  while ((await open()) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  t.equal(await open(), 0, 'every connection was released');
  const res = await h.curl('/', ['--cacert', h.cert]);
  t.equal(res.status, 200, 'the next client is served');
  t.equal(JSON.parse(res.body).upstream, 'up0');
  const h2 = await h.curl('/', ['--cacert', h.cert, '--http2']);
  t.equal(h2.status, 200, 'and over HTTP/2');
});
