// Profiles three hot paths with node --cpu-prof and records the top self-time functions of each
// process in bench/results/profile.json: the full TLS handshake (hsmproxy process and HSM node
// process), the HSM round trip (cluster client process and HSM node process) and keep-alive
// proxying. Only samples taken while the load ran count (start-up is left out). The raw
// .cpuprofile files are kept under bench/results/profiles/ (git-ignored) for Chrome DevTools.
// Run: npm run bench:profile   (env BENCH_SECONDS per path, default 5)
import os from 'node:os';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProfileResult } from '../src/bench/summary.js';
import { topSelfTime } from './lib/cpuprofile.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, 'lib', `profile-target${extname(fileURLToPath(import.meta.url))}`);
const profiles = join(here, 'results', 'profiles');

const PATHS = [
  { mode: 'handshake', what: 'full TLS 1.3 handshakes, ECDSA P-256, key in a 1-HSM embedded cluster (unlimited), C client with 16 connections in flight', processes: ['hsmproxy process', 'HSM node process'] },
  { mode: 'hsm', what: 'HSM round trips: ECDSA P-256 signs through the cluster client, 64 in flight, 1 HSM (unlimited)', processes: ['client process', 'HSM node process'] },
  { mode: 'proxy', what: 'keep-alive HTTPS requests through the Proxy (offloading TLS listener), h2load 32 connections; upstream in its own process', processes: ['hsmproxy process'] },
] as const;

const runs: ProfileResult['runs'] = [];
rmSync(profiles, { recursive: true, force: true });
mkdirSync(profiles, { recursive: true });
writeFileSync(join(profiles, '.gitignore'), '# raw profiles: large, machine-specific\n*\n!.gitignore\n');
for (const p of PATHS) {
  const dir = join(profiles, p.mode);
  mkdirSync(dir, { recursive: true });
  const child = spawn(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, ...process.execArgv, target, p.mode, String(SECONDS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  await once(child, 'close');
  const window = JSON.parse(out.trim().split('\n').pop()!) as { fromUs: number; toUs: number; summary: string };
  // File names: CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; thread 0 is the main thread
  // (the others are tsx's loader thread). The first process is the one spawned here.
  const files = readdirSync(dir).filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f));
  const pidOf = (f: string): number => Number(/\.(\d+)\.0\.\d+\.cpuprofile$/.exec(f)![1]);
  const main = child.pid!;
  const groups: Array<[string, string[]]> = [[p.processes[0], files.filter((f) => pidOf(f) === main)]];
  if (p.processes[1]) groups.push([p.processes[1], files.filter((f) => pidOf(f) !== main)]);
  for (const [proc, list] of groups) {
    if (list.length === 0) continue;
    const r = topSelfTime(list.map((f) => join(dir, f)), 12, window);
    runs.push({ name: `${p.mode}: ${proc}`, what: `${p.what} — ${window.summary}`, ...r });
    console.log(`\n${p.mode} — ${proc} (${window.summary}), ${r.totalMs} ms busy:`);
    for (const e of r.top) console.log(`  ${e.selfPct.toFixed(1).padStart(5)}%  ${e.selfMs.toFixed(0).padStart(6)} ms  ${e.functionName || '(anonymous)'}  ${e.location}`);
  }
}
const result: ProfileResult = { kind: 'profile', date: new Date().toISOString(), loadavg: os.loadavg(), runs };
writeFileSync(join(here, 'results', 'profile.json'), `${JSON.stringify(result, null, 2)}\n`);
console.log(`\nwrote ${join(here, 'results', 'profile.json')}`);
