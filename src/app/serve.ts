// `hsmproxy serve` as a library call: loads the config, opens the HSM side it names, makes the demo
// PKI and upstream for `demo: true`, and starts the proxy runtime in this process (workers: 1) or in
// N worker processes; records the admin URL for `cluster advise`. cli/ prints what it returns.
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { loadConfig, type Config } from '../config/index.js';
import { createRegistry } from '../metrics/index.js';
import { ensureDemoPki, type DemoPkiFiles } from '../pki/demo.js';
import { startDemoUpstream, type DemoUpstream } from '../proxy/index.js';
import { writeAdminRecord } from './admin-record.js';
import { UsageError } from './errors.js';
import { openHsmSide, type HsmSide } from './hsm-side.js';
import { startProxyRuntime, type ProxyRuntime } from './runtime.js';
import { startTicketKeys } from './ticket-keys.js';
import { scalingFor } from './scaling.js';
import { startWorkers, workerCount } from './workers/primary.js';

/** The repository (package) root: where config/hsmproxy.yaml ships. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the hsmproxy package root');
    dir = up;
  }
  return dir;
}

/** What `serve` started, for printing and for stopping. */
export interface Serving {
  config: Config;
  hsm: HsmSide;
  demo?: { pki: DemoPkiFiles; pkiCreated: boolean; upstream: DemoUpstream };
  /** Processes serving traffic: 1, or the number of node:cluster workers. */
  workers: number;
  listenerAddress(name: string): AddressInfo | undefined;
  adminAddress(): AddressInfo | undefined;
  /** What /readyz answers: in worker mode, every worker's own readiness. */
  readiness: ProxyRuntime['readiness'];
  stop(deadlineMs?: number): Promise<void>;
  reload(): Promise<void>;
}

/** On the simulated cluster, records the admin URL in its directory for `cluster advise --dir` (removed at stop). */
async function recordAdmin(
  hsm: HsmSide, addr: AddressInfo | undefined, cleanup: Array<() => Promise<void>>, log: Logger,
): Promise<void> {
  // A bundle is not where `cluster advise --dir` looks (and is mounted read-only in compose).
  if (!hsm.cluster || !hsm.dir || hsm.clientBundle || !addr) return;
  try {
    cleanup.push(await writeAdminRecord(hsm.dir, addr));
  } catch (err) {
    // A read-only cluster directory costs `cluster advise --dir` its latency figures, not the proxy.
    log.warn({ dir: hsm.dir, err: (err as Error).message }, 'could not record the admin URL in the cluster directory');
  }
}

/** The dev CA, localhost certificates (keys made on the HSM side) and demo upstream of `demo: true`. */
async function startDemo(config: Config, hsm: HsmSide): Promise<NonNullable<Serving['demo']>> {
  const certDir = dirname(resolve(config.listeners[0]!.certificates[0]!.cert));
  if (!hsm.backend) throw new UsageError('the default configuration needs a simulated cluster to make its demo keys on');
  const pki = await ensureDemoPki(hsm.engine, hsm.backend, certDir);
  const target = new URL(config.upstreams.demo!.targets[0]!);
  const upstream = await startDemoUpstream({ host: target.hostname, port: Number(target.port) });
  return { pki: pki.files, pkiCreated: pki.created, upstream };
}

/**
 * Starts the proxy. Without `configFile`, serves the embedded default (config/hsmproxy.yaml). The
 * demo PKI and upstream follow from the config (`demo: true`), not from how it was named: the
 * default passed explicitly, or a copy of it on other ports, is the demo too.
 */
export async function startServing(
  opts: { configFile?: string; log: Logger; logLevelFromConfig?: boolean },
): Promise<Serving> {
  const { log } = opts;
  const configFile = opts.configFile ?? join(packageRoot(), 'config', 'hsmproxy.yaml');
  // The demo's certificates are made on first start, so its files are checked only after that.
  const parsed = loadConfig(configFile, { checkFiles: false });
  const config = parsed.demo ? parsed : loadConfig(configFile, { checkFiles: true });
  // log.level applies unless --log-level or HSMPROXY_LOG_LEVEL said otherwise (it was ignored).
  if (opts.logLevelFromConfig) log.level = config.log.level;
  const hsm = await openHsmSide(config, log);
  const cleanup: Array<() => Promise<void>> = [() => hsm.stop()];
  try {
    let demo: Serving['demo'];
    if (config.demo) {
      demo = await startDemo(config, hsm);
      const upstream = demo.upstream;
      cleanup.push(() => upstream.close());
    }
    const count = workerCount(config);
    let runtime: ProxyRuntime;
    if (count > 1) {
      runtime = await startWorkers({ config, configFile, hsm, log, count });
    } else {
      // The scaling advisor follows the simulated cluster (and acts on it with hsm.autoscale).
      const tickets = await startTicketKeys(config.tickets, hsm, log);
      cleanup.push(async () => tickets.stop());
      const registry = createRegistry();
      const scaling = scalingFor(hsm, config.hsm.autoscale, registry, log);
      if (scaling) cleanup.push(() => scaling.stop());
      runtime = await startProxyRuntime({
        config, configFile, hsm, log, registry, ticketKeys: tickets.keys, ...(scaling ? { scaling } : {}),
      });
    }
    const started = runtime;
    await recordAdmin(hsm, started.adminAddress(), cleanup, log);
    return {
      get config() { return started.config; },
      hsm, ...(demo ? { demo } : {}), workers: count,
      listenerAddress: (name) => started.listenerAddress(name),
      adminAddress: () => started.adminAddress(),
      readiness: () => started.readiness(),
      async stop(deadlineMs) {
        await started.stop(deadlineMs);
        for (const c of cleanup.reverse()) await c();
      },
      reload: () => started.reload(),
    };
  } catch (err) {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
    throw err;
  }
}
