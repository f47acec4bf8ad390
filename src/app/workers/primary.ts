// `serve` with `workers: N` (N > 1), the primary's side: it keeps the HSM side it opened (an
// embedded cluster runs here), the scaling advisor (fed the workers' HSM and handshake events) and
// the admin server, whose /metrics sums every worker's registry and whose /readyz asks every
// worker for its own readiness. Session tickets: the primary makes each epoch's ticket key from
// fresh randomness and sends it to every worker shortly before the epoch begins, so any worker
// resumes any ticket, and no secret outlives its epoch (a leaked key opens one epoch's tickets).
import { channel } from 'node:diagnostics_channel';
import { availableParallelism } from 'node:os';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { loadConfig, type Config } from '../../config/index.js';
import { clusterSource, createRegistry, withPrimaryFamilies } from '../../metrics/index.js';
import { AdminServer, type ReadinessReport } from '../../proxy/index.js';
import type { HsmSide } from '../hsm-side.js';
import type { ProxyRuntime } from '../runtime.js';
import { scalingFor } from '../scaling.js';
import { startTicketKeys } from '../ticket-keys.js';
import { WorkerPool } from './pool.js';
import { FORWARDED, type WorkerSettings } from './protocol.js';

// The worker entry next to this file, with this file's extension (.ts under tsx, .js from dist/).
const workerEntry = fileURLToPath(new URL(`./entry${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

/** The number of serving processes `workers:` asks for ('auto': one per CPU the process may use). */
export function workerCount(config: Config): number {
  return config.workers === 'auto' ? availableParallelism() : config.workers;
}

/** The running workers, seen from the primary as one proxy runtime. */
export interface WorkerRuntime extends ProxyRuntime {
  workers: number;
}

/** Starts `count` workers and the primary's admin server; the caller owns `hsm`. */
export async function startWorkers(
  opts: { config: Config; configFile: string; hsm: HsmSide; log: Logger; count: number },
): Promise<WorkerRuntime> {
  const { config, log, hsm, count } = opts;
  // The primary seals no tickets: it only makes (or derives) each epoch's key and hands it out.
  // Keys derived later (the next epoch's) go to the workers as soon as they are installed.
  let sendKeys = (): void => undefined;
  const tickets = await startTicketKeys(config.tickets, hsm, log, () => sendKeys());
  const ticketKeys = tickets.keys;
  // The scaling advisor runs here on the workers' forwarded events; its gauges join their metrics.
  const registry = createRegistry();
  const scaling = scalingFor(hsm, config.hsm.autoscale, registry, log);
  const pool = new WorkerPool<WorkerSettings>({
    count,
    exec: workerEntry,
    settings: () => ({
      configFile: opts.configFile, ticketKeys: ticketKeys.export(), ticketRotateEveryMs: config.tickets.rotateEveryMs,
      logLevel: log.level,
      forwardEvents: scaling !== undefined,
    }),
    onWorkerEvents: (events) => {
      for (const [name, event] of events) if (FORWARDED.includes(name)) channel(name).publish(event);
    },
    onEvent: (e) => {
      if (e.event === 'exit') log.error(e, 'worker exited; restarting it');
      else if (e.event === 'failed') log.error(e, 'worker failed to start');
      else log.debug(e, 'worker ready');
    },
  });
  sendKeys = () => pool.refreshSettings();
  try {
    await pool.start();
  } catch (err) {
    tickets.stop();
    await scaling?.stop();
    throw err;
  }
  let shareTimer: NodeJS.Timeout | undefined;
  const shareNextKey = () => {
    // +1 ms: a timer may fire a hair early, before export() includes the next key.
    shareTimer = setTimeout(() => {
      pool.refreshSettings();
      shareNextKey();
    }, ticketKeys.msUntilNextShare() + 1);
    shareTimer.unref();
  };
  shareNextKey();
  let stopping = false;
  // Ready as a single process is: not draining, and every worker running with its keys' HSM in rotation.
  const readiness = async (): Promise<ReadinessReport> => {
    const reasons = stopping ? ['proxy is draining'] : [];
    const { ready, count: want } = pool.status;
    if (ready < want) reasons.push(`${ready} of ${want} workers are serving`);
    for (const { worker, report } of await pool.readiness()) reasons.push(...report.reasons.map((r) => `worker ${worker}: ${r}`));
    return { ready: reasons.length === 0, reasons };
  };
  const metrics = scaling ? withPrimaryFamilies(clusterSource(), registry, 'hsmproxy_cluster_') : clusterSource();
  const admin = new AdminServer(metrics, readiness, scaling ? () => scaling.service.report() : undefined);
  try {
    await admin.listen(config.admin.port, config.admin.address);
  } catch (err) {
    clearTimeout(shareTimer);
    tickets.stop();
    await pool.stop(0);
    await scaling?.stop();
    throw err;
  }
  log.info({ workers: count, admin: admin.address() }, 'proxy started');
  let current = config;
  return {
    get config() { return current; },
    workers: count,
    listenerAddress: (name) => pool.listenerAddress(name),
    adminAddress: () => admin.address(),
    readiness,
    async stop(deadlineMs) {
      stopping = true;
      clearTimeout(shareTimer);
      tickets.stop();
      await pool.stop(deadlineMs ?? current.timeouts.shutdownMs);
      await admin.close();
      await scaling?.stop();
    },
    async reload() {
      // Checked here first, so a bad file is refused once rather than by every worker.
      const next = loadConfig(opts.configFile, { checkFiles: true });
      if (workerCount(next) !== count) log.warn('the number of workers changed; it takes effect at the next restart');
      await pool.reload();
      current = next;
    },
  };
}
