// One worker process of `serve` with `workers: N`: it asks the primary for its settings, opens its
// own HSM side (a client of the primary's cluster) and builds the same proxy runtime as a single
// process does, then serves on the ports node:cluster shares until the primary says stop.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import pino from 'pino';
import { loadConfig } from '../../config/index.js';
import { createRegistry } from '../../metrics/index.js';
import { TicketKeys } from '../../tls/index.js';
import { openHsmSide, type HsmSide } from '../hsm-side.js';
import { startProxyRuntime, type ProxyRuntime } from '../runtime.js';
import { FORWARDED, type WorkerCommand, type WorkerReport, type WorkerSettings } from './protocol.js';

function report(m: WorkerReport): void {
  process.send?.(m);
}

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
  const ticketKeys = new TicketKeys({ rotateEveryMs: settings.ticketRotateEveryMs });
  ticketKeys.install(settings.ticketKeys);
  process.on('message', (m: WorkerCommand<WorkerSettings>) => {
    if (m?.hsmproxy === 'settings') ticketKeys.install(m.settings.ticketKeys);
  });
  const log = pino({ level: settings.logLevel }).child({ worker: Number(process.env.HSMPROXY_WORKER ?? 0) });
  // The primary coordinates: a terminal's Ctrl-C or hangup reaches the whole process group.
  process.on('SIGINT', () => undefined);
  process.on('SIGHUP', () => undefined);
  const stopForwarding = settings.forwardEvents ? forwardEvents() : undefined;
  let runtime: ProxyRuntime;
  let hsm: HsmSide | undefined;
  try {
    const config = loadConfig(settings.configFile, { checkFiles: true });
    hsm = await openHsmSide(config, log, { attach: true });
    runtime = await startProxyRuntime({
      config, configFile: settings.configFile, hsm, log, registry: createRegistry(), worker: { ticketKeys },
    });
  } catch (err) {
    report({ hsmproxy: 'failed', message: (err as Error).message });
    await hsm?.stop().catch(() => undefined);
    process.exit(1);
  }
  const listeners = Object.fromEntries(runtime.config.listeners.flatMap((l) => {
    const a = runtime.listenerAddress(l.name);
    return a ? [[l.name, a]] : [];
  }));
  let stopping = false;
  const stop = async (deadlineMs: number) => {
    if (stopping) return;
    stopping = true;
    await runtime.stop(deadlineMs);
    stopForwarding?.();
    await hsm?.stop().catch(() => undefined);
    process.exit(0);
  };
  process.on('message', (m: WorkerCommand<WorkerSettings>) => {
    if (m?.hsmproxy === 'stop') void stop(m.deadlineMs);
    if (m?.hsmproxy === 'readiness') {
      const id = m.id;
      runtime.readiness().then(
        (r) => report({ hsmproxy: 'readiness', id, report: r }),
        (err: unknown) => report({ hsmproxy: 'readiness', id, report: { ready: false, reasons: [(err as Error).message] } }),
      );
    }
    if (m?.hsmproxy === 'reload') {
      runtime.reload().then(
        () => report({ hsmproxy: 'reloaded' }),
        (err: unknown) => report({ hsmproxy: 'reload-failed', message: (err as Error).message }),
      );
    }
  });
  // The primary died: nobody will ask us to stop, so drain and go.
  process.on('disconnect', () => void stop(runtime.config.timeouts.shutdownMs));
  process.on('SIGTERM', () => void stop(runtime.config.timeouts.shutdownMs));
  report({ hsmproxy: 'ready', listeners });
}
