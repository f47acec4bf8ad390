// The CPU a process spends each time a message wakes it, on this machine: the floor under any
// out-of-process signature (bench/FINDINGS.md, "Why issue 16's targets are out of reach"). A
// driver sends a message every 10 ms (as a handshake at a modest rate sends a sign request to an
// HSM) and reads the peer's CPU from /proc: a TCP echo in Python, the same in Node, and a
// simulated HSM node (unlimited profile) signing P-256, one and 16 signatures per wake-up.
// Run: node --import=tsx bench/wakeup.ts   (env BENCH_SECONDS per row, default 5; Linux only)
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const TICK_MS = 10;
const WARM = Number(process.env.BENCH_WARM ?? 5000);

/** user + system CPU ms of one process (USER_HZ = 100 ticks per second). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

interface Row { peer: string; perWakeup: number; wakeups: number; cpuUsPerWakeup: number; cpuUsPerMessage: number }

/**
 * Every TICK_MS for SECONDS (or back to back with `idle` false), `send` one batch and wait for its
 * answer; the peer's CPU per batch.
 */
async function drive(peer: string, pid: number, perWakeup: number, send: () => Promise<void>, idle = true): Promise<Row> {
  for (let i = 0; i < WARM; i++) await send(); // the peer's code paths reach their optimised tier
  const before = cpuMs(pid);
  let wakeups = 0;
  const end = Date.now() + SECONDS * 1000;
  while (Date.now() < end) {
    await send();
    wakeups++;
    if (idle) await new Promise((r) => setTimeout(r, TICK_MS));
  }
  const us = (cpuMs(pid) - before) * 1000;
  const row = { peer, perWakeup, wakeups, cpuUsPerWakeup: Math.round(us / wakeups), cpuUsPerMessage: Math.round(us / wakeups / perWakeup) };
  console.log(`${peer.padEnd(46)} ${String(perWakeup).padStart(3)} per batch  ${String(row.cpuUsPerWakeup).padStart(5)} µs CPU per batch, ${String(row.cpuUsPerMessage).padStart(4)} per message  (${wakeups} batches)`);
  return row;
}

/** An echo peer (a child that connects back to us and echoes every read). */
async function echoPeer(peer: string, argv: (port: number) => string[]): Promise<Row> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const [cmd, ...args] = argv(port) as [string, ...string[]];
  const child: ChildProcess = spawn(cmd, args, { stdio: 'ignore' });
  const [sock] = (await once(server, 'connection')) as [Socket];
  sock.setNoDelay(true);
  const msg = Buffer.alloc(64, 1);
  const send = async (): Promise<void> => {
    const got = once(sock, 'data');
    sock.write(msg);
    await got;
  };
  try {
    return await drive(peer, child.pid!, 1, send);
  } finally {
    sock.destroy();
    child.kill();
    server.close();
  }
}

const rows: Row[] = [];
rows.push(await echoPeer('python3 TCP echo', (port) => ['python3', '-c',
  `import socket\ns=socket.create_connection(('127.0.0.1',${port}))\nwhile True:\n d=s.recv(65536)\n if not d: break\n s.sendall(d)\n`]));
rows.push(await echoPeer('node net echo', (port) => [process.execPath, '-e',
  `const s=require('net').connect(${port},'127.0.0.1');s.setNoDelay(true);s.on('data',d=>s.write(d));s.on('error',()=>{})`]));

const dir = await mkdtemp(join(os.tmpdir(), 'hsmproxy-wakeup-'));
const cluster = await startEmbeddedCluster({ dir, hsms: 1, profile: 'unlimited' });
try {
  const pair = await cluster.client.generateKeyPair('ec:p256', { label: 'wakeup', sign: true, verify: true });
  const data = randomBytes(32);
  const pid = [...cluster.supervisor.pids().values()][0] as number;
  const signs = (n: number) => async (): Promise<void> => {
    await Promise.all(Array.from({ length: n }, () => cluster.client.sign({ keyId: pair.privateKey.keyId, mechanism: 'ecdsa-sha256', data })));
  };
  for (const n of [1, 16]) rows.push(await drive('simulated HSM node, P-256 signs', pid, n, signs(n)));
  // The same signs with no idle time between batches: the node never sleeps, caches stay warm.
  for (const n of [1, 16]) rows.push(await drive('simulated HSM node, P-256 signs, back to back', pid, n, signs(n), false));
} finally {
  await cluster.stop();
  await rm(dir, { recursive: true, force: true });
}

const loadavg = os.loadavg();
console.log(`load average ${loadavg.map((x) => x.toFixed(2)).join(' ')}, node ${process.version}, ${os.cpus().length} CPUs`);
writeFileSync(new URL('./results/wakeup.json', import.meta.url), `${JSON.stringify({ kind: 'wakeup', date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadavg, seconds: SECONDS, rows }, null, 2)}\n`);
