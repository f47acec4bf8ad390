// The attacker of bench/abuse.ts, in its own process, from its own loopback address:
// - `flood`: CONCURRENCY loops, each opening a TLS 1.3 connection with a full handshake (no
//   session), closing it once the handshake ends (or fails) and opening the next at once;
// - `halfopen`: holds up to HOLD TCP connections that send the first bytes of a ClientHello and
//   then nothing (a slowloris on the handshake); one the proxy closes is opened again at once.
// Bounded by SECONDS and by MAX_CONNECTS connections in all. Prints {"ready":true} when started
// and, at the end, one JSON line of counters; then exits.
// Usage: abuse-attack.ts flood|halfopen PORT SECONDS FROM_ADDRESS [CONCURRENCY|HOLD]
import net from 'node:net';
import tls from 'node:tls';

const [mode, portArg, secondsArg, from, nArg] = process.argv.slice(2);
const PORT = Number(portArg);
const SECONDS = Number(secondsArg ?? 15);
const FROM = from ?? '127.0.0.2';
const N = Number(nArg ?? (mode === 'flood' ? 64 : 5000));
const MAX_CONNECTS = 5_000_000;
const deadline = performance.now() + SECONDS * 1000;
const over = (): boolean => performance.now() >= deadline;

const stats = { mode, connects: 0, handshakes: 0, failed: 0, refusedAtAccept: 0, open: 0, peakOpen: 0 };

/** The first 9 bytes of a ClientHello record (header + the start of the message): never completed. */
const PARTIAL_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]);

function floodLoop(): void {
  if (over() || stats.connects >= MAX_CONNECTS) return;
  stats.connects++;
  const raw = net.connect({ host: '127.0.0.1', port: PORT, localAddress: FROM });
  const s = tls.connect({ socket: raw, servername: 'localhost', rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  let done = false;
  let secured = false;
  const next = (): void => {
    if (done) return;
    done = true;
    s.destroy();
    setImmediate(floodLoop);
  };
  s.once('secureConnect', () => { secured = true; stats.handshakes++; next(); });
  s.once('error', () => { if (!secured) { stats.failed++; if (raw.bytesRead === 0) stats.refusedAtAccept++; } next(); });
  s.once('close', () => { if (!secured && !done) { stats.failed++; if (raw.bytesRead === 0) stats.refusedAtAccept++; } next(); });
}

function holdOne(): void {
  if (over() || stats.connects >= MAX_CONNECTS) return;
  stats.connects++;
  const s = net.connect({ host: '127.0.0.1', port: PORT, localAddress: FROM });
  s.on('error', () => undefined);
  s.once('connect', () => {
    stats.open++;
    stats.peakOpen = Math.max(stats.peakOpen, stats.open);
    s.write(PARTIAL_HELLO);
  });
  s.once('close', () => {
    if (s.bytesRead === 0 && s.bytesWritten <= PARTIAL_HELLO.length) stats.refusedAtAccept++;
    if (stats.open > 0) stats.open--;
    // Reopened after a short pause, not in a tight loop: the point is to hold, not to flood.
    setTimeout(holdOne, 10);
  });
  s.on('data', () => undefined);
}

process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
if (mode === 'flood') for (let i = 0; i < N; i++) floodLoop();
else {
  // Opened in waves so the listen backlog is not the limit being measured.
  let opened = 0;
  const wave = setInterval(() => {
    for (let i = 0; i < 250 && opened < N; i++, opened++) holdOne();
    if (opened >= N) clearInterval(wave);
  }, 20);
}
setTimeout(() => {
  process.stdout.write(`${JSON.stringify(stats)}\n`);
  process.exit(0);
}, SECONDS * 1000 + 200);
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
