// Test fixtures for the HSM appliance: a throwaway cluster directory, a node in-process or as a
// child process (killed by PID), and logged-in connections. Loopback only.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HsmConnection } from '../../src/hsm/client/connection.js';
import { initCluster, type InitClusterResult } from '../../src/hsm/cluster/init.js';
import { clusterPath, type ManifestProfile } from '../../src/hsm/cluster/manifest.js';
import { startNode, type RunningNode, type StartNodeOptions } from '../../src/hsm/cluster/run-node.js';

/** Low scrypt cost so logins are fast in tests (production default is 2^14). */
export const TEST_SCRYPT_COST = 1024;

/**
 * The first of 4 consecutive ports that were free a moment ago (for manifests, which need fixed
 * ports: `--base-port P` puts HSM i on P + i - 1). Chosen below the kernel's ephemeral range
 * (32768-60999 on Linux), so a port an HSM frees while it restarts is not handed to some other
 * test's outgoing connection or `listen(0)` in the meantime (seen: "port … is in use" on restart).
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 12_000);
    if ((await Promise.all([0, 1, 2, 3].map((i) => canListen(base + i)))).every(Boolean)) return base;
  }
  throw new Error('no 4 consecutive free ports found in 20000-32000');
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A fresh cluster in a temp dir; `cleanup` removes it. */
export async function tempCluster(opts: { profile?: ManifestProfile; hsms?: number; scryptCost?: number } = {}): Promise<InitClusterResult & { cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-test-'));
  const r = await initCluster({ dir, basePort: await freePort(), scryptCost: opts.scryptCost ?? TEST_SCRYPT_COST, ...(opts.profile ? { profile: opts.profile } : {}), ...(opts.hsms ? { hsms: opts.hsms } : {}) });
  return { ...r, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** The client TLS material of a cluster. */
export async function clientTls(r: InitClusterResult): Promise<{ ca: Buffer; cert: Buffer; key: Buffer }> {
  const m = r.manifest;
  const [ca, cert, key] = await Promise.all([m.caCert, m.clientCert, m.clientKey].map((p) => readFile(clusterPath(r.dir, p))));
  return { ca: ca as Buffer, cert: cert as Buffer, key: key as Buffer };
}

/** Connects to a node of the cluster on `port`. */
export async function connect(r: InitClusterResult, port: number, hsmId = 'hsm-1'): Promise<HsmConnection> {
  return HsmConnection.connect({ hsmId, host: '127.0.0.1', port, ...(await clientTls(r)) });
}

/**
 * One in-process HSM of a fresh cluster, activated, with CU alice logged in; `stop` ends all three.
 * `capacity` is the node's capacity profile (slow ones make requests that outlive deadlines).
 */
export async function activatedNodeWithCu(capacity?: StartNodeOptions['capacity']): Promise<{
  cluster: InitClusterResult; node: RunningNode; cu: HsmConnection; stop(): Promise<void>;
}> {
  const cluster = await tempCluster();
  const node = await startNode({ dir: cluster.dir, port: 0, scryptCost: TEST_SCRYPT_COST, log: () => undefined, capacity });
  await activate(cluster, node.port);
  const cu = await connect(cluster, node.port);
  await cu.login('alice', 'cu-password');
  return {
    cluster, node, cu,
    stop: async () => {
      cu.destroy();
      await node.stop();
      await cluster.cleanup();
    },
  };
}

/** Activates the cluster's HSM on `port` (PRECO → CO) and creates CU `cu` (password `cu-password`). */
export async function activate(r: InitClusterResult, port: number, cu = 'alice'): Promise<void> {
  const c = await connect(r, port);
  try {
    await c.login(r.precoUser, r.precoPassword);
    await c.changePassword('co-password');
    await c.createUser(cu, 'CU', 'cu-password');
  } finally {
    c.destroy();
  }
}

const nodeMain = fileURLToPath(new URL('../../src/hsm/cluster/node-main.ts', import.meta.url));

/** Starts `hsm-1` of the cluster as a child process; resolves once it logs that it listens. */
export function spawnNode(dir: string, hsmId = 'hsm-1'): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, nodeMain, '--dir', dir, '--hsm', hsmId], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`node did not start: ${out}`)); }, 20_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('HSM listening')) { clearTimeout(timer); resolve(child); }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`node exited (${code}): ${out}`)); });
  });
}

/** Kills a child we spawned, by PID, and waits for it to exit. */
export async function killChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (child.pid !== undefined) process.kill(child.pid, signal);
  await exited;
}

/**
 * Runs `hsmproxy ...args` inside the test process (same code as the binary, no spawn cost), with
 * `vars` set in the environment for the duration and stdout captured. Errors are returned, not
 * thrown; spawned runs (runCli) are for what only a real process shows: exit codes and stderr.
 */
export async function cliInProcess(args: string[], vars: Record<string, string | undefined> = {}): Promise<{ stdout: string; error?: Error & { code?: string } }> {
  const { buildProgram } = await import('../../src/cli/main.js');
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  const write = process.stdout.write;
  let stdout = '';
  process.stdout.write = ((chunk: string | Uint8Array) => { stdout += String(chunk); return true; }) as typeof process.stdout.write;
  try {
    await (await buildProgram()).parseAsync(['node', 'hsmproxy', ...args]);
    return { stdout };
  } catch (error) {
    return { stdout, error: error as Error & { code?: string } };
  } finally {
    process.stdout.write = write;
    for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  }
}
