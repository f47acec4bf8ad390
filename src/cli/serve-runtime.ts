// `hsmproxy serve` wiring: opens the HSM side the config names (embedded cluster, a running
// cluster, or PKCS#11), builds the Engine, makes the demo PKI and upstream for the default, and
// starts the Proxy over the offloading TLS listener — in this process (workers: 1) or in N worker
// processes (serve-workers.ts). Library calls only; the logic lives in the modules it calls.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { loadConfig, type Config } from '../config/index.js';
import type { Pkcs11Backend } from '../engine/pkcs11/backend.js';
import { Engine, SimBackend, loadCredentials, mapSimError, parseCredentials, simClientFrom, type Backend, type EngineOptions } from '../engine/index.js';
import type { ClusterClient } from '../hsm/client/cluster-client.js';
import { startEmbeddedCluster, type EmbeddedCluster } from '../hsm/cluster/embedded.js';
import type { Supervisor } from '../hsm/cluster/supervisor.js';
import { readClientManifest, type ClientManifest } from '../hsm/cluster/manifest.js';
import { connectCluster } from '../hsm/cluster/membership.js';
import { ensureDemoPki, type DemoPkiFiles } from '../pki/demo.js';
import { createRegistry, defineMetrics } from '../metrics/index.js';
import { Proxy, startDemoUpstream, type DemoUpstream } from '../proxy/index.js';
import { offloadListenerFactory } from '../proxy/offload-listener.js';
import { writeAdminRecord } from './admin-record.js';
import { UsageError } from './run.js';
import { startScaling } from './scaling-runtime.js';
import { startWorkers } from './serve-workers.js';

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

/** The HSM side of a running proxy. */
export interface HsmSide {
  engine: Engine;
  /** Backend that new keys (demo PKI) are generated on; none for PKCS#11 (the references name the tokens). */
  backend?: Backend;
  describe: string;
  /** PKCS#11: sessions per token and the libuv threads the process started with (each signature in flight holds one of each). */
  pkcs11?: { sessions: number; threadPool: number };
  cluster?: ClusterClient;
  /** The simulated cluster's directory (or the proxy's client bundle), and its supervisor when this process runs the HSMs (scaling). */
  dir?: string;
  /** `dir` is a client bundle (hsm.manifest names one): no cluster administration from here. */
  clientBundle?: boolean;
  supervisor?: Supervisor;
  stop(): Promise<void>;
}

/** The environment variable `hsm.credentials.env` names, when it is not the default HSMPROXY_PIN. */
function customPinVariable(config: Config): string | undefined {
  const name = config.hsm.credentials.env;
  return name && name !== 'HSMPROXY_PIN' && !config.hsm.credentials.file ? name : undefined;
}

function requiredVariable(name: string): string {
  const value = process.env[name];
  if (!value) throw new UsageError(`no crypto-user credentials: hsm.credentials.env names ${name}; set ${name}=user:password`);
  return value;
}

/**
 * A cluster client logged in as the crypto user. The client counts an HSM that refused the login
 * as down, and the first key lookup would then say "no HSM is available", sending the user to
 * check HSMs that are fine: say that the login was refused instead.
 */
async function connectLoggedIn(dir: string, credentials: { user: string; password: string }): Promise<ClusterClient> {
  const client = await connectCluster(dir, { credentials });
  if (client.stats().some((n) => n.inRotation)) return client;
  for (const { hsm } of client.stats()) {
    const mapped = mapSimError(client.node(hsm)?.lastError, `crypto user "${credentials.user}"`);
    if (mapped.code === 'ENGINE_ERR_BAD_CREDENTIALS') {
      await client.close();
      throw mapped;
    }
  }
  return client;
}

/**
 * Opens the backend the config names. `attach` (a worker process): an embedded cluster is already
 * run by the primary, so connect to it as a client with the credentials it stored in its directory.
 */
