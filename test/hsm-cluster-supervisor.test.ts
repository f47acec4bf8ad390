// `hsmproxy cluster start` supervises every HSM of the manifest: the CLI commands work through
// the cluster (users and keys land on every HSM), a crashed HSM is restarted, SIGTERM stops all
// children cleanly, and a SIGKILLed supervisor leaves no HSM process behind.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliEntry, repoRoot } from './helpers/cli.js';
import { cliInProcess, connect, tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';
import { Supervisor, type SupervisorEvent } from '../src/hsm/cluster/supervisor.js';

// Child processes and CLI spawns are slow on a loaded 2-core CI box: allow for it.
t.setTimeout(120_000);

function freePort(port = 0): Promise<number | undefined> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(undefined));
    s.listen(port, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

// A base port with `n` free ports after it (the manifest gives HSMs consecutive ports).
async function freeRange(n: number): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const base = await freePort();
    if (!base || base + n > 65535) continue;
    let ok = true;
    for (let k = 1; k < n && ok; k++) ok = (await freePort(base + k)) !== undefined;
    if (ok) return base;
  }
  throw new Error('no free port range');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  return cond();
}

interface Started { proc: ChildProcess; events: Array<{ event: string; hsm: string; pid?: number }>; pids(): Map<string, number> }

// Runs `cluster start --json` and collects its event lines.
function start(dir: string): Started {
  const proc = spawn(process.execPath, ['--import=tsx', cliEntry, 'cluster', 'start', '--dir', dir, '--json'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  const events: Started['events'] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        events.push(JSON.parse(line) as Started['events'][number]);
      } catch {
        // not an event line
      }
    }
  });
  return {
    proc, events,
    pids: () => {
      const m = new Map<string, number>();
      for (const e of events) {
        if (e.event === 'started' && e.pid) m.set(e.hsm, e.pid);
        if (e.event === 'exited' || e.event === 'stopped') m.delete(e.hsm);
      }
      return m;
    },
  };
}

t.test('cluster start runs, restarts and stops the HSMs; the CLI goes through the cluster', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-sup-'));
  const spawned: number[] = [];
  t.teardown(async () => {
    for (const p of spawned) if (alive(p)) process.kill(p, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });
  const base = await freeRange(3);
  // One-shot commands run in-process (same code, no spawn cost); `cluster start` and its HSMs are real processes.
  const init = await cliInProcess(['cluster', 'init', '--dir', dir, '--hsms', '3', '--base-port', String(base), '--json']);
  t.error(init.error);
  const { precoPassword } = JSON.parse(init.stdout) as { precoPassword: string };

  const run = start(dir);
  spawned.push(run.proc.pid!);
  t.ok(await until(() => run.pids().size === 3, 30_000), 'three HSM processes started');
  for (const p of run.pids().values()) spawned.push(p);

  const act = await cliInProcess(['cluster', 'activate', '--dir', dir], { HSMPROXY_PIN: `admin:${precoPassword}`, HSMPROXY_NEW_PASSWORD: 'co-password-1' });
  t.error(act.error);
  const mk = await cliInProcess(['user', 'create', '--dir', dir, '--name', 'alice'], { HSMPROXY_PIN: 'admin:co-password-1', HSMPROXY_NEW_PASSWORD: 'alice-password-1' });
  t.error(mk.error);
  const gen = await cliInProcess(['key', 'generate', '--dir', dir, '--type', 'ec:p256', '--label', 'web', '--json'], { HSMPROXY_PIN: 'alice:alice-password-1' });
  t.error(gen.error);

  const st = await cliInProcess(['cluster', 'status', '--dir', dir, '--json']);
  const status = JSON.parse(st.stdout) as { hsms: Array<{ id: string; up: boolean; inSync: boolean; users: number; keysToken: number }> };
  t.same(status.hsms.map((h) => [h.id, h.up, h.inSync, h.users, h.keysToken]), [
    // Users: the CO, alice and the appliance user 'sync' that activate creates for resync.
    ['hsm-1', true, true, 3, 2], ['hsm-2', true, true, 3, 2], ['hsm-3', true, true, 3, 2],
  ], 'the user and key made through the CLI are on every HSM, all in sync');

  const victim = run.pids().get('hsm-2')!;
  process.kill(victim, 'SIGKILL');
  t.ok(await until(() => (run.pids().get('hsm-2') ?? victim) !== victim, 20_000), 'the crashed HSM was restarted');
  t.ok(run.events.some((e) => e.event === 'restarting' && e.hsm === 'hsm-2'), 'with a restart event');
  const newPid = run.pids().get('hsm-2')!;
  spawned.push(newPid);

  const all = [...run.pids().values()];
  const exited = new Promise<number | null>((r) => run.proc.once('exit', (code) => r(code)));
  run.proc.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM stops cluster start cleanly');
  t.ok(await until(() => all.every((p) => !alive(p)), 10_000), 'and every HSM process with it');

  // A supervisor that is SIGKILLed sends its children nothing: they notice the IPC channel close.
  const again = start(dir);
  spawned.push(again.proc.pid!);
  t.ok(await until(() => again.pids().size === 3, 30_000), 'restarted the cluster');
  const orphans = [...again.pids().values()];
  spawned.push(...orphans);
  again.proc.kill('SIGKILL');
  t.ok(await until(() => orphans.every((p) => !alive(p)), 10_000), 'no HSM process outlives a SIGKILLed supervisor');
});

t.test('an HSM that keeps failing to start is retried with growing delays, one child at a time, and runs once it can', async (t) => {
  const c = await tempCluster({ hsms: 1 });
  t.teardown(() => c.cleanup());
  const events: SupervisorEvent[] = [];
  const sup = new Supervisor({ dir: c.dir, ephemeralPorts: true, watch: false, restartMinMs: 100, restartMaxMs: 800, scryptCost: TEST_SCRYPT_COST, onEvent: (e) => events.push(e) });
  await sup.start();
  t.teardown(() => sup.stop());
  const first = sup.pids().get('hsm-1')!;
  // Hold its data directory (a live PID in the lock file): every restart fails at once, as a broken store would.
  const lock = join(c.dir, c.manifest.hsms[0]!.dataDir, 'lock');
  await writeFile(lock, `${process.pid}\n`);
  process.kill(first, 'SIGKILL');
  const restarting = (): number[] => events.filter((e) => e.event === 'restarting').map((e) => (e as { inMs: number }).inMs);
  t.ok(await until(() => restarting().length >= 4, 30_000), `restarted again and again (${restarting().join(', ')} ms)`);
  t.same(restarting().slice(0, 4), [100, 200, 400, 800], 'one restart per failure, each delay double the last, up to the cap');
  // A child that reports its start error is retried at once and exits a moment later, so the
  // counts agree once that exit is in (the next retry is 800 ms away).
  const exits = (): number => events.filter((e) => e.event === 'exited').length;
  t.ok(await until(() => exits() === restarting().length, 5_000), `one child exited per restart scheduled (${exits()} exits, ${restarting().length} restarts)`);

  await rm(lock);
  const pid = await sup.waitRunning('hsm-1', 30_000);
  t.not(pid, first, 'once the directory is free the HSM runs again');
  const conn = await connect(c, sup.ports().get('hsm-1')!);
  t.equal((await conn.info()).hsmId, 'hsm-1', 'and answers');
  conn.destroy();
  t.equal([...sup.pids().keys()].length, 1, 'exactly one HSM process');
});
