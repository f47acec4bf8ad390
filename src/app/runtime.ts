// The one way a process builds its proxy: the Proxy over the offloading TLS listener, signing on
// an opened HSM side and ready only when that side is. `hsmproxy serve` builds it in its own
// process (workers: 1) or in each worker process (workers: N), so every option of the config
// applies the same way in both modes; only the admin server and the ticket keys differ by role.
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { loadConfig, type Config } from '../config/index.js';
import { exposeToPrimary } from '../metrics/index.js';
import { Proxy, type ReadinessReport } from '../proxy/index.js';
import { offloadListenerFactory } from '../proxy/offload-listener.js';
import type { TicketKeys } from '../tls/index.js';
import { hsmReadiness, publishHsmState, type HsmSide } from './hsm-side.js';
import type { ScalingRuntime } from './scaling.js';

/** What a proxy runtime is built from. */
export interface ProxyRuntimeOptions {
  config: Config;
  /** Where reload() reads the next configuration. */
  configFile: string;
  /** The opened HSM side; the caller owns it (stop() leaves it open). */
  hsm: HsmSide;
  log: Logger;
  registry: Registry;
  /** Single process: the scaling advisor whose report /scaling serves. */
  scaling?: ScalingRuntime;
  /**
   * A worker process: the primary runs the admin server (this registry is exposed to it) and
   * makes each epoch's session-ticket key, so a ticket resumes on any worker.
   */
  worker?: { ticketKeys: TicketKeys };
  /** Single process: the ticket keys (config `tickets`); default keys made here. */
  ticketKeys?: TicketKeys;
}

/** A started proxy in this process. */
export interface ProxyRuntime {
  /** The configuration being served (the latest that reloaded). */
  readonly config: Config;
  listenerAddress(name: string): AddressInfo | undefined;
  adminAddress(): AddressInfo | undefined;
  /** Running, listeners open, and an HSM holding the listeners' keys in rotation. */
  readiness(): Promise<ReadinessReport>;
  /** Reads the config file again and switches to it; refused (the old one keeps serving) if it does not load. */
  reload(): Promise<void>;
  /** Drains connections within `deadlineMs` (default: timeouts.shutdownMs) and closes the listeners. */
  stop(deadlineMs?: number): Promise<void>;
}

/** Builds and starts the proxy of this process: listeners (their keys loaded on the HSM side), upstreams, admin. */
export async function startProxyRuntime(opts: ProxyRuntimeOptions): Promise<ProxyRuntime> {
  const { hsm, log, registry, scaling, worker } = opts;
  const shedAt = opts.config.hsm.signing.shedFullHandshakesAt;
  if (worker) exposeToPrimary(registry);
  const proxy = new Proxy({
    config: opts.config,
    logger: log,
    registry,
    admin: !worker,
    ...(scaling ? { scaling: () => scaling.service.report() } : {}),
    tlsListenerFactory: offloadListenerFactory({
      engine: hsm.engine, signTimeoutMs: opts.config.hsm.signing.timeoutMs, logger: log,
      ...(shedAt !== undefined ? { shedFullHandshakesAt: shedAt } : {}),
      ...(worker ?? opts.ticketKeys ? { ticketKeys: worker?.ticketKeys ?? opts.ticketKeys! } : {}),
    }),
    readiness: () => hsmReadiness(hsm),
  });
  await proxy.start();
  publishHsmState(hsm);
  let current = opts.config;
  return {
    get config() { return current; },
    listenerAddress: (name) => proxy.listenerAddress(name),
    adminAddress: () => proxy.adminAddress(),
    readiness: () => proxy.readiness(),
    async reload() {
      const next = loadConfig(opts.configFile, { checkFiles: true });
      await proxy.reload(next);
      current = next;
    },
    async stop(deadlineMs) {
      await proxy.shutdown(deadlineMs ?? current.timeouts.shutdownMs);
    },
  };
}
