// The attackers of bench/flood.ts, in their own process so their CPU does not delay the
// well-behaved client's timers: for SECONDS, MALFORMED TLS connections to the proxy sending
// malformed HTTP (garbage bytes, bad header lines, CL.TE and other framing conflicts,
// malformed chunked bodies, oversized heads) and reconnecting whenever the proxy closes, and
// PIPELINED connections pipelining GETs in batches of BATCH per write. Pipelining connections
// alternate between reading answers as fast as they come and reading them only in short bursts
// (a slow reader), and all discard what they read.
// Prints {"ready":true} when started and sends its counters over IPC when done, then exits.
// Usage: flood-attack.ts PORT SECONDS MALFORMED PIPELINED BATCH
//   env BENCH_FLOOD_KINDS: comma-separated subset of garbage,bad-header,framing,bad-chunk,huge-head (default all)
import { randomBytes } from 'node:crypto';
import tls, { type TLSSocket } from 'node:tls';

const [portArg, secondsArg, malformedArg, pipelinedArg, batchArg] = process.argv.slice(2);
const PORT = Number(portArg);
const SECONDS = Number(secondsArg ?? 30);
const MALFORMED = Number(malformedArg ?? 32);
const PIPELINED = Number(pipelinedArg ?? 32);
const BATCH = Number(batchArg ?? 2000);
// Bounds besides the deadline: a connection the proxy neither answers nor closes is dropped after
// STUCK_MS (and counted), a malformed connection writes at most MAX_MALFORMED_BYTES, and the whole
// run opens at most MAX_CONNECTS connections and writes at most MAX_BATCHES pipelined batches.
const STUCK_MS = 20_000;
const MAX_MALFORMED_BYTES = 4 << 20;
const MAX_CONNECTS = 2_000_000;
const MAX_BATCHES = 1_000_000;
// Slow readers read for SLOW_BURST_MS out of every SLOW_PERIOD_MS.
const SLOW_PERIOD_MS = 1000;
const SLOW_BURST_MS = 20;

const deadline = performance.now() + SECONDS * 1000;
const over = (): boolean => performance.now() >= deadline;

/** What a malformed payload tries. */
type Kind = 'garbage' | 'bad-header' | 'framing' | 'bad-chunk' | 'huge-head';

const BAD_HEADERS = [
  'GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: localhost\r\nX-Nul: a\0b\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: localhost\r\nX-Fold: a\r\n folded\r\n\r\n',
  'GET / HTTP/1.1\nHost: localhost\n\n',
  'GET / HTTP/1.1\r\nHost: localhost\rX: y\r\n\r\n',
  'GET / HTTP/9.9\r\nHost: localhost\r\n\r\n',
  'G@T / HTTP/1.1\r\nHost: localhost\r\n\r\n',
  'GET  /  HTTP/1.1\r\nHost: localhost\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n',
  'GET / HTTP/1.1\r\n: empty-name\r\nHost: localhost\r\n\r\n',
  'GET http://[::1 HTTP/1.1\r\nHost: localhost\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: localhost\r\nExpect: 200-ok\r\n\r\n',
];
const FRAMING = [
  // CL.TE: a front end honouring Content-Length forwards "G" as the start of the next request.
  'POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG',
  // TE.CL
  'POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
  'POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5, 6\r\n\r\nhello!',
  'POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0x10\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'POST / HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello',
];
// A valid chunked head whose body is malformed (sent in the same write as the head).
const BAD_CHUNKS = [
  'POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nx\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5;\0ext\r\nhello\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
];
const HUGE = [
  () => `GET / HTTP/1.1\r\nHost: localhost\r\n${Array.from({ length: 64 }, (_, i) => `X-Pad-${i}: ${'a'.repeat(1000)}\r\n`).join('')}\r\n`,
  () => `GET /${'a'.repeat(32 * 1024)} HTTP/1.1\r\nHost: localhost\r\n\r\n`,
  () => `GET / HTTP/1.1\r\nHost: localhost\r\n${Array.from({ length: 300 }, (_, i) => `X-${i}: y\r\n`).join('')}\r\n`,
  () => `GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'b'.repeat(1 << 20)}\r\n\r\n`,
];
const ALL_KINDS: Kind[] = ['garbage', 'bad-header', 'framing', 'bad-chunk', 'huge-head'];
// BENCH_FLOOD_KINDS (comma-separated) narrows the mix, e.g. to measure the rest while one kind crashes the proxy.
const KINDS = process.env.BENCH_FLOOD_KINDS ? ALL_KINDS.filter((k) => process.env.BENCH_FLOOD_KINDS!.split(',').includes(k)) : ALL_KINDS;
const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)]!;

function payload(kind: Kind): Buffer {
  switch (kind) {
    case 'garbage': return randomBytes(256 + Math.floor(Math.random() * 8192));
    case 'bad-header': return Buffer.from(pick(BAD_HEADERS), 'latin1');
    case 'framing': return Buffer.from(pick(FRAMING), 'latin1');
    case 'bad-chunk': return Buffer.from(pick(BAD_CHUNKS), 'latin1');
    case 'huge-head': return Buffer.from(pick(HUGE)(), 'latin1');
  }
}