export async function openHsmSide(config: Config, log: Logger, how: { attach?: boolean } = {}): Promise<HsmSide> {
  const hsm = config.hsm;
  const admission = { maxInFlight: hsm.signing.maxInFlight, queueTimeoutMs: hsm.signing.timeoutMs };
  if (hsm.mode === 'pkcs11') {
    // Each listener's key reference names its module and token, as for the CLI: the token of a
    // reference is opened when the listener loads it, once per (module, token). The recorded
    // module is loaded only if hsm.allowedModules lists it (config validation requires one of the two).
    const { pkcs11Opener, threadPoolSizeFor } = await import('../engine/pkcs11/backend.js');
    // Read by libuv when its pool started (src/cli/entry.cjs sets it); too late to change here.
    const threadPool = Number(process.env.UV_THREADPOOL_SIZE) || 4;
    if (threadPool < threadPoolSizeFor(hsm.sessions)) {
      log.warn({ UV_THREADPOOL_SIZE: threadPool, sessions: hsm.sessions }, `UV_THREADPOOL_SIZE ${threadPool} is below hsm.sessions + 2: fewer than ${hsm.sessions} signatures can run at once`);
    }
    const pin = customPinVariable(config) ? requiredVariable(customPinVariable(config)!) : undefined;
    const open = pkcs11Opener({
      ...(hsm.module ? { module: hsm.module } : {}), ...(hsm.token ? { token: hsm.token } : {}),
      allowedModules: hsm.allowedModules ?? [], allowHint: { override: 'hsm.module', allowList: 'hsm.allowedModules' },
      ...(hsm.credentials.file ? { credentials: hsm.credentials.file } : {}), ...(pin ? { pin } : {}),
      poolSize: hsm.sessions,
    });
    const tokens = new Map<Backend, string>();
    const engine = new Engine({
      openers: {
        pkcs11: async (ref) => {
          const backend = (await open(ref)) as Pkcs11Backend;
          tokens.set(backend, `"${backend.token.info.label}" via ${backend.modulePath}`);
          return backend;
        },
      },
      admission,
    });
    return {
      engine,
      pkcs11: { sessions: hsm.sessions, threadPool },
      get describe() {
        const opened = [...new Set(tokens.values())];
        return opened.length === 0 ? 'PKCS#11 tokens named by the key references' : `PKCS#11 token${opened.length === 1 ? '' : 's'} ${opened.join(', ')}`;
      },
      stop: () => engine.close(),
    };
  }
  let embedded: EmbeddedCluster | undefined;
  let client: ClusterClient;
  let credentials: { user?: string; password: string };
  const dir = hsm.mode === 'cluster' && hsm.manifest ? dirname(hsm.manifest) : hsm.dir;
  let manifest: ClientManifest | undefined;
  if (hsm.mode === 'embedded' && how.attach) {
    const stored = JSON.parse(await readFile(join(dir, 'embedded-credentials.json'), 'utf8')) as { cu: { user: string; password: string } };
    credentials = stored.cu;
    client = await connectCluster(dir, { credentials: stored.cu });
  } else if (hsm.mode === 'embedded') {
    embedded = await startEmbeddedCluster({ dir, hsms: hsm.hsms, profile: hsm.profile });
    client = embedded.client;
    credentials = { user: embedded.credentials.cu.user, password: embedded.credentials.cu.password };
    log.info({ dir, hsms: embedded.supervisor.ports().size, startupMs: Math.round(embedded.startupMs) }, 'embedded HSM cluster started');
  } else {
    const variable = customPinVariable(config);
    credentials = variable ? parseCredentials(requiredVariable(variable), variable) : await loadCredentials(hsm.credentials.file ? { file: hsm.credentials.file } : {});
    if (!credentials.user) throw new UsageError('the cluster needs crypto-user credentials as user:password (HSMPROXY_PIN or hsm.credentials.file)');
    manifest = await readClientManifest(dir);
    // A client bundle (`hsmproxy cluster client-cert`) holds no CA or cluster key: HSMs cannot be added from it.
    if (manifest.kind === 'client-bundle' && hsm.autoscale?.enabled) {
      throw new UsageError(`hsm.autoscale needs the cluster directory, but hsm.manifest names the client bundle of "${manifest.client?.name ?? '?'}" (${dir}); run the autoscaler where the cluster directory is, or turn hsm.autoscale.enabled off`);
    }
    client = await connectLoggedIn(dir, { user: credentials.user, password: credentials.password });
  }
  const { clusterId, hsms, kind } = manifest ?? (await readClientManifest(dir));
  const clientBundle = kind === 'client-bundle';
  const backend = new SimBackend({ client: simClientFrom(client), clusterId, credentials, ownsClient: false });
  const opts: EngineOptions = { backends: { sim: backend }, admission };
  const engine = new Engine(opts);
  return {
    engine, backend, cluster: client, dir, ...(embedded ? { supervisor: embedded.supervisor } : {}), ...(clientBundle ? { clientBundle } : {}),
    describe: `${hsm.mode} cluster ${clientBundle ? 'through the client bundle' : 'in'} ${dir} (${hsms.length} HSM${hsms.length === 1 ? '' : 's'})`,
    stop: async () => {
      await engine.close();
      if (embedded) await embedded.stop();
      else await client.close();
    },
  };
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
  stop(deadlineMs?: number): Promise<void>;
  reload(): Promise<void>;
}

/** The number of serving processes `workers:` asks for ('auto': one per CPU the process may use). */
export function workerCount(config: Config): number {
  return config.workers === 'auto' ? availableParallelism() : config.workers;
}

/**
 * Republishes every HSM's state once metrics subscribe: the client published it while connecting,
 * before the proxy listened, and would otherwise repeat it only at the next health check.
 */
