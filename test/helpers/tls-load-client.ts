// A child process that opens N concurrent node:tls connections to a server and reports, as one
// JSON line on stdout, how many completed a TLS 1.3 handshake. Running the clients in another
// process keeps their CPU out of the server's event loop, which the parent measures.
// Usage: tls-load-client.ts <port> <count> <caFile> [waveSize waveGapMs]: connections are opened
// in waves (default: all at once), none waiting for another to finish.
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const [portArg, countArg, caFile, waveArg, gapArg] = process.argv.slice(2);
const port = Number(portArg);
const count = Number(countArg);
// One SecureContext for all connections: building one per connect (from `ca`) costs more CPU than the handshake.
const secureContext = tls.createSecureContext({ ca: readFileSync(caFile!), minVersion: 'TLSv1.3' });
const wave = Number(waveArg ?? count);
const gapMs = Number(gapArg ?? 0);
const servername = 'localhost';

function one(): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername, secureContext });
    s.once('secureConnect', () => { const p = s.getProtocol(); s.destroy(); resolve(p === 'TLSv1.3' ? 'ok' : `protocol ${p}`); });
    s.once('error', (e: NodeJS.ErrnoException) => { s.destroy(); resolve(e.code ?? e.message); });
    s.setTimeout(30_000, () => { s.destroy(); resolve('timeout'); });
  });
}

const t0 = performance.now();
const pending: Promise<string>[] = [];
for (let i = 0; i < count; i += wave) {
  for (let j = i; j < Math.min(count, i + wave); j++) pending.push(one());
  if (gapMs > 0 && i + wave < count) await new Promise((r) => setTimeout(r, gapMs));
}
const results = await Promise.all(pending);
const tally: Record<string, number> = {};
for (const r of results) tally[r] = (tally[r] ?? 0) + 1;
process.stdout.write(`${JSON.stringify({ elapsedMs: performance.now() - t0, tally })}\n`);
