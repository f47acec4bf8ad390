// The HSM side of a running proxy: the backend the config names (an embedded cluster run by this
// process, a running cluster through its directory or a client bundle, or PKCS#11 tokens), the
// Engine over it, and whether it is ready to sign for the listeners.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import type { Pkcs11Backend } from '../engine/pkcs11/backend.js';
import { Engine, SimBackend, loadCredentials, mapSimError, parseCredentials, simClientFrom, type Backend, type EngineOptions } from '../engine/index.js';
import type { ClusterClient } from '../hsm/client/cluster-client.js';
import { startEmbeddedCluster, type EmbeddedCluster } from '../hsm/cluster/embedded.js';
import type { Supervisor } from '../hsm/cluster/supervisor.js';
import { readClientManifest, type ClientManifest } from '../hsm/cluster/manifest.js';
import { connectCluster } from '../hsm/cluster/membership.js';
import type { ReadinessReport } from '../proxy/index.js';
import { UsageError } from './errors.js';

/** The HSM side of a running proxy. */
export interface HsmSide {
  engine: Engine;
  /** Backend that new keys (demo PKI) are generated on; none for PKCS#11 (the references name the tokens). */
  backend?: Backend;
  /**
   * PKCS#11 with hsm.module and hsm.token: that token, opened on first use (ACME keys and
   * certificate objects go there); the same backend the listeners' references to it resolve on.
   */
  configuredToken?: () => Promise<Pkcs11Backend>;
  describe: string;
  /** PKCS#11: sessions per token and libuv threads at start (each signature in flight holds one of each). */
  pkcs11?: { sessions: number; threadPool: number };
  cluster?: ClusterClient;
  /** The simulated cluster's directory (or client bundle); its supervisor when this process runs the HSMs. */
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

/** "embedded cluster in ./data (2 HSMs)", "cluster in /srv/hsm (3 HSMs)": where the keys are, for the banner. */
export function describeCluster(mode: 'embedded' | 'cluster', clientBundle: boolean, dir: string, hsms: number): string {
  const where = clientBundle ? `cluster through the client bundle in ${dir}` : `cluster in ${dir}`;
  return `${mode === 'embedded' ? `embedded ${where}` : where} (${hsms} HSM${hsms === 1 ? '' : 's'})`;
}

/**
 * Opens the backend the config names. `attach` (a worker process): an embedded cluster is already
 * run by the primary, so connect to it as a client with the credentials it stored in its directory.
 */
export async function openHsmSide(config: Config, log: Logger, how: { attach?: boolean } = {}): Promise<HsmSide> {
  const hsm = config.hsm;
  const admission = {
    maxInFlight: hsm.signing.maxInFlight, queueTimeoutMs: hsm.signing.timeoutMs,
    ...(hsm.signing.maxQueue !== undefined ? { maxQueue: hsm.signing.maxQueue } : {}),
  };
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
    let configured: Promise<Pkcs11Backend> | undefined;
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
      ...(hsm.module && hsm.token ? { configuredToken: () => (configured ??= open.configuredToken()) } : {}),
      pkcs11: { sessions: hsm.sessions, threadPool },
      get describe() {
        const opened = [...new Set(tokens.values())];
        return opened.length === 0 ? 'PKCS#11 tokens named by the key references' : `PKCS#11 token${opened.length === 1 ? '' : 's'} ${opened.join(', ')}`;
      },
      stop: async () => {
        await engine.close();
        // Opened for ACME alone, the engine does not know it (closing twice is harmless).
        await (await configured?.catch(() => undefined))?.close();
      },
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
    credentials = variable
      ? parseCredentials(requiredVariable(variable), variable)
      : await loadCredentials(hsm.credentials.file ? { file: hsm.credentials.file } : {});
    if (!credentials.user) throw new UsageError('the cluster needs crypto-user credentials as user:password (HSMPROXY_PIN or hsm.credentials.file)');
    manifest = await readClientManifest(dir);
    // A client bundle (`hsmproxy cluster client-cert`) holds no CA or cluster key: HSMs cannot be added from it.
    if (manifest.kind === 'client-bundle' && hsm.autoscale?.enabled) {
      throw new UsageError(`hsm.autoscale needs the cluster directory, but hsm.manifest names the client bundle of "${manifest.client?.name ?? '?'}" (${dir}); run the autoscaler where the cluster directory is, or turn hsm.autoscale.enabled off`);
    }
    client = await connectLoggedIn(dir, { user: credentials.user, password: credentials.password });
  }
  // Hedged signs (a late HSM's sign sent to a second one too): only meaningful with >= 2 HSMs,
  // which the client checks per sign, so a cluster that grows starts hedging by itself.
  client.setHedging(hsm.signing.hedge);
  const { clusterId, hsms, kind } = manifest ?? (await readClientManifest(dir));
  const clientBundle = kind === 'client-bundle';
  const backend = new SimBackend({ client: simClientFrom(client), clusterId, credentials, ownsClient: false });
  const opts: EngineOptions = { backends: { sim: backend }, admission };
  const engine = new Engine(opts);
  return {
    engine, backend, cluster: client, dir, ...(embedded ? { supervisor: embedded.supervisor } : {}),
    ...(clientBundle ? { clientBundle } : {}),
    describe: describeCluster(hsm.mode, clientBundle, dir, hsms.length),
    stop: async () => {
      await engine.close();
      if (embedded) await embedded.stop();
      else await client.close();
    },
  };
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
export function hsmReadiness(hsm: HsmSide): ReadinessReport {
  if (!hsm.cluster) return { ready: true, reasons: [] };
  const nodes = hsm.cluster.stats();
  if (nodes.some((n) => n.inRotation)) return { ready: true, reasons: [] };
  const states = nodes.map((n) => `${n.hsm} ${n.status === 'up' ? 'up but not in sync' : n.status}`).join(', ');
  return { ready: false, reasons: [`no HSM holding the listeners' keys is in rotation (${states || 'the cluster lists no HSM'})`] };
}