export function publishHsmState(hsm: HsmSide): void {
  for (const { hsm: id } of hsm.cluster?.stats() ?? []) hsm.cluster?.node(id)?.emitState();
}

/**
 * Ready when at least one HSM holding the listeners' keys is in rotation. On the simulated cluster
 * that is any HSM in rotation: the keys were resolved when the listeners loaded, token keys are
 * on every HSM, and an HSM enters rotation only once in sync. PKCS#11: the backend exposes no
 * session or login health (a lost login is re-established on the next signature), so ready.
 */
export function hsmReadiness(hsm: HsmSide): { ready: boolean; reasons: string[] } {
  if (!hsm.cluster) return { ready: true, reasons: [] };
  const nodes = hsm.cluster.stats();
  if (nodes.some((n) => n.inRotation)) return { ready: true, reasons: [] };
  const states = nodes.map((n) => `${n.hsm} ${n.status === 'up' ? 'up but not in sync' : n.status}`).join(', ');
  return { ready: false, reasons: [`no HSM holding the listeners' keys is in rotation (${states || 'the cluster lists no HSM'})`] };
}

/** On the simulated cluster, records the admin URL in its directory for `cluster advise --dir` (removed at stop). */
async function recordAdmin(hsm: HsmSide, addr: AddressInfo | undefined, cleanup: Array<() => Promise<void>>, log: Logger): Promise<void> {
  // A bundle is not where `cluster advise --dir` looks (and is mounted read-only in compose).
  if (!hsm.cluster || !hsm.dir || hsm.clientBundle || !addr) return;
  try {
    cleanup.push(await writeAdminRecord(hsm.dir, addr));
  } catch (err) {
    // A read-only cluster directory costs `cluster advise --dir` its latency figures, not the proxy.
    log.warn({ dir: hsm.dir, err: (err as Error).message }, 'could not record the admin URL in the cluster directory');
  }
}

/**
 * Starts the proxy. Without `configFile`, serves the embedded default (config/hsmproxy.yaml). The
 * demo PKI and upstream follow from the config (`demo: true`), not from how it was named: the
 * default passed explicitly, or a copy of it on other ports, is the demo too.
 */
export async function startServing(opts: { configFile?: string; log: Logger; logLevelFromConfig?: boolean }): Promise<Serving> {
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
      const certDir = dirname(resolve(config.listeners[0]!.certificates[0]!.cert));
      if (!hsm.backend) throw new UsageError('the default configuration needs a simulated cluster to make its demo keys on');
      const pki = await ensureDemoPki(hsm.engine, hsm.backend, certDir);
      const target = new URL(config.upstreams.demo!.targets[0]!);
      const upstream = await startDemoUpstream({ host: target.hostname, port: Number(target.port) });
      cleanup.push(() => upstream.close());
      demo = { pki: pki.files, pkiCreated: pki.created, upstream };
    }
    if (workerCount(config) > 1) {
      const serving = await startWorkers({ config, configFile, hsm, log });
      await recordAdmin(hsm, serving.adminAddress(), cleanup, log);
      return {
        ...serving, hsm, ...(demo ? { demo } : {}),
        async stop(deadlineMs) {
          await serving.stop(deadlineMs);
          for (const c of cleanup.reverse()) await c();
        },
      };
    }
    // The scaling advisor follows the simulated cluster (and acts on it with hsm.autoscale).
    const registry = createRegistry();
    const scaling = hsm.cluster && hsm.dir
      ? startScaling({ client: hsm.cluster, dir: hsm.dir, ...(hsm.supervisor ? { supervisor: hsm.supervisor } : {}), autoscale: config.hsm.autoscale, metrics: defineMetrics(registry), log })
      : undefined;
    if (scaling) cleanup.push(() => scaling.stop());
    const proxy = new Proxy({
      config,
      logger: log,
      registry,
      ...(scaling ? { scaling: () => scaling.service.report() } : {}),
      tlsListenerFactory: offloadListenerFactory({ engine: hsm.engine, signTimeoutMs: config.hsm.signing.timeoutMs }),
      readiness: () => hsmReadiness(hsm),
    });
    await proxy.start();
    publishHsmState(hsm);
    await recordAdmin(hsm, proxy.adminAddress(), cleanup, log);
    let current = config;
    return {
      config, hsm, ...(demo ? { demo } : {}), workers: 1,
      listenerAddress: (name) => proxy.listenerAddress(name),
      adminAddress: () => proxy.adminAddress(),
      async stop(deadlineMs) {
        await proxy.shutdown(deadlineMs ?? current.timeouts.shutdownMs);
        for (const c of cleanup.reverse()) await c();
      },
      async reload() {
        const next = loadConfig(configFile, { checkFiles: true });
        await proxy.reload(next);
        current = next;
      },
    };
  } catch (err) {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
    throw err;
  }
}
