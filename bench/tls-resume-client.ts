// Resumed-handshake load generator for bench/tls-handshake.ts: `openssl s_time -reuse` does not
// resume TLS 1.3 (it closes before the NewSessionTicket arrives), so this node:tls client gets
// one ticket, then keeps <parallel> connections resuming with the latest ticket for <seconds>.
// Prints one JSON line: { handshakes, resumed, seconds }.
// Usage: tls-resume-client.ts <port> <caFile> <seconds> <parallel>
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const [portArg, caFile, secondsArg, parallelArg] = process.argv.slice(2);
const port = Number(portArg);
const secureContext = tls.createSecureContext({ ca: readFileSync(caFile!), minVersion: 'TLSv1.3' });
let session: Buffer | undefined;

/** One handshake; the first waits for a ticket, later ones resume with it and close at once. */
function connect(first = false): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', secureContext, session });
    s.once('session', (sess: Buffer) => { session = sess; if (first) s.end(); });
    s.once('secureConnect', () => {
      const reused = s.isSessionReused();
      s.once('close', () => resolve(reused));
      if (!first) s.end();
    });
    s.once('error', reject);
    s.resume();
  });
}

await connect(true); // the full handshake that yields the first ticket
if (!session) throw new Error('server sent no session ticket');
const deadline = performance.now() + Number(secondsArg) * 1000;
let handshakes = 0;
let resumed = 0;
const t0 = performance.now();
await Promise.all(Array.from({ length: Number(parallelArg) }, async () => {
  while (performance.now() < deadline) {
    handshakes++;
    if (await connect()) resumed++;
  }
}));
process.stdout.write(`${JSON.stringify({ handshakes, resumed, seconds: (performance.now() - t0) / 1000 })}\n`);
