// `serve` with `workers: N` (N > 1): the primary keeps the HSM side it opened (an embedded cluster
// runs here), the demo upstream, the scaling advisor (fed the workers' HSM and handshake events)
// and the admin server, whose /metrics sums every worker's registry; N worker processes (serve-worker entry) each open their own cluster client and Proxy
// on the shared listening ports. Session tickets: the primary makes each epoch's ticket key from
// fresh randomness and sends it to every worker shortly before the epoch begins, so any worker
// resumes any ticket, and no secret outlives its epoch (a leaked key opens one epoch's tickets).
import { channel, subscribe, unsubscribe } from 'node:diagnostics_channel';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino, { type Logger } from 'pino';
import { loadConfig, type Config } from '../config/index.js';
import { CHANNELS, clusterSource, createRegistry, defineMetrics, exposeToPrimary, withPrimaryFamilies } from '../metrics/index.js';
import { AdminServer, Proxy, WorkerPool, type WorkerCommand, type WorkerReport } from '../proxy/index.js';
import { offloadListenerFactory } from '../proxy/offload-listener.js';
import { TicketKeys, type SharedTicketKey } from '../tls/index.js';
import { startScaling } from './scaling-runtime.js';
import { hsmReadiness, openHsmSide, publishHsmState, workerCount, type HsmSide, type Serving } from './serve-runtime.js';

/** What the primary sends each worker (again when ticket keys change). `forwardEvents`: the primary runs the scaling advisor. */
interface WorkerSettings { configFile: string; ticketKeys: SharedTicketKey[]; logLevel: string; forwardEvents: boolean }

// What the scaling advisor reads; forwarded from the workers, where the signatures happen.
const FORWARDED: readonly string[] = [CHANNELS.hsmRequest, CHANNELS.tlsHandshake];

/** Sends this worker's FORWARDED events to the primary in batches; returns the function that stops. */
function forwardEvents(): () => void {
  let batch: Array<[string, unknown]> = [];
  const flush = () => {
    if (batch.length > 0 && process.connected) report({ hsmproxy: 'events', events: batch });
    batch = [];
  };
  const timer = setInterval(flush, 250);
  timer.unref();
  const subs = FORWARDED.map((name) => {
    const fn = (m: unknown) => {
      batch.push([name, m]);
      if (batch.length >= 1000) flush();
    };
    subscribe(name, fn);
    return [name, fn] as const;
  });
  return () => {
    clearInterval(timer);
    flush();
    for (const [name, fn] of subs) unsubscribe(name, fn);
  };
}

