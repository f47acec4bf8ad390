// `hsmproxy serve` as a user runs it, against a throwaway directory: an embedded cluster created
// once with the demo PKI (dev CA, RSA + ECDSA localhost certificates, keys in the HSM), a config
// file on ephemeral ports, and the serve process spawned from source, stopped by PID.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import tls from 'node:tls';
import { Engine, SimBackend, simClientFrom } from '../../src/engine/index.js';
import { startEmbeddedCluster } from '../../src/hsm/cluster/embedded.js';
import { readManifest } from '../../src/hsm/cluster/manifest.js';
import { connectCluster } from '../../src/hsm/cluster/membership.js';
import { ensureDemoPki, type DemoPkiFiles } from '../../src/pki/demo.js';
import { certPem, selfSign, signingKey } from '../../src/pki/index.js';
import { cliEntry } from './cli.js';

// The serve process runs in the temp dir, where a bare `--import=tsx` would not resolve.
const tsxLoader = createRequire(import.meta.url).resolve('tsx');

/** A directory holding `data/` (the embedded cluster) and `certs/` (the demo PKI). */
export interface ServeDir { dir: string; data: string; pki: DemoPkiFiles; cleanup(): Promise<void> }

/** Creates the cluster (2 HSMs, fast password hashing) and the demo PKI, then stops the cluster. */
export async function prepareServeDir(): Promise<ServeDir> {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-serve-'));
  const data = join(dir, 'data');
  const cluster = await startEmbeddedCluster({ dir: data, hsms: 2, scryptCost: 1024 });
  try {
    const { clusterId } = await readManifest(data);
    const backend = new SimBackend({ client: simClientFrom(cluster.client), clusterId, credentials: cluster.credentials.cu, ownsClient: false });
    const engine = new Engine({ backends: { sim: backend } });
    const { files } = await ensureDemoPki(engine, backend, join(dir, 'certs'));
    await engine.close();
    return { dir, data, pki: files, cleanup: () => rm(dir, { recursive: true, force: true }) };
  } finally {
    await cluster.stop();
  }
}

/** A config serving the demo certificates on an ephemeral port, proxying to `upstream`. */
export function serveYaml(d: ServeDir, upstream: string, extra = ''): string {
  return `
listeners:
  - name: main
    address: 127.0.0.1
    port: 0
    certificates:
      - { cert: ${d.pki.ecdsaChain}, key: ${d.pki.ecdsaKey} }
      - { cert: ${d.pki.rsaChain}, key: ${d.pki.rsaKey} }
routes: [{ upstream: [${upstream}] }]
hsm: { mode: embedded, dir: ${d.data}, hsms: 2 }
admin: { address: 127.0.0.1, port: 0 }
${extra}
`;
}

/** A config whose one listener serves only the ACME certificate for `name` (embedded cluster of 2 HSMs). */
export function acmeOnlyYaml(d: ServeDir, port: number, name: string, acme: { directory: string; directoryCa: string }): string {
  return `
listeners:
  - { name: main, address: 127.0.0.1, port: ${port}, certificates: [{ acme: { names: [${name}] } }] }
routes: [{ upstream: [http://127.0.0.1:9] }]
hsm: { mode: embedded, dir: ${d.data}, hsms: 2 }
admin: { address: 127.0.0.1, port: 0 }
acme: { directory: ${acme.directory}, directoryCa: ${acme.directoryCa}, termsOfServiceAgreed: true }
`;
}

/** A running `hsmproxy serve`: its addresses, its log lines so far, its exit. */
export interface ServeProcess {
  child: ChildProcess;
  port: number;
  admin: number;
  logs(): Array<Record<string, unknown>>;
  stderr(): string;
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL if it is still running after `graceMs`. */
  stop(graceMs?: number): Promise<number | null>;
}

