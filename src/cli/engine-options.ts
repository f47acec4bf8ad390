// How CLI commands get an Engine and the key they name: the shared --dir / --backend / --hsm /
// --credentials options, the sim backend opened from the cluster manifest (DIR/cluster.json)
// through the cluster client (or one HSM with --hsm), the pkcs11 backend opened from what a reference records, and the
// soft backend for real key files (tests and baselines only).
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import {
  BadCredentialsError, Engine, OtherClusterError, SimBackend, loadCredentials, mapSimError, normaliseClusterId,
  simClientFrom, type Backend, type EngineSigner, type KeyRef,
} from '../engine/index.js';
import { HsmConnection } from '../hsm/client/connection.js';
import { clusterPath, findHsm, readClientManifest, type ClientManifest } from '../hsm/cluster/manifest.js';
import { connectCluster } from '../hsm/cluster/membership.js';
import { UsageError } from './run.js';

/** Options every key-using command accepts. */
export interface KeyCommandOptions {
  dir?: string;
  hsm?: string;
  backend?: string;
  credentials?: string;
  module?: string;
  json?: boolean;
}

/** Adds --dir, --hsm, --backend, --module and --credentials to a command. */
export function addKeyOptions(cmd: Command): Command {
  return cmd
    .option('--dir <dir>', 'cluster directory (default: $HSMPROXY_DIR or ./data)')
    .option('--hsm <id>', 'HSM of the cluster to talk to (default: the first in the manifest)')
    .option('--backend <kind>', 'where keys live: hsm (default; what the reference names) or soft (a real key file: tests only)')
    .option('--module <path>', 'PKCS#11 module to load, overriding the one a pkcs11 reference records (which is loaded only if listed in $HSMPROXY_PKCS11_MODULES)')
    .option('--credentials <file>', '0600 file holding user:password (default: $HSMPROXY_PIN)');
}

/** The cluster directory the options name. */
export function clusterDir(opts: KeyCommandOptions): string {
  return opts.dir ?? process.env.HSMPROXY_DIR ?? './data';
}

/** Opens the sim backend for the cluster in `dir` (checking `ref`'s cluster first, if given). */
export async function openSimFromManifest(opts: KeyCommandOptions, ref?: KeyRef): Promise<SimBackend> {
  const dir = clusterDir(opts);
  // A cluster directory or a proxy's client bundle: only the client certificate and HSM addresses are needed.
  const m = await readClientManifest(dir);
  if (ref?.backend === 'sim' && normaliseClusterId(ref.clusterId) !== normaliseClusterId(m.clusterId)) {
    throw new OtherClusterError(ref.source ?? 'the key reference', ref.clusterId, m.clusterId);
  }
  // Credentials before connecting: a missing PIN is the user's first mistake to report.
  const credentials = await loadCredentials({ file: opts.credentials });
  if (!credentials.user) throw new BadCredentialsError('the simulated HSM needs HSMPROXY_PIN=user:password (a crypto user and its password)');
  if (opts.hsm !== undefined) {
    // One named HSM, directly (no balancing or replication): for diagnosis.
    const h = findHsm(m, opts.hsm);
    const [
      ca, cert, key,
    ] = await Promise.all([m.caCert, m.clientCert, m.clientKey].map((p) => readFile(clusterPath(dir, p))));
    const conn = await HsmConnection.connect({
      hsmId: h.id, host: h.address, port: h.port, ca: ca!, cert: cert!, key: key!,
    }).catch((err: unknown) => {
      throw mapSimError(err, `HSM ${h.id}`);
    });
    return new SimBackend({ client: simClientFrom(conn), clusterId: m.clusterId, credentials });
  }
  // The whole cluster: balanced, with failover, and key imports replicated to every HSM.
  await checkLogin(dir, m, credentials.user, credentials.password);
  const client = await connectCluster(
    dir, { credentials: { user: credentials.user, password: credentials.password }, watch: false },
  ).catch((err: unknown) => {
    throw mapSimError(err, `the cluster in ${dir}`);
  });
  return new SimBackend({ client: simClientFrom(client), clusterId: m.clusterId, credentials });
}

