// Embedded mode: the cluster as a library call. `startEmbeddedCluster` initialises DIR on first
// use (certificates, HSM stores, activation, a crypto user and a sync (AU) user whose generated
// credentials are stored 0600 in DIR), runs the HSM nodes as child processes on loopback with
// ephemeral ports, and returns a ClusterClient logged in as the crypto user. `stop()` closes the
// client and stops the children; children also exit on their own if this process dies.
import { randomBytes } from 'node:crypto';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClusterClient } from '../client/cluster-client.js';
import type { LoginCredentials } from '../client/link.js';
import type { HsmNodeOptions } from '../client/node.js';
import { initCluster } from './init.js';
import { connectCluster, linkFactory, membersOf } from './membership.js';
import { manifestPath, readManifest, writeManifest, type ManifestProfile } from './manifest.js';
import { Supervisor, type SupervisorOptions } from './supervisor.js';

/** Options of `startEmbeddedCluster`. */
export interface EmbeddedClusterOptions {
  dir: string;
  /** HSMs to create on first use (default 2); later starts use the manifest. */
  hsms?: number;
  profile?: ManifestProfile;
  /** scrypt cost of the devices' password hashing (tests may lower it). */
  scryptCost?: number;
  node?: HsmNodeOptions;
  /** Supervisor tuning (restart backoff...). */
  supervisor?: Partial<Omit<SupervisorOptions, 'dir' | 'ephemeralPorts'>>;
}

/** Generated logins of an embedded cluster (DIR/embedded-credentials.json, 0600). */
export interface EmbeddedCredentials {
  co: LoginCredentials;
  cu: LoginCredentials;
  au: LoginCredentials;
}

/** A running embedded cluster. */
export interface EmbeddedCluster {
  dir: string;
  client: ClusterClient;
  supervisor: Supervisor;
  credentials: EmbeddedCredentials;
  /** Milliseconds from the call to a connected client. */
  startupMs: number;
  stop(): Promise<void>;
}

const CREDENTIALS_FILE = 'embedded-credentials.json';

async function exists(p: string): Promise<boolean> {
  return access(p).then(() => true, () => false);
}

function password(): string {
  return randomBytes(18).toString('base64url');
}

/** Starts (initialising on first use) an N-HSM cluster in `dir` and returns a connected client. */
export async function startEmbeddedCluster(opts: EmbeddedClusterOptions): Promise<EmbeddedCluster> {
  const t0 = performance.now();
  const { dir } = opts;
  let preco: LoginCredentials | undefined;
  if (!(await exists(manifestPath(dir)))) {
    const init = await initCluster({ dir, hsms: opts.hsms ?? 2, profile: opts.profile ?? 'unlimited', basePort: 2223, ...(opts.scryptCost ? { scryptCost: opts.scryptCost } : {}) });
    preco = { user: init.precoUser, password: init.precoPassword };
  }
  const supervisor = new Supervisor({
    ...opts.supervisor, dir, ephemeralPorts: true, ...(opts.scryptCost ? { scryptCost: opts.scryptCost } : {})
  });
  await supervisor.start();
  try {
    const credentials = preco ? await activate(dir, preco, opts.node) : (JSON.parse(await readFile(join(dir, CREDENTIALS_FILE), 'utf8')) as EmbeddedCredentials);
    const client = await connectCluster(
      dir, { credentials: credentials.cu, syncCredentials: credentials.au, ...(opts.node ? { node: opts.node } : {}) },
    );
    return {
      dir, client, supervisor, credentials, startupMs: performance.now() - t0,
      stop: async () => {
        await client.close();
        await supervisor.stop();
      },
    };
  } catch (err) {
    await supervisor.stop();
    throw err;
  }
}

// First run: the PRECO becomes the CO on every HSM, the user tables are aligned (one copied
// table, so password hashes match and state digests agree), then a CU and an AU are created
// through the cluster client, and the generated logins stored 0600.
async function activate(dir: string, preco: LoginCredentials, node?: HsmNodeOptions): Promise<EmbeddedCredentials> {
  const creds: EmbeddedCredentials = {
    co: { user: preco.user, password: password() },
    cu: { user: 'hsmproxy', password: password() },
    au: { user: 'sync', password: password() },
  };
  const m = await readManifest(dir);
  const factory = await linkFactory(dir, m);
  const links = await Promise.all(membersOf(m).map((a) => factory(a, preco)));
  try {
    await Promise.all(links.map((l) => l.changePassword(creds.co.password)));
    const [first, ...rest] = links;
    if (first) {
      const users = await first.exportUsers();
      await Promise.all(rest.map((l) => l.importUsers(users)));
    }
  } finally {
    await Promise.all(links.map((l) => l.close().catch(() => undefined)));
  }
  const co = await connectCluster(dir, { credentials: creds.co, watch: false, ...(node ? { node } : {}) });
  try {
    await co.createUser(creds.cu.user, 'CU', creds.cu.password);
    await co.createUser(creds.au.user, 'AU', creds.au.password);
  } finally {
    await co.close();
  }
  await writeFile(join(dir, CREDENTIALS_FILE), JSON.stringify(creds, null, 2) + '\n', { mode: 0o600 });
  await writeFile(join(dir, 'sync-user.json'), JSON.stringify(creds.au) + '\n', { mode: 0o600 });
  const man = await readManifest(dir);
  man.activated = true;
  await writeManifest(dir, man);
  return creds;
}
