// The one way a process builds its proxy: the Proxy over the offloading TLS listener, signing on
// an opened HSM side and ready only when that side is. `hsmproxy serve` builds it in its own
// process (workers: 1) or in each worker process (workers: N), so every option of the config
// applies the same way in both modes; only the admin server and the ticket keys differ by role.
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import {
  AcmeManager, ClusterCertificateStore, acmeCertificates, startHttpChallengeServer, type HttpChallengeServer,
} from '../acme/index.js';
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
  const onChange = (): Promise<void> => proxy.reload(acme!.withCertificates(current));
  // Made at start, or at the reload that brings the first ACME certificate (SIGHUP).
  let acme = await acmeFor(opts, current, onChange);
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
      // Always asked (a reload may add ACME certificates); nothing pending: an ordinary handshake.
      acmeChallenge: (name: string) => acme?.challenges.tlsAlpnCertificate(name),
    }),
    readiness: () => hsmReadiness(hsm),
  });
  await proxy.start();
  publishHsmState(hsm);
  let acmeHttp = acme ? await openAcmeHttp(current, acme).catch(async (err: unknown) => {
    await proxy.shutdown(0);
    throw err;
  }) : undefined;
  // Orders start once the listeners answer tls-alpn-01 (and the http-01 port listens).
  acme?.start();

  /**
   * A reload's ACME certificates: the manager follows them (made now for the first ones). Returns
   * how to undo it if the proxy refuses the new config.
   */
  const followAcme = async (next: Config): Promise<() => Promise<void>> => {
    if (acme) {
      if (next.acme && JSON.stringify(next.acme) !== JSON.stringify(current.acme)) {
        log.warn('the acme block changed: its CA, account and an http-01 port already open take effect at the next restart; the certificates follow the new config now');
      }
      const was = current;
      const manager = acme;
      await manager.reconfigure(next);
      // An http-01 port the start had none of opens now (the certificates added may need it).
      let opened: HttpChallengeServer | undefined;
      try {
        if (!acmeHttp) opened = await openAcmeHttp(next, manager);
      } catch (err) {
        await manager.reconfigure(was);
        throw err;
      }
      if (opened) acmeHttp = opened;
      return async () => {
        await manager.reconfigure(was);
        if (opened) { acmeHttp = undefined; await opened.close(); }
      };
    }
    const made = await acmeFor(opts, next, onChange);
    if (!made) return async () => undefined;
    const http = await openAcmeHttp(next, made);
    acmeHttp = http;
    acme = made;
    return async () => {
      acme = undefined;
      acmeHttp = undefined;
      await made.stop();
      await http?.close();
    };
  };

  return {
    get acme() { return acme; },
    acmeHttpAddress: () => acmeHttp?.address(),
    get config() { return current; },
    listenerAddress: (name) => proxy.listenerAddress(name),
    adminAddress: () => proxy.adminAddress(),
    readiness: () => proxy.readiness(),
    async reload() {
      const next = loadConfig(opts.configFile, { checkFiles: true });
      const started = acme;
      // Added certificates are loaded from the store first, so one issued earlier serves at once.
      const undo = await followAcme(next);
      try {
        await proxy.reload(served(next));
      } catch (err) {
        await undo();
        throw err;
      }
      current = next;
      // A manager made by this reload starts ordering now that the listeners carry the new config.
      if (acme && !started) acme.start();
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

/** The http-01 / redirect listener of `acme.httpPort`, when the config has one. */
async function openAcmeHttp(config: Config, acme: AcmeManager): Promise<HttpChallengeServer | undefined> {
  const a = config.acme;
  if (a?.httpPort === undefined) return undefined;
  return startHttpChallengeServer({
    address: a.httpAddress, port: a.httpPort, challenges: acme.challenges, redirect: a.redirect,
    httpsPort: config.listeners[0]!.port,
  }).catch((err: unknown) => {
    throw new UsageError(`acme.httpPort: cannot listen on ${a.httpAddress}:${a.httpPort}: ${(err as Error).message}`);
  });
}

/** The ACME manager of a config with acme certificates, its stored certificates loaded. */
async function acmeFor(
  opts: ProxyRuntimeOptions, config: Config, onChange: () => Promise<void>,
): Promise<AcmeManager | undefined> {
  const { hsm, log } = opts;
  if (!config.acme || acmeCertificates(config).length === 0) return undefined;
  if (opts.worker && !hsm.cluster) throw new UsageError('acme certificates are served with workers: 1 unless the HSM cluster shares their challenges');
  // PKCS#11: keys and certificate objects go to hsm.token (config validation makes sure it is named).
  const token = hsm.backend ? undefined : await hsm.configuredToken?.();
  const backend = hsm.backend ?? token;
  if (!backend) throw new UsageError('acme certificates need the simulated cluster (hsm.mode embedded or cluster) or hsm.module and hsm.token (pkcs11) to generate their keys in');
  // The cluster is the source of truth: every proxy (and worker) of it orders under its lease,
  // publishes challenges in it and takes up what the others stored. A PKCS#11 token is shared the
  // same way, except that only the proxy with acme.orderer: true orders.
  // (Loaded only then: it brings the PKCS#11 binding.)
  const store = hsm.cluster ? new ClusterCertificateStore(hsm.cluster)
    : token ? new (await import('../acme/pkcs11-store.js')).Pkcs11CertificateStore(token, config.acme.orderer === true) : undefined;
  const acme = new AcmeManager({
    config, engine: hsm.engine, backend, log: log.child({ component: 'acme' }), onChange, ...(store ? { store } : {}),
  });
  await acme.load();
  return acme;
}