/**
 * Tries the login once on the first reachable HSM before the cluster client connects: a wrong
 * password then costs one failed attempt and a clear message, instead of HSMs marked down and
 * reconnect attempts that count towards the account's lockout.
 */
async function checkLogin(dir: string, m: ClientManifest, user: string, password: string): Promise<void> {
  const [
    ca, cert, key,
  ] = await Promise.all([m.caCert, m.clientCert, m.clientKey].map((p) => readFile(clusterPath(dir, p))));
  for (const h of m.hsms) {
    let conn: HsmConnection;
    try {
      conn = await HsmConnection.connect({
        hsmId: h.id, host: h.address, port: h.port, ca: ca!, cert: cert!, key: key!, connectTimeoutMs: 2000,
      });
    } catch {
      continue; // unreachable: the cluster client reports which HSMs are down
    }
    try {
      await conn.login(user, password);
      return;
    } catch (err) {
      throw mapSimError(err, `login of ${user}`);
    } finally {
      await conn.close().catch(() => undefined);
    }
  }
}

/** The variable listing the PKCS#11 modules a key reference may name when no --module is given. */
export const MODULES_VARIABLE = 'HSMPROXY_PKCS11_MODULES';

/** How a refused reference's module can be allowed on the command line. */
export const CLI_ALLOW_HINT = { override: '--module', allowList: `${MODULES_VARIABLE} (absolute paths separated by ":")` };

/**
 * $HSMPROXY_PKCS11_MODULES as a list. A key reference is not trusted to choose the module loaded
 * into the process that holds the PIN: without --module, the one it records must be listed here.
 */
export function allowedModulesFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  const paths = (env[MODULES_VARIABLE] ?? '').split(':').filter((p) => p.length > 0);
  for (const p of paths) {
    if (!isAbsolute(p)) throw new UsageError(`${MODULES_VARIABLE} lists "${p}", not an absolute path; list PKCS#11 modules by absolute path, separated by ":" (e.g. /usr/lib/softhsm/libsofthsm2.so)`);
  }
  return paths;
}

/** Seams for tests: how backends are opened (a test swaps in an in-process fake HSM). */
export const backendOpeners = {
  sim: openSimFromManifest as (opts: KeyCommandOptions, ref?: KeyRef) => Promise<SimBackend>,
  async pkcs11(opts: KeyCommandOptions, ref: KeyRef): Promise<Backend> {
    const { pkcs11Opener } = await import('../engine/pkcs11/backend.js');
    return pkcs11Opener({
      ...(opts.module ? { module: opts.module } : {
        allowedModules: allowedModulesFromEnv(), allowHint: CLI_ALLOW_HINT,
      }),
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
    })(ref);
  },
};

/** An Engine whose backends open on demand from the command's options. */
export function openEngine(opts: KeyCommandOptions): Engine {
  if (opts.backend !== undefined && opts.backend !== 'hsm' && opts.backend !== 'soft') {
    throw new UsageError(`--backend must be hsm or soft, got "${opts.backend}"`);
  }
  return new Engine({
    openers: {
      sim: (ref) => backendOpeners.sim(opts, ref),
      pkcs11: (ref) => backendOpeners.pkcs11(opts, ref),
    },
  });
}

/** The signer for `--key FILE`: a key reference, or a real key file with --backend soft. */
export async function keySigner(engine: Engine, file: string, opts: KeyCommandOptions): Promise<EngineSigner> {
  if (opts.backend === 'soft') return engine.signer(await engine.loadSoftKey(file));
  return engine.signer(file);
}

/** Runs `fn` with an engine and always closes it (connections would keep the process alive). */
export async function withEngine<T>(opts: KeyCommandOptions, fn: (engine: Engine) => Promise<T>): Promise<T> {
  const engine = openEngine(opts);
  try {
    return await fn(engine);
  } finally {
    await engine.close();
  }
}
