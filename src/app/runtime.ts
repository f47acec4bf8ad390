// The one way a process builds its proxy: the Proxy over the offloading TLS listener, signing on
// an opened HSM side and ready only when that side is. `hsmproxy serve` builds it in its own
// process (workers: 1) or in each worker process (workers: N), so every option of the config
// applies the same way in both modes; only the admin server and the ticket keys differ by role.
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { AcmeManager, ClusterCertificateStore, acmeCertificates, startHttpChallengeServer } from '../acme/index.js';
import { loadConfig, type Config } from '../config/index.js';
import { exposeToPrimary } from '../metrics/index.js';
import { Proxy, type ReadinessReport } from '../proxy/index.js';
import { offloadListenerFactory } from '../proxy/offload-listener.js';
import type { TicketKeys } from '../tls/index.js';
import { UsageError } from './errors.js';
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
  /** The ACME certificates of this process, when the config has any. */
  readonly acme?: AcmeManager;
  /** The http-01 / redirect listener of `acme.httpPort`. */
  acmeHttpAddress?(): AddressInfo | undefined;
}

/** Builds and starts the proxy of this process: listeners (their keys loaded on the HSM side), upstreams, admin. */
export async function startProxyRuntime(opts: ProxyRuntimeOptions): Promise<ProxyRuntime> {
  const { hsm, log, registry, scaling, worker } = opts;
  const shedAt = opts.config.hsm.signing.shedFullHandshakesAt;
  if (worker) exposeToPrimary(registry);
  let current = opts.config;
  const acme = await acmeFor(opts, () => proxy.reload(acme!.withCertificates(current)));
  // ACME certificates join each listener's file certificates once issued (and at every reload).
  const served = (c: Config): Config => (acme ? acme.withCertificates(c) : c);
  const proxy: Proxy = new Proxy({
    config: served(opts.config),
    logger: log,
    registry,
    admin: !worker,
    ...(scaling ? { scaling: () => scaling.service.report() } : {}),
    tlsListenerFactory: offloadListenerFactory({
      engine: hsm.engine, signTimeoutMs: opts.config.hsm.signing.timeoutMs, logger: log,
      ...(shedAt !== undefined ? { shedFullHandshakesAt: shedAt } : {}),
      ...(worker ?? opts.ticketKeys ? { ticketKeys: worker?.ticketKeys ?? opts.ticketKeys! } : {}),
      ...(acme ? { acmeChallenge: (name: string) => acme.challenges.tlsAlpnCertificate(name) } : {}),
    }),
    readiness: () => hsmReadiness(hsm),
  });
  await proxy.start();
  publishHsmState(hsm);
  const acmeHttp = acme && current.acme?.httpPort !== undefined
    ? await startHttpChallengeServer({
      address: current.acme.httpAddress, port: current.acme.httpPort, challenges: acme.challenges,
      redirect: current.acme.redirect, httpsPort: current.listeners[0]!.port,
    }).catch(async (err: unknown) => {
      await proxy.shutdown(0);
      throw new UsageError(`acme.httpPort: cannot listen on ${current.acme!.httpAddress}:${current.acme!.httpPort}: ${(err as Error).message}`);
    })
    : undefined;
  // Orders start once the listeners answer tls-alpn-01 (and the http-01 port listens).
  acme?.start();
  return {
    ...(acme ? { acme } : {}),
    acmeHttpAddress: () => acmeHttp?.address(),
    get config() { return current; },
    listenerAddress: (name) => proxy.listenerAddress(name),
    adminAddress: () => proxy.adminAddress(),
    readiness: () => proxy.readiness(),
    async reload() {
      const next = loadConfig(opts.configFile, { checkFiles: true });
      if (acme && JSON.stringify(acmeCertificates(next)) !== JSON.stringify(acmeCertificates(current))) {
        log.warn('the acme certificates changed: they take effect at the next restart');
      }
      await proxy.reload(served(next));
      current = next;
      // SIGHUP also looks at the ACME store at once (renewal requests, certificates issued elsewhere).
      await acme?.poll();
    },
    async stop(deadlineMs) {
      await acme?.stop();
      await acmeHttp?.close();
      await proxy.shutdown(deadlineMs ?? current.timeouts.shutdownMs);
    },
  };
}

/** The ACME manager of a config with acme certificates, its stored certificates loaded. */
async function acmeFor(opts: ProxyRuntimeOptions, onChange: () => Promise<void>): Promise<AcmeManager | undefined> {
  const { config, hsm, log } = opts;
  if (!config.acme || acmeCertificates(config).length === 0) return undefined;
  if (!hsm.backend) throw new UsageError('acme certificates need the simulated cluster (hsm.mode embedded or cluster) to generate their keys in');
  if (opts.worker && !hsm.cluster) throw new UsageError('acme certificates are served with workers: 1 unless the HSM cluster shares their challenges');
  // The cluster is the source of truth: every proxy (and worker) of it orders under its lease,
  // publishes challenges in it and takes up what the others stored.
  const store = hsm.cluster ? new ClusterCertificateStore(hsm.cluster) : undefined;
  const acme = new AcmeManager({
    config, engine: hsm.engine, backend: hsm.backend, log: log.child({ component: 'acme' }), onChange, ...(store ? { store } : {}),
  });
  await acme.load();
  return acme;
}
