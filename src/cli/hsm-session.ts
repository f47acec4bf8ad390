// How CLI commands reach the HSM: the cluster directory (--dir, HSMPROXY_DIR, ./data), the
// credentials (HSMPROXY_PIN=user:password or a hidden prompt on a terminal, never a flag), a
// logged-in cluster client (or, with --hsm, a connection to that one HSM), and key lookup by id or
// label. Commands call `withHsm`.
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { ClusterClient } from '../hsm/client/cluster-client.js';
import { HsmConnection } from '../hsm/client/connection.js';
import { clusterPath, findHsm, readManifest, type ClusterManifest, type ManifestHsm } from '../hsm/cluster/manifest.js';
import type { KeyClass, KeyInfo } from '../hsm/protocol/index.js';
import { openCluster } from '../app/cluster-session.js';
import { UsageError } from './run.js';

/** Options every HSM command takes. */
export interface HsmCommandOptions {
  dir?: string;
  hsm?: string;
  json?: boolean;
}

/** The cluster directory: --dir, else HSMPROXY_DIR, else ./data. */
export function clusterDir(opts: { dir?: string }): string {
  return resolve(opts.dir ?? process.env.HSMPROXY_DIR ?? 'data');
}

/** Reads one line from a terminal without echoing it. */
export function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolveLine, reject) => {
    // Echo off before the prompt shows: whatever is typed once it is visible is never echoed.
    stdin.setRawMode(true);
    process.stderr.write(question);
    stdin.resume();
    let line = '';
    const done = (err?: Error): void => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolveLine(line);
    };
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new UsageError('cancelled'));
        if (ch === '\u007f' || ch === '\b') line = line.slice(0, -1);
        else line += ch;
      }
    };
    stdin.on('data', onData);
  });
}

/** Credentials from HSMPROXY_PIN ("user:password") or a prompt; never from a flag. */
export async function readPin(what = 'HSM user'): Promise<{ user: string; password: string }> {
  let pin = process.env.HSMPROXY_PIN;
  if (pin === undefined || pin === '') {
    if (!process.stdin.isTTY) throw new UsageError(`no credentials: set HSMPROXY_PIN=user:password (the ${what})`);
    const user = await promptHidden(`${what} name: `);
    const password = await promptHidden('password: ');
    pin = `${user}:${password}`;
  }
  const colon = pin.indexOf(':');
  if (colon <= 0 || colon === pin.length - 1) throw new UsageError('HSMPROXY_PIN must be user:password (e.g. HSMPROXY_PIN=alice:secret)');
  return { user: pin.slice(0, colon), password: pin.slice(colon + 1) };
}

/** A password being set: HSMPROXY_NEW_PASSWORD or a prompt (asked twice). */
export async function readNewPassword(what: string): Promise<string> {
  const env = process.env.HSMPROXY_NEW_PASSWORD;
  if (env !== undefined && env !== '') return env;
  if (!process.stdin.isTTY) throw new UsageError(`no new password for ${what}: set HSMPROXY_NEW_PASSWORD`);
  const a = await promptHidden(`new password for ${what}: `);
  const b = await promptHidden('again: ');
  if (a !== b) throw new UsageError('the two passwords differ; try again');
  return a;
}

/** Connects (mTLS, not logged in) to one HSM of the cluster in `dir`. */
export async function connectHsm(dir: string, m: ClusterManifest, h: ManifestHsm): Promise<HsmConnection> {
  const [ca, cert, key] = await Promise.all([
    readFile(clusterPath(dir, m.caCert)), readFile(clusterPath(
      dir, m.clientCert,
    )), readFile(clusterPath(dir, m.clientKey)),
  ]);
  try {
    return await HsmConnection.connect({ hsmId: h.id, host: h.address, port: h.port, ca, cert, key });
  } catch (err) {
    if ((err as { code?: unknown }).code === 'HSM_ERR_UNREACHABLE') {
      throw new UsageError(`cannot reach HSM ${h.id} at ${h.address}:${h.port}: is it running? start it with \`hsmproxy hsm serve --dir ${dir} --hsm ${h.id}\``, 1);
    }
    throw err;
  }
}

/** What commands talk to: the whole cluster (default) or, with --hsm, one HSM; same methods. */
export type HsmClient = HsmConnection | ClusterClient;

/** Opens a logged-in client — the cluster, or the HSM chosen with --hsm — runs `fn`, closes. */
export async function withHsm<T>(
  opts: HsmCommandOptions, fn: (conn: HsmClient, ctx: { dir: string; manifest: ClusterManifest }) => Promise<T>,
): Promise<T> {
  const dir = clusterDir(opts);
  const manifest = await readManifest(dir);
  const h = findHsm(manifest, opts.hsm);
  const pin = await readPin();
  if (opts.hsm === undefined) {
    const cluster = await openCluster(dir, manifest, pin);
    try {
      return await fn(cluster, { dir, manifest });
    } finally {
      await cluster.close();
    }
  }
  const conn = await connectHsm(dir, manifest, h);
  try {
    await conn.login(pin.user, pin.password);
    return await fn(conn, { dir, manifest });
  } finally {
    conn.destroy();
  }
}

/** Finds a key by id or label; with a label naming both halves of a pair, `prefer` picks one. */
export async function resolveKey(conn: HsmClient, k: string, prefer?: KeyClass): Promise<KeyInfo> {
  if (/^[0-9a-f]{32}$/i.test(k)) {
    try {
      return await conn.getKey(k.toLowerCase());
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'HSM_ERR_NO_SUCH_KEY') throw err;
    }
  }
  let found = await conn.findKeys({ label: k });
  if (found.length > 1 && prefer) {
    const preferred = found.filter((x) => x.class === prefer);
    if (preferred.length > 0) found = preferred;
  }
  if (found.length === 1) return found[0] as KeyInfo;
  if (found.length === 0) throw new UsageError(`no key with id or label "${k}" visible to this user; list keys with \`hsmproxy key list\``, 1);
  throw new UsageError(`the label "${k}" names ${found.length} keys (${found.map((x) => x.keyId).join(', ')}); pass --key with a key id`, 1);
}