// The worker entry next to this file, with this file's extension (.ts under tsx, .js from dist/).
const workerEntry = fileURLToPath(new URL(`./serve-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

/** Starts the workers and the primary's admin server; the caller owns `hsm`. */
export async function startWorkers(opts: { config: Config; configFile: string; hsm: HsmSide; log: Logger }): Promise<Omit<Serving, 'hsm' | 'demo'>> {
  const { config, log, hsm } = opts;
  const count = workerCount(config);
  // The scaling advisor runs here on the workers' forwarded events; its gauges join their metrics.
  const registry = createRegistry();
  const scaling = hsm.cluster && hsm.dir
    ? startScaling({ client: hsm.cluster, dir: hsm.dir, ...(hsm.supervisor ? { supervisor: hsm.supervisor } : {}), autoscale: config.hsm.autoscale, metrics: defineMetrics(registry), log })
    : undefined;
  // The primary seals no tickets: it only makes each epoch's key and hands it out.
  const ticketKeys = new TicketKeys();
  const pool = new WorkerPool<WorkerSettings>({
    count,
    exec: workerEntry,
    settings: () => ({ configFile: opts.configFile, ticketKeys: ticketKeys.export(), logLevel: log.level, forwardEvents: scaling !== undefined }),
    onWorkerEvents: (events) => {
      for (const [name, event] of events) if (FORWARDED.includes(name)) channel(name).publish(event);
    },
    onEvent: (e) => {
      if (e.event === 'exit') log.error(e, 'worker exited; restarting it');
      else if (e.event === 'failed') log.error(e, 'worker failed to start');
      else log.debug(e, 'worker ready');
    },
  });
  try {
    await pool.start();
  } catch (err) {
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
  const metrics = scaling ? withPrimaryFamilies(clusterSource(), registry, 'hsmproxy_cluster_') : clusterSource();
  const admin = new AdminServer(metrics, () => {
    const hsm = hsmReadiness(opts.hsm);
    const { ready, count: want } = pool.status;
    const reasons = [...hsm.reasons, ...(ready < want ? [`${ready} of ${want} workers are serving`] : [])];
    return { ready: reasons.length === 0, reasons };
  }, scaling ? () => scaling.service.report() : undefined);
  try {
    await admin.listen(config.admin.port, config.admin.address);
  } catch (err) {
    clearTimeout(shareTimer);
    await pool.stop(0);
    await scaling?.stop();
    throw err;
  }
  log.info({ workers: count, admin: admin.address() }, 'proxy started');
  let current = config;
  return {
    config, workers: count,
    listenerAddress: (name) => pool.listenerAddress(name),
    adminAddress: () => admin.address(),
    async stop(deadlineMs) {
      clearTimeout(shareTimer);
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

function report(m: WorkerReport): void {
  process.send?.(m);
}

/** The body of one worker process: waits for its settings, serves until told to stop. */
export async function runWorker(): Promise<void> {
  const settings = await new Promise<WorkerSettings>((resolve) => {
    const first = (m: WorkerCommand<WorkerSettings>) => {
      if (m?.hsmproxy !== 'settings') return;
      process.off('message', first);
      resolve(m.settings);
    };
    process.on('message', first);
    report({ hsmproxy: 'hello' });
  });
  // Listening from here on, so a key sent while the worker starts is not missed.
  const ticketKeys = new TicketKeys();
  ticketKeys.install(settings.ticketKeys);
  process.on('message', (m: WorkerCommand<WorkerSettings>) => {
    if (m?.hsmproxy === 'settings') ticketKeys.install(m.settings.ticketKeys);
  });
  const log = pino({ level: settings.logLevel }).child({ worker: Number(process.env.HSMPROXY_WORKER ?? 0) });
  // The primary coordinates: a terminal's Ctrl-C or hangup reaches the whole process group.
  process.on('SIGINT', () => undefined);
  process.on('SIGHUP', () => undefined);
  const stopForwarding = settings.forwardEvents ? forwardEvents() : undefined;
  let proxy: Proxy;
  let hsm: HsmSide;
  let config: Config;
  try {
    config = loadConfig(settings.configFile, { checkFiles: true });
    hsm = await openHsmSide(config, log, { attach: true });
    const registry = createRegistry();
    exposeToPrimary(registry);
    proxy = new Proxy({
      config, logger: log, registry, admin: false,
      tlsListenerFactory: offloadListenerFactory({
        engine: hsm.engine, signTimeoutMs: config.hsm.signing.timeoutMs,
        ticketKeys,
      }),
    });
    await proxy.start();
    publishHsmState(hsm);
  } catch (err) {
    report({ hsmproxy: 'failed', message: (err as Error).message });
    process.exit(1);
  }
  const listeners = Object.fromEntries(config.listeners.flatMap((l) => {
    const a = proxy.listenerAddress(l.name);
    return a ? [[l.name, a]] : [];
  }));
  let stopping = false;
  const stop = async (deadlineMs: number) => {
    if (stopping) return;
    stopping = true;
    await proxy.shutdown(deadlineMs);
    stopForwarding?.();
    await hsm.stop().catch(() => undefined);
    process.exit(0);
  };
  process.on('message', (m: WorkerCommand<WorkerSettings>) => {
    if (m?.hsmproxy === 'stop') void stop(m.deadlineMs);
    if (m?.hsmproxy === 'reload') {
      Promise.resolve().then(() => proxy.reload(loadConfig(settings.configFile, { checkFiles: true }))).then(
        () => report({ hsmproxy: 'reloaded' }),
        (err: unknown) => report({ hsmproxy: 'reload-failed', message: (err as Error).message }),
      );
    }
  });
  // The primary died: nobody will ask us to stop, so drain and go.
  process.on('disconnect', () => void stop(config.timeouts.shutdownMs));
  process.on('SIGTERM', () => void stop(config.timeouts.shutdownMs));
  report({ hsmproxy: 'ready', listeners });
}
