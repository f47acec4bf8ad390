// Runs one HSM of a cluster manifest as "the appliance": opens its device store with the
// cluster's masking key and capacity profile, serves it on its mTLS port (refusing the client
// certificates the cluster's register DIR/pki/clients.json marks revoked), logs JSON lines, and
// on SIGTERM/SIGINT stops accepting, ends sessions and closes the store.
import { readFile } from 'node:fs/promises';
import { Hsm, type CapacityProfile } from '../device/index.js';
import { HsmAppliance, type ApplianceLimits, type ApplianceLog } from '../node.js';
import { CLIENT_REGISTER } from './clients.js';
import { clusterPath, findHsm, readManifest } from './manifest.js';

/** Options of `startNode`. */
export interface StartNodeOptions {
  /** The cluster directory (holds cluster.json). */
  dir: string;
  hsmId?: string;
  /** Overrides the manifest's port (0 = ephemeral; tests). */
  port?: number;
  log?: ApplianceLog;
  scryptCost?: number;
  /** Overrides the manifest's capacity profile (tests and benchmarks with custom rates). */
  capacity?: CapacityProfile;
  /** What peers may hold on the appliance (defaults: DEFAULT_APPLIANCE_LIMITS). */
  limits?: Partial<ApplianceLimits>;
  /** How often open connections are checked against a changed client register (default 1,000 ms). */
  revocationCheckMs?: number;
}

/** A running node: its appliance, its device, and how to stop both. */
export interface RunningNode {
  hsmId: string;
  port: number;
  appliance: HsmAppliance;
  device: Hsm;
  stop(): Promise<void>;
}

/** One JSON line per event on stdout, for `hsm serve` and node processes. */
export function jsonLineLog(hsmId: string): ApplianceLog {
  return (level, msg, fields) => {
    process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level, hsm: hsmId, msg, ...fields }) + '\n');
  };
}

/** Opens the HSM `hsmId` of the cluster in `dir` and serves it. */
export async function startNode(opts: StartNodeOptions): Promise<RunningNode> {
  const manifest = await readManifest(opts.dir);
  const h = findHsm(manifest, opts.hsmId);
  const log = opts.log ?? jsonLineLog(h.id);
  const [key, cert, ca, clusterKey] = await Promise.all([
    readFile(clusterPath(opts.dir, h.key)),
    readFile(clusterPath(opts.dir, h.cert)),
    readFile(clusterPath(opts.dir, manifest.caCert)),
    readFile(clusterPath(opts.dir, manifest.maskingKey)),
  ]);
  const device = await Hsm.open({
    dir: clusterPath(opts.dir, h.dataDir), hsmId: h.id, clusterKey, capacity: opts.capacity ?? h.profile,
    ...(opts.scryptCost !== undefined ? { scryptCost: opts.scryptCost } : {}),
  });
  let appliance: HsmAppliance;
  try {
    appliance = await HsmAppliance.listen({
      ...opts.limits, device, hsmId: h.id, host: h.address, port: opts.port ?? h.port, key, cert, ca, log,
      revokedClients: clusterPath(opts.dir, CLIENT_REGISTER),
      ...(opts.revocationCheckMs !== undefined ? { revocationCheckMs: opts.revocationCheckMs } : {}),
    });
  } catch (err) {
    await device.close();
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE') {
      throw Object.assign(new Error(`port ${opts.port ?? h.port} on ${h.address} is in use: is HSM ${h.id} already running?`), { code: 'HSM_ERR_PORT_IN_USE' });
    }
    throw err;
  }
  log('info', 'HSM listening', { address: h.address, port: appliance.port, profile: h.profile, clusterId: manifest.clusterId });
  let stopping: Promise<void> | undefined;
  return {
    hsmId: h.id, port: appliance.port, appliance, device,
    stop: () => {
      stopping ??= (async () => {
        await appliance.close();
        await device.close();
        log('info', 'HSM stopped');
      })();
      return stopping;
    },
  };
}

/** Serves in the foreground until SIGTERM/SIGINT, then stops cleanly. */
export async function serveForeground(opts: StartNodeOptions): Promise<void> {
  const node = await startNode(opts);
  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      (opts.log ?? jsonLineLog(node.hsmId))('info', `received ${sig}, stopping`);
      node.stop().then(resolve, resolve);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