/** Writes `yaml` to DIR/hsmproxy.yaml and starts `hsmproxy serve --config` on it (addresses read from its banner). */
export async function startServe(d: ServeDir, yaml: string, env: NodeJS.ProcessEnv = {}): Promise<ServeProcess> {
  const configFile = join(d.dir, 'hsmproxy.yaml');
  await writeFile(configFile, yaml);
  const child = spawn(process.execPath, [`--import=${tsxLoader}`, cliEntry, 'serve', '--config', configFile], {
    cwd: d.dir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { out += s; });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { err += s; });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // A test process that ends abnormally (uncaught error, tap timeout) must not leave serve running.
  const orphanGuard = () => { if (child.exitCode === null) child.kill('SIGKILL'); };
  process.once('exit', orphanGuard);
  process.once('SIGTERM', () => { orphanGuard(); process.exit(1); });
  void exited.then(() => process.off('exit', orphanGuard));
  const lines = () => out.split('\n').flatMap((l) => {
    try { return [JSON.parse(l) as Record<string, unknown>]; } catch { return []; }
  });
  const stop = async (graceMs = 20_000) => {
    if (child.exitCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const code = await exited;
    clearTimeout(timer);
    // The HSM node processes exit when their IPC channel closes; wait so the next start finds their stores free.
    const gone = Date.now() + 10_000;
    while ((await pids(d.data)).length > 0 && Date.now() < gone) await new Promise((r) => setTimeout(r, 100));
    return code;
  };
  const deadline = Date.now() + 60_000;
  while (!/admin: http:/.test(err)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop(0);
      throw new Error(`serve did not start (exit ${child.exitCode}):\n${err}\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child, port: Number(/serving https:\/\/[^/]+:(\d+)\//.exec(err)![1]), admin: Number(/admin: http:\/\/[^/]+:(\d+)\//.exec(err)![1]),
    logs: lines, stderr: () => err, exited, stop,
  };
}

/** PIDs of processes whose command line names `path` (the HSM nodes of a cluster directory). */
export function pids(path: string): Promise<number[]> {
  return new Promise((resolve) => execFile('pgrep', ['-f', path], (_e, out) => resolve(out.split('\n').filter(Boolean).map(Number))));
}

/** The PID of the HSM node process serving `hsm` of the cluster in `dir` (a child of serve). */
export function hsmPid(dir: string, hsm: string): Promise<number | undefined> {
  return new Promise((resolve) => execFile('pgrep', ['-f', '--', `--dir ${dir} --hsm ${hsm} `], (_e, out) => resolve(Number(out.split('\n')[0]) || undefined)));
}

/**
 * Freezes (SIGSTOP) the HSM node processes `hsms` of the cluster in `dir`, children of serve;
 * `resume(hsm)` continues one, `resume()` all, and the end of the test resumes what is left.
 * Fails unless each one runs.
 */
export async function freezeHsms(t: { teardown(fn: () => void): void }, dir: string, hsms: string[]): Promise<{ resume(hsm?: string): void }> {
  const found = await Promise.all(hsms.map((h) => hsmPid(dir, h)));
  const missing = hsms.filter((_h, i) => found[i] === undefined);
  if (missing.length > 0) throw new Error(`no process for ${missing.join(', ')} under ${dir}`);
  const frozen = new Map(hsms.map((h, i) => [h, found[i]!]));
  const resume = (hsm?: string): void => {
    for (const [h, pid] of [...frozen]) {
      if (hsm !== undefined && h !== hsm) continue;
      try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
      frozen.delete(h);
    }
  };
  t.teardown(() => resume());
  for (const pid of frozen.values()) process.kill(pid, 'SIGSTOP');
  return { resume };
}

/** Opens a TLS connection trusting only the dev CA; resolves with the socket once established. */
export function connectTls(port: number, ca: Buffer, opts: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, ...opts }, () => resolve(s));
    s.once('error', reject);
    s.setTimeout(15_000, () => s.destroy(new Error('TLS connection timed out')));
  });
}

/** One HTTP/1.1 GET on a fresh TLS connection; resolves with the status code. */
export async function getOnce(port: number, ca: Buffer, path = '/'): Promise<number> {
  return getOn(await connectTls(port, ca), path);
}

/** Sends a GET for `path` with `Connection: close` on `s`; resolves with the status once the response ends. */
export function getOn(s: tls.TLSSocket, path = '/'): Promise<number> {
  return new Promise((resolve, reject) => {
    let buf = '';
    s.setEncoding('utf8').on('data', (d: string) => { buf += d; });
    s.once('end', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(buf)?.[1] ?? 0)));
    s.once('error', reject);
    s.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
  });
}

/** The dev CA certificate of a ServeDir. */
export function devCa(d: ServeDir): Promise<Buffer> {
  return readFile(d.pki.caCert);
}

/** The value of one sample of `/metrics` text, or undefined. */
export function sample(metrics: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return undefined;
}

/** A new self-signed certificate for the ECDSA key already in the HSM (made as a second client of the running cluster); returns its PEM. */
export async function reissueEcdsa(d: ServeDir): Promise<string> {
  const { cu } = JSON.parse(await readFile(join(d.data, 'embedded-credentials.json'), 'utf8')) as { cu: { user: string; password: string } };
  const client = await connectCluster(d.data, { credentials: cu, watch: false });
  const { clusterId } = await readManifest(d.data);
  const engine = new Engine({ backends: { sim: new SimBackend({ client: simClientFrom(client), clusterId, credentials: cu, ownsClient: false }) } });
  try {
    const cert = await selfSign(await signingKey(await engine.signer(d.pki.ecdsaKey), engine.webcrypto()), { subject: 'CN=localhost reissued', sans: ['DNS:localhost'], days: 2 });
    return certPem(cert);
  } finally {
    await engine.close();
    await client.close();
  }
}
