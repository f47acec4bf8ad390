// Full TLS 1.3 handshakes: CPU per handshake (user and system, proxy and HSM processes) and
// handshakes/s of hsmproxy builds side by side with nginx, alternated in rounds so a busy shared
// machine disturbs them alike. Each build runs in its own process (bench/lib/tls-ab-server.ts)
// with the key in an embedded cluster of BENCH_HSMS `unlimited` HSMs; the client is
// bench/lib/tls-load.c. Compare two commits by giving two worktrees.
// Run: node --import=tsx bench/tls-ab.ts   (env BENCH_BUILDS=dirA,dirB, default this tree;
// BENCH_KEYS, default p256,rsa2048; BENCH_ROUNDS, default 3; BENCH_SECONDS per point, default 4;
// BENCH_THREADS, default 16; BENCH_WARM, handshakes of warm-up per server, default 4000 (at most
// BENCH_WARM_LIMIT_S, default 30 s); BENCH_HSMS, default 2, 0 = soft key in the proxy process). A build
// written dir@flag,flag runs its server process with those node flags (e.g. .@--max-semi-space-size=32).
import os from 'node:os';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTestCerts, type TestCert } from '../test/helpers/tls-certs.js';
import { buildTlsLoad, type TlsLoadClient } from './lib/tls-load.js';
import { findNginx, startNginx } from './lib/nginx.js';
import { childrenOf } from './lib/procs.js';

const here = dirname(fileURLToPath(import.meta.url));
const BUILDS = (process.env.BENCH_BUILDS ?? resolve(here, '..')).split(/,(?!-)/).map((b) => {
  const [dir, flags] = b.split('@') as [string, string | undefined];
  return resolve(dir) + (flags ? `@${flags}` : '');
});
const KEYS = (process.env.BENCH_KEYS ?? 'p256,rsa2048').split(',') as Array<'p256' | 'rsa2048'>;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const THREADS = Number(process.env.BENCH_THREADS ?? 16);
const HSMS = Number(process.env.BENCH_HSMS ?? 2);
const WARM = Number(process.env.BENCH_WARM ?? 4000);
const WARM_LIMIT_S = Number(process.env.BENCH_WARM_LIMIT_S ?? 30);

interface Cpu { userMs: number; sysMs: number; hsmMs: number }
interface Row { who: string; key: string; perSecond: number; p50: number; userMs: number; sysMs: number; hsmMs: number }

/** user and system CPU ms of a process and its direct children, from /proc (USER_HZ ticks). */
function procCpu(pid: number): { userMs: number; sysMs: number } {
  let userMs = 0;
  let sysMs = 0;
  for (const p of [pid, ...childrenOf(pid)]) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      userMs += Number(f[11]) * 10;
      sysMs += Number(f[12]) * 10;
    } catch { /* gone */ }
  }
  return { userMs, sysMs };
}

interface Target { who: string; key: 'p256' | 'rsa2048'; port: number; cpu: () => Promise<Cpu>; close: () => Promise<void> }

async function measure(client: TlsLoadClient, t: Target): Promise<Row> {
  const c0 = await t.cpu();
  const r = await client.run(t.port, SECONDS, THREADS, 'full');
  const c1 = await t.cpu();
  const n = Math.max(1, r.connections);
  const per = (a: number, b: number): number => Math.round(((b - a) / n) * 1000) / 1000;
  const row = { who: t.who, key: t.key, perSecond: Math.round(r.perSecond), p50: r.latencyMs.p50, userMs: per(c0.userMs, c1.userMs), sysMs: per(c0.sysMs, c1.sysMs), hsmMs: per(c0.hsmMs, c1.hsmMs) };
  const total = row.userMs + row.sysMs + row.hsmMs;
  console.log(`${t.who.padEnd(28)} ${t.key.padEnd(8)} ${String(row.perSecond).padStart(6)}/s p50 ${row.p50.toFixed(2)} ms  CPU/handshake ${total.toFixed(3)} ms (user ${row.userMs.toFixed(3)} sys ${row.sysMs.toFixed(3)} HSMs ${row.hsmMs.toFixed(3)})${r.errors ? `  ${r.errors} errors` : ''}  load ${os.loadavg()[0]!.toFixed(2)}`);
  return row;
}

