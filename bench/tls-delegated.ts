// Full TLS 1.3 handshakes over a delegated credential (RFC 9345) next to the HSM-signed and
// soft-key rows, ECDSA P-256, one client for all rows: NSS tstclnt (the client with delegated-
// credential support; OpenSSL, which bench/tls.ts's C client uses, has none), several processes
// each reconnecting with -L and sending one tiny request per connection. Tickets are off, so
// every handshake is full. Per row: handshakes/s, server CPU per handshake (this process: the
// TlsServer and the engine's HSM client), HSM CPU per handshake, and HSM signatures per 1,000
// handshakes (signatures the Signer was asked for during the measured window).
// Run: npm run bench:tls-dc   (env BENCH_SECONDS per row, default 5; BENCH_CLIENTS, default 4;
// BENCH_PROFILES, default unlimited,hsm2m.medium). Writes bench/results/tls-delegated.json.
import { spawn } from 'node:child_process';
import diagnosticsChannel from 'node:diagnostics_channel';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ManifestProfile } from '../src/hsm/cluster/manifest.js';
import { CredentialKeeper } from '../src/proxy/delegated-credentials.js';
import { createServer, HANDSHAKE_CHANNEL, type DelegatedCredentialSource, type HandshakeObservation, type Signer } from '../src/tls/index.js';
import { clusterSigner, softEngineSigner } from './lib/servers.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 4);
const PROFILES = (process.env.BENCH_PROFILES ?? 'unlimited,hsm2m.medium').split(',') as ManifestProfile[];