const stats = {
  kinds: KINDS,
  connects: 0,
  handshakeErrors: 0,
  socketErrors: {} as Record<string, number>,
  malformed: {
    cycles: 0, bytesSent: 0, answered: 0, closedWithoutAnswer: 0, stuck: 0,
    byKind: Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>,
    statuses: {} as Record<string, number>,
  },
  pipeline: {
    connects: 0, batches: 0, requestsWritten: 0, closedByServer: 0,
    fast: { responses: 0, non200: 0, bytesRead: 0 },
    slow: { responses: 0, non200: 0, bytesRead: 0 },
  },
};
const live = new Set<TLSSocket>();

function open(onSecure: (s: TLSSocket) => void, onGone: (handshook: boolean) => void): void {
  if (over() || stats.connects >= MAX_CONNECTS) return;
  stats.connects++;
  let handshook = false;
  const s = tls.connect({ host: '127.0.0.1', port: PORT, servername: 'localhost', rejectUnauthorized: false }, () => {
    handshook = true;
    onSecure(s);
  });
  live.add(s);
  // Counted, never thrown: refused connects, resets, writes after the proxy closed (EPIPE).
  s.on('error', (err: NodeJS.ErrnoException) => count(stats.socketErrors, err.code ?? err.message));
  s.once('close', () => {
    live.delete(s);
    if (!handshook) stats.handshakeErrors++;
    onGone(handshook);
  });
}

const count = (m: Record<string, number>, k: string): void => { m[k] = (m[k] ?? 0) + 1; };

/** One malformed-HTTP attacker: a payload, more payloads while the proxy reads, reconnect on close. */
function malformed(): void {
  let answered = false;
  let sent = 0;
  let stuck: NodeJS.Timeout | undefined;
  open((s) => {
    stats.malformed.cycles++;
    stuck = setTimeout(() => { stats.malformed.stuck++; s.destroy(); }, STUCK_MS);
    s.on('data', (d: Buffer) => {
      if (answered) return;
      answered = true;
      const m = /^HTTP\/1\.1 (\d{3})/.exec(d.toString('latin1', 0, 16));
      count(stats.malformed.statuses, m ? m[1]! : 'not-http');
    });
    const more = (): void => {
      while (!s.destroyed && !over() && sent < MAX_MALFORMED_BYTES) {
        const kind = pick(KINDS);
        stats.malformed.byKind[kind]++;
        const p = payload(kind);
        sent += p.length;
        stats.malformed.bytesSent += p.length;
        if (!s.write(p)) { s.once('drain', more); return; }
      }
    };
    more();
  }, (handshook) => {
    clearTimeout(stuck);
    if (handshook) {
      if (answered) stats.malformed.answered++;
      else stats.malformed.closedWithoutAnswer++;
    }
    // A failed connect (proxy gone) retries after a pause rather than spinning.
    if (!over()) setTimeout(malformed, handshook ? 0 : 50);
  });
}

/** One pipelining attacker: batches of GETs as fast as the proxy takes them; reads fast or slowly. */
function pipeline(slow: boolean): void {
  const batch = Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: flood\r\n\r\n'.repeat(BATCH), 'latin1');
  const tally = slow ? stats.pipeline.slow : stats.pipeline.fast;
  let reader: NodeJS.Timeout | undefined;
  let stuck: NodeJS.Timeout | undefined;
  open((s) => {
    stats.pipeline.connects++;
    let carry = '';
    const arm = () => { clearTimeout(stuck); stuck = setTimeout(() => s.destroy(), STUCK_MS); };
    arm();
    s.on('data', (d: Buffer) => {
      arm();
      tally.bytesRead += d.length;
      // Status lines may straddle reads: scan with the previous read's last 11 bytes in front (a
      // line counted needs 12 bytes, so it never lies wholly inside what is carried).
      const text = carry + d.toString('latin1');
      for (let i = text.indexOf('HTTP/1.1 '); i >= 0 && i + 12 <= text.length; i = text.indexOf('HTTP/1.1 ', i + 12)) {
        tally.responses++;
        if (text.slice(i + 9, i + 12) !== '200') tally.non200++;
      }
      carry = text.slice(-11);
    });
    s.on('end', () => stats.pipeline.closedByServer++);
    if (slow) {
      s.pause();
      reader = setInterval(() => {
        s.resume();
        setTimeout(() => s.pause(), SLOW_BURST_MS);
      }, SLOW_PERIOD_MS);
    }
    const pump = (): void => {
      if (s.destroyed || over() || stats.pipeline.batches >= MAX_BATCHES) return;
      stats.pipeline.batches++;
      stats.pipeline.requestsWritten += BATCH;
      // A batch is larger than the socket's high-water mark: write() says wait, and the next batch
      // goes once the proxy has taken this one (the client holds at most one batch).
      if (s.write(batch)) setImmediate(pump);
      else s.once('drain', pump);
    };
    pump();
  }, () => {
    clearInterval(reader);
    clearTimeout(stuck);
    if (!over()) setTimeout(() => pipeline(slow), 50);
  });
}

if (!Number.isInteger(PORT) || PORT <= 0) {
  process.stderr.write('usage: flood-attack.ts PORT SECONDS MALFORMED PIPELINED BATCH\n');
  process.exit(2);
}
for (let i = 0; i < MALFORMED; i++) malformed();
for (let i = 0; i < PIPELINED; i++) pipeline(i % 2 === 1);
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
process.on('disconnect', () => process.exit(0));

setTimeout(() => {
  for (const s of live) s.destroy();
  // Exit once the message is out (process.send is asynchronous), or after 2 s regardless.
  setTimeout(() => process.exit(0), 2000).unref();
  if (process.send) process.send({ stats }, () => process.exit(0));
  else process.exit(0);
}, SECONDS * 1000);
