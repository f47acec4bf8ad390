// What hostile or greedy peers cost one HSM node process (issue 28): (1) the node's open file
// descriptors while 200 silent TCP connections and 200 half-finished TLS handshakes (a 5-byte
// record header) are held open from 127.0.0.2-127.0.0.9 (50 per address, under the default
// per-source cap), sampled before, 1 s after, and 3 s past the node's 10 s handshake timeout;
// (2) the node's RSS (now and peak, /proc/<pid>/status) while one logged-in client streams
// 1 MiB P-256 SIGN frames as fast as the socket takes them, first reading every answer, then
// never reading. The node's capacity profile signs P-256 at 50/s (a busy or small HSM), so
// requests arrive faster than it serves them and queue for its crypto units, each holding its
// 1 MiB body: what the node holds is then what it lets one connection put in flight.
// The node runs as a child process (this file with --node) with default appliance options,
// so the figures are its own.
// Run: node --import=tsx bench/hsm-peer-flood.ts   (env FLOOD_FRAMES, default 1000 per phase)
// Loopback only; needs 127.0.0.2-9 routable (Linux routes 127/8 to lo by default).
// Measured (2-core CI-class machine, Node 20, node under tsx so its idle RSS is ~125 MB):
//   before issue 28: node fds 27 → 426 at +1 s and still 426 at +13 s (all 400 held for good);
//     RSS 133 → 1271 MB reading answers, 2373 MB peak not reading (bodies queued without bound).
//   after: fds 27 → 426 at +1 s → 26 at +13 s (all 400 closed at the timeout);
//     RSS 127 → 198 MB, 218 MB peak not reading; the client is held to the HSM's 50 signs/s.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { startNode } from '../src/hsm/cluster/run-node.js';
import { FLAG_JSON, HEADER_BYTES, Op, encodeFrame, writeHeader, writeSign } from '../src/hsm/protocol/index.js';
import { activate, clientTls, connect, killChild, tempCluster } from '../test/helpers/hsm-cluster.js';

const FRAMES = Number(process.env.FLOOD_FRAMES ?? 1000);
const SLOW_SIGN = { name: 'bench-slow-sign', units: 8, rates: { 'sign:ec-p256': 50 }, maxQueue: 100_000 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

if (process.argv[2] === '--node') {
  // Child mode: serve hsm-1 of the cluster in argv[3] until killed.
  const node = await startNode({ dir: process.argv[3] as string, capacity: SLOW_SIGN, log: () => undefined });
  process.stdout.write(`HSM listening on ${node.port}\n`);
  await new Promise(() => undefined);
}

const cluster = await tempCluster();
const port = cluster.manifest.hsms[0]!.port;
const child = await new Promise<ChildProcess>((resolve, reject) => {
  const c = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--node', cluster.dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const timer = setTimeout(() => reject(new Error('the node did not start in 20 s')), 20_000);
  c.stdout.setEncoding('utf8').on('data', (d: string) => { if (d.includes('HSM listening')) { clearTimeout(timer); resolve(c); } });
  c.once('exit', (code) => { clearTimeout(timer); reject(new Error(`the node exited (${code})`)); });
});
const pid = child.pid as number;
const fds = (): number => readdirSync(`/proc/${pid}/fd`).length;
const rssMb = (): { rss: number; peak: number } => {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? 0);
  return { rss: Math.round(kb('VmRSS') / 1024), peak: Math.round(kb('VmHWM') / 1024) };
};

try {
  await activate(cluster, port);

  // (1) 200 idle + 200 half-handshake connections.
  const baseline = fds();
  const hostile: Socket[] = [];
  for (let i = 0; i < 400; i++) {
    const s = netConnect({ host: '127.0.0.1', port, localAddress: `127.0.0.${2 + (i % 8)}` });
    s.on('error', () => undefined);
    if (i % 2 === 1) s.once('connect', () => s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00])));
    hostile.push(s);
  }
  await sleep(1000);
  const after1s = fds();
  const open1s = hostile.filter((s) => !s.destroyed).length;
  await sleep(12_000);
  const after13s = fds();
  const open13s = hostile.filter((s) => !s.destroyed).length;
  for (const s of hostile) s.destroy();
  console.log(`hostile: node fds baseline ${baseline}, +1 s ${after1s}, +13 s ${after13s}; our sockets still open: +1 s ${open1s}/400, +13 s ${open13s}/400`);

  // (2) 1 MiB SIGN frames from one logged-in connection.
  const cu = await connect(cluster, port);
  await cu.login('alice', 'cu-password');
  const ec = await cu.generateKeyPair('ec:p256', { label: 'flood' });
  cu.destroy();
  const tlsOpts = await clientTls(cluster);
  for (const reading of [true, false]) {
    const s: TLSSocket = tlsConnect({ host: '127.0.0.1', port, ...tlsOpts, minVersion: 'TLSv1.3', checkServerIdentity: () => undefined });
    await new Promise<void>((resolve, reject) => { s.once('secureConnect', resolve); s.once('error', reject); });
    s.on('error', () => undefined);
    s.write(encodeFrame(0, Op.LOGIN, FLAG_JSON, Buffer.from(JSON.stringify({ user: 'alice', password: 'cu-password' }))));
    if (!reading) await sleep(300); // the login answer arrives before we stop reading
    if (reading) s.on('data', () => undefined);
    else s.pause();
    const body = writeSign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data: Buffer.alloc(1024 * 1024 - 64, 7) });
    const before = rssMb();
    let peakSeen = before.rss;
    const sampler = setInterval(() => { peakSeen = Math.max(peakSeen, rssMb().rss); }, 50);
    const started = Date.now();
    let sent = 0;
    for (; sent < FRAMES && Date.now() - started < 30_000; sent++) {
      writeHeader(body, 0, body.length - HEADER_BYTES, sent + 1, Op.SIGN, 0);
      // The same buffer is rewritten each time: copy it into the write (the socket keeps a reference).
      if (!s.write(Buffer.from(body))) {
        const drained = await Promise.race([new Promise<boolean>((r) => s.once('drain', () => r(true))), sleep(5000).then(() => false)]);
        if (!drained) break; // the node stopped reading: that is the bound
      }
    }
    await sleep(500);
    clearInterval(sampler);
    const after = rssMb();
    s.destroy();
    console.log(`1 MiB P-256 sign frames (${reading ? 'client reads answers' : 'client never reads'}): sent ${sent} in ${Date.now() - started} ms; node RSS before ${before.rss} MB, peak seen ${Math.max(peakSeen, after.rss)} MB, after ${after.rss} MB, process peak (VmHWM) ${after.peak} MB`);
    await sleep(1000);
  }
} finally {
  await killChild(child);
  await cluster.cleanup();
}