// A P-256 CA and a leaf with DelegationUsage, and an NSS database trusting the CA.
const dir = mkdtempSync(join(os.tmpdir(), 'hsmproxy-bench-dc-'));
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=bench CA', '-days', '2']);
writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost\nkeyUsage=critical,digitalSignature\n1.3.6.1.4.1.44363.44=ASN1:NULL\n');
sh('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=localhost']);
sh('openssl', ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.crt', '-days', '2', '-extfile', 'ext.cnf']);
const chain = ['leaf.crt', 'ca.crt'].map((f) => Buffer.from(new X509Certificate(readFileSync(join(dir, f))).raw));
const keyFile = join(dir, 'leaf.key');
mkdirSync(join(dir, 'nss'));
sh('certutil', ['-N', '-d', `sql:${join(dir, 'nss')}`, '--empty-password']);
sh('certutil', ['-A', '-d', `sql:${join(dir, 'nss')}`, '-n', 'ca', '-t', 'C,,', '-i', join(dir, 'ca.crt')]);
writeFileSync(join(dir, 'req'), 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n');

interface Row {
  server: string; key: 'ec-p256'; keySource: 'soft' | 'hsm'; profile?: ManifestProfile; credential: 'certificate' | 'delegated';
  handshakes: number; errors: number; perSecond: number; serverCpuMsPerHandshake: number; hsmCpuMsPerHandshake?: number;
  hsmSignaturesPer1000: number; delegatedShare: number;
}

/** A Signer that counts the signatures asked of it. */
function counting(signer: Signer): { signer: Signer; count(): number } {
  let n = 0;
  return {
    signer: { keyType: signer.keyType, curve: signer.curve, bits: signer.bits, schemes: signer.schemes, sign: (s, d, sig) => { n++; return signer.sign(s, d, sig); } } as Signer,
    count: () => n,
  };
}

const RESPONSE = Buffer.from('HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok');
function answerOnce(socket: Duplex): void {
  socket.on('error', () => undefined);
  socket.once('data', () => socket.end(RESPONSE));
}

/** Runs CLIENTS tstclnt loops until `seconds` pass; resolves when every client has exited. */
async function drive(port: number, delegated: boolean, seconds: number): Promise<number> {
  const end = Date.now() + seconds * 1000;
  let failures = 0;
  const loop = async () => {
    while (Date.now() < end) {
      const args = ['-h', '127.0.0.1', '-p', String(port), '-d', `sql:${join(dir, 'nss')}`, '-V', 'tls1.3:tls1.3', '-a', 'localhost', '-A', join(dir, 'req'), '-L', '50', ...(delegated ? ['-B'] : [])];
      const code = await new Promise<number | null>((resolve) => {
        const child = spawn('tstclnt', args, { stdio: 'ignore' });
        const kill = setTimeout(() => child.kill('SIGKILL'), 30_000);
        child.on('exit', (c) => { clearTimeout(kill); resolve(c); });
      });
      if (code !== 0) failures++;
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, loop));
  return failures;
}

async function row(base: Omit<Row, 'handshakes' | 'errors' | 'perSecond' | 'serverCpuMsPerHandshake' | 'hsmSignaturesPer1000' | 'delegatedShare'>, signer: Signer, hsmCpuMs?: () => number): Promise<Row> {
  const counted = counting(signer);
  let keeper: CredentialKeeper | undefined;
  let delegated: DelegatedCredentialSource | undefined;
  if (base.credential === 'delegated') {
    keeper = new CredentialKeeper({ listener: 'bench', chain, signer: counted.signer, keyType: 'ec:p256', validityMs: 3_600_000 });
    await keeper.start();
    delegated = keeper;
  }
  const server = createServer({ certificates: [{ chain, signer: counted.signer, ...(delegated ? { delegated } : {}) }], ticketKeys: false }, answerOnce);
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let ok = 0;
  let viaCredential = 0;
  let failed = 0;
  const onHandshake = (m: unknown) => {
    const o = m as HandshakeObservation;
    if (o.result !== 'ok') { failed++; return; }
    ok++;
    if (o.credential === 'delegated') viaCredential++;
  };
  await drive(port, base.credential === 'delegated', 1); // warm-up: JIT, the NSS database, connections
  diagnosticsChannel.subscribe(HANDSHAKE_CHANNEL, onHandshake);
  const c0 = process.cpuUsage();
  const h0 = hsmCpuMs?.() ?? 0;
  const s0 = counted.count();
  const t0 = performance.now();
  const clientFailures = await drive(port, base.credential === 'delegated', SECONDS);
  const elapsed = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  diagnosticsChannel.unsubscribe(HANDSHAKE_CHANNEL, onHandshake);
  const signs = counted.count() - s0;
  keeper?.stop();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const n = Math.max(1, ok);
  const r: Row = {
    ...base, handshakes: ok, errors: failed + clientFailures, perSecond: Math.round(ok / elapsed),
    serverCpuMsPerHandshake: Math.round(((c.user + c.system) / 1000 / n) * 1000) / 1000,
    ...(hsmCpuMs ? { hsmCpuMsPerHandshake: Math.round(((hsmCpuMs() - h0) / n) * 1000) / 1000 } : {}),
    hsmSignaturesPer1000: Math.round((signs / n) * 1000 * 10) / 10, delegatedShare: Math.round((viaCredential / n) * 1000) / 1000,
  };
  console.log(`${`${base.server} ${base.keySource}${base.profile ? ` ${base.profile}` : ''} ${base.credential}`.padEnd(44)} ${String(r.perSecond).padStart(6)}/s  server CPU ${r.serverCpuMsPerHandshake.toFixed(3)} ms${r.hsmCpuMsPerHandshake !== undefined ? ` + HSM ${r.hsmCpuMsPerHandshake.toFixed(3)} ms` : ''}  HSM signatures/1000 ${r.hsmSignaturesPer1000}  delegated ${(r.delegatedShare * 100).toFixed(1)}%  (${ok} handshakes${r.errors ? `, ${r.errors} errors` : ''})`);
  return r;
}

const rows: Row[] = [];
try {
  console.log(`${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; ${CLIENTS} tstclnt processes, ${SECONDS} s per row`);
  const soft = await softEngineSigner(keyFile);
  rows.push(await row({ server: 'hsmproxy', key: 'ec-p256', keySource: 'soft', credential: 'certificate' }, soft.signer));
  await soft.close();
  for (const profile of PROFILES) {
    const hsm = await clusterSigner(keyFile, 1, profile);
    try {
      rows.push(await row({ server: 'hsmproxy', key: 'ec-p256', keySource: 'hsm', profile, credential: 'certificate' }, hsm.signer, hsm.hsmCpuMs));
      rows.push(await row({ server: 'hsmproxy', key: 'ec-p256', keySource: 'hsm', profile, credential: 'delegated' }, hsm.signer, hsm.hsmCpuMs));
    } finally {
      await hsm.close();
    }
  }
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'tls-delegated.json');
  writeFileSync(out, JSON.stringify({
    date: new Date().toISOString(), cpus: os.cpus().length, loadAverage: os.loadavg(), seconds: SECONDS, clients: CLIENTS, client: 'NSS tstclnt -L 50 (-B for delegated rows)', rows,
  }, null, 2) + '\n');
  console.log(`wrote ${out}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
