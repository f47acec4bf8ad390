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

/** Low scrypt cost so logins are fast in tests (production default is 2^14). */
export const TEST_SCRYPT_COST = 1024;

/** A port that was free a moment ago (for manifests, which need fixed ports). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
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
