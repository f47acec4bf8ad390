// CPU of one TLS 1.3 handshake inside hsmproxy's sans-IO server (ServerConnection): ClientHello
// parsing, x25519, the key schedule and transcript, record sealing and opening, tickets; one small
// response and close_notify. No sockets, no signer: the client side (test/helpers/tls13-client.ts)
// and the ECDSA signature run outside the timed sections, so the figure is the server's own work,
// and CPU time (process.cpuUsage) is less disturbed by a busy machine than wall time.
// Run: node --import=tsx bench/tls-handshake.ts   (env BENCH_HANDSHAKES per round, default 300;
// BENCH_GROUPS=x25519,X25519MLKEM768 compares key exchange groups: rounds alternate between them, and
// each group's median is also given as a ratio to the first group's, measured in the same run)
import { sign } from 'node:crypto';
import { ServerConnection } from '../src/tls/connection.js';
import { prepareCertEntry } from '../src/tls/certselect.js';
import type { ServerHandshakeConfig } from '../src/tls/hello12.js';
import { ContentType, plaintextRecords } from '../src/tls/record.js';
import { TicketKeys } from '../src/tls/tickets.js';
import { parseGroups } from '../src/tls/kex.js';
import { SignatureScheme } from '../src/tls/signer.js';
import { groupName } from '../src/tls/suites.js';
import { clientKey } from '../test/helpers/kex-client.js';
import { encodeClientHello, ext, readServerFlight } from '../test/helpers/tls13-client.js';
import { makeTestCerts } from '../test/helpers/tls-certs.js';
import { SoftSigner } from '../test/helpers/soft-signer.js';

const N = Number(process.env.BENCH_HANDSHAKES ?? 300);
const ROUNDS = 7;
const GROUPS = parseGroups((process.env.BENCH_GROUPS ?? 'x25519').split(',').map((g) => g.trim()));
const RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');

const certs = makeTestCerts(['localhost']);
const config: ServerHandshakeConfig = {
  certificates: [prepareCertEntry({ chain: certs.ec.chain, signer: new SoftSigner(certs.ec.key) })],
  ticketKeys: new TicketKeys(), ticketCount: 2, ticketLifetimeS: 3600, verifyAfterSign: () => false, now: Date.now,
};

let cpuUs = 0;
/** Runs `fn`, adding its CPU time to the server's account. */
function server<T>(fn: () => T): T {
  const c0 = process.cpuUsage();
  const r = fn();
  const c = process.cpuUsage(c0);
  cpuUs += c.user + c.system;
  return r;
}

function handshake(group: number): void {
  // The client's key (an ML-KEM key pair for the hybrids) is made outside the timed sections.
  const key = clientKey(group);
  const ch = encodeClientHello({
    extensions: [
      ext.versions(), ext.groups([group]),
      ext.sigAlgs([SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.rsa_pss_rsae_sha256]),
      ext.keyShares([{ group, key: key.publicBytes() }]),
    ],
  });
  const conn = server(() => new ServerConnection(config));
  const first = server(() => {
    conn.feed(plaintextRecords(ContentType.handshake, ch));
    return { out: conn.takeOutput(), events: conn.takeEvents() };
  });
  const req = first.events.find((e) => e.type === 'sign');
  if (!req || req.type !== 'sign') throw new Error(`no signature request (${conn.error?.message ?? conn.stateName})`);
  const sig = sign('sha256', req.request.content, certs.ec.key); // the HSM's work: not the server's
  const flight = server(() => {
    conn.resumeWithSignature(req.request.epoch, sig);
    return conn.takeOutput()!;
  });
  const c = readServerFlight(ch, key, Buffer.concat([first.out ?? Buffer.alloc(0), flight]));
  const fin = c.sealer.seal(ContentType.handshake, c.finished);
  server(() => {
    conn.feed(fin);
    conn.takeEvents();
    conn.writeApplicationData(RESPONSE);
    conn.close();
    conn.takeOutput();
  });
  if (!conn.established) throw new Error(`handshake did not complete: ${conn.error?.message ?? conn.stateName}`);
  if (conn.negotiated.group !== group) throw new Error(`negotiated ${conn.negotiated.group}, not ${group}`);
}

try {
  for (const g of GROUPS) for (let i = 0; i < 100; i++) handshake(g); // JIT
  const perRound = new Map<number, number[]>(GROUPS.map((g) => [g, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const g of GROUPS) {
      cpuUs = 0;
      for (let i = 0; i < N; i++) handshake(g);
      perRound.get(g)!.push(cpuUs / N);
    }
  }
  const stats = GROUPS.map((g) => {
    const v = perRound.get(g)!.sort((a, b) => a - b);
    return { group: groupName(g), best: Math.round(v[0]!), median: Math.round(v[ROUNDS >> 1]!) };
  });
  const base = stats[0]!.median;
  if (stats.length === 1) {
    console.log(JSON.stringify({ handshakes: N * ROUNDS, serverCpuUsPerHandshake: { best: stats[0]!.best, median: base } }));
  } else {
    console.log(JSON.stringify({
      handshakesPerGroup: N * ROUNDS,
      serverCpuUsPerHandshake: stats.map((s) => ({ ...s, ratioToFirst: Number((s.median / base).toFixed(2)) })),
    }));
  }
} finally {
  certs.cleanup();
}