/**
 * Runs handshakes until WARM of them are done (or WARM_LIMIT_S passed): V8 optimises the
 * handshake path only after a few thousand handshakes, and until then a handshake costs 2-3x
 * the steady state. nginx gets the same warm-up.
 */
async function warm(client: TlsLoadClient, t: Target): Promise<void> {
  const t0 = Date.now();
  let done = 0;
  while (done < WARM && Date.now() - t0 < WARM_LIMIT_S * 1000) done += (await client.run(t.port, 2, THREADS, 'full')).connections;
  console.log(`warmed ${t.who} ${t.key}: ${done} handshakes in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

async function startBuild(root: string, key: 'p256' | 'rsa2048', cert: TestCert): Promise<Target> {
  const [dir, flags] = root.split('@') as [string, string | undefined];
  const execArgv = ['--import=tsx', ...(flags ? flags.split(',') : [])];
  const child = fork(join(here, 'lib', 'tls-ab-server.ts'), [dir, cert.certFile, cert.keyFile, String(HSMS)], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const [first] = await once(child, 'message') as [{ port: number }];
  const letter = BUILDS.length > 1 ? `${String.fromCharCode(65 + BUILDS.indexOf(root))} ` : '';
  return {
    who: `hsmproxy ${letter}${root.split('/').pop()}`, key, port: first.port,
    cpu: async () => {
      child.send('cpu');
      const [m] = await once(child, 'message') as [Cpu];
      return m;
    },
    close: async () => {
      child.send('close');
      await Promise.race([once(child, 'exit'), new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

const nginx = findNginx();
const client = buildTlsLoad();
const certs = makeTestCerts(['localhost']);
const rows: Row[] = [];
const targets: Target[] = [];
try {
  console.log(`bench/tls-ab: ${ROUNDS} rounds, ${SECONDS} s per point after ${WARM} handshakes of warm-up, ${THREADS} connections in flight, key in ${HSMS} HSMs, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  for (const key of KEYS) {
    const cert = key === 'p256' ? certs.ec : certs.rsa;
    if ('bin' in nginx) {
      const ng = await startNginx(nginx.bin, { certFile: cert.certFile, keyFile: cert.keyFile });
      targets.push({ who: 'nginx', key, port: ng.port, cpu: async () => ({ ...procCpu(ng.pid), hsmMs: 0 }), close: () => ng.close() });
    }
    for (const root of BUILDS) targets.push(await startBuild(root, key, cert));
  }
  for (const t of targets) await warm(client, t);
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate the order of the builds from round to round; nginx first for each key.
    for (const key of KEYS) {
      const ours = targets.filter((t) => t.key === key && t.who !== 'nginx');
      const order = [...targets.filter((t) => t.key === key && t.who === 'nginx'), ...(round % 2 === 0 ? ours : ours.reverse())];
      for (const t of order) rows.push(await measure(client, t));
    }
  }
  console.log('\nmedians (CPU ratio = ours ÷ nginx, all processes):');
  for (const key of KEYS) {
    const med = (who: string, f: (r: Row) => number): number => {
      const v = rows.filter((r) => r.who === who && r.key === key).map(f).sort((a, b) => a - b);
      return v[v.length >> 1] ?? NaN;
    };
    const cpuOf = (r: Row): number => r.userMs + r.sysMs + r.hsmMs;
    const ng = { rate: med('nginx', (r) => r.perSecond), cpu: med('nginx', cpuOf) };
    for (const who of [...new Set(rows.filter((r) => r.key === key && r.who !== 'nginx').map((r) => r.who))]) {
      const rate = med(who, (r) => r.perSecond);
      const cpu = med(who, cpuOf);
      console.log(`${who.padEnd(28)} ${key.padEnd(8)} ${rate}/s (${(rate / ng.rate).toFixed(2)}x nginx ${ng.rate}/s)  CPU ${cpu.toFixed(3)} ms = proxy ${med(who, (r) => r.userMs + r.sysMs).toFixed(3)} + HSMs ${med(who, (r) => r.hsmMs).toFixed(3)} (${(cpu / ng.cpu).toFixed(2)}x nginx ${ng.cpu.toFixed(3)})`);
    }
  }
  console.log(`load average after: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
} finally {
  for (const t of targets) await t.close();
  certs.cleanup();
  client.cleanup();
}

