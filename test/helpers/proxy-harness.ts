// A proxy on node:tls with test certificates and demo upstreams, all on loopback, torn down
// after the test; plus a curl runner (the real binary, trusting only the test CA).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import type { Test } from 'tap';
import { parseConfig, type Config } from '../../src/config/index.js';
import { createRegistry } from '../../src/metrics/index.js';
import { nodeTlsListenerFactory, Proxy, startDemoUpstream, type DemoUpstream, type ProxyOptions } from '../../src/proxy/index.js';
import { Engine, SimBackend, writeKeyReference } from '../../src/engine/index.js';
import { certPem, selfSign, signingKey } from '../../src/pki/index.js';
import { offloadListenerFactory, type OffloadListenerOptions } from '../../src/proxy/offload-listener.js';
import { FakeHsm } from './fake-hsm.js';
import { issue, makeCa } from './proxy-certs.js';

export interface CurlResult { status: number; body: string; headers: string; stderr: string; exitCode: number }

export interface Harness {
  dir: string;
  ca: string;
  proxy: Proxy;
  port: number;
  upstreams: DemoUpstream[];
  logs: Array<Record<string, unknown>>;
  registry: ReturnType<typeof createRegistry>;
  /** Runs curl against https://<host>:<port><path>, resolved to 127.0.0.1. */
  curl(path: string, args?: string[], host?: string): Promise<CurlResult>;
  config(yaml: string): Config;
}

/** Runs curl with a bounded time; never rejects (the exit code is in the result). */
export function curl(args: string[], timeoutMs = 20_000): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '-D', '-', '--max-time', String(timeoutMs / 1000), ...args], { timeout: timeoutMs + 2000, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      const split = stdout.indexOf('\r\n\r\n');
      const headers = split >= 0 ? stdout.slice(0, split) : stdout;
      const body = split >= 0 ? stdout.slice(split + 4) : '';
      const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(headers)?.[1] ?? 0);
      resolve({ status, body, headers: headers.toLowerCase(), stderr, exitCode: err ? Number((err as { code?: number }).code ?? 1) : 0 });
    });
  });
}

/**
 * Starts `upstreamCount` demo upstreams (named up0, up1…) and a proxy whose config is
 * `yaml(ctx)`; `{{cert}}`/`{{key}}` name a localhost ECDSA certificate, `{{up0}}`… the upstream URLs.
 */
export async function startHarness(t: Test, yaml: string, opts: { upstreamCount?: number; proxy?: Partial<ProxyOptions> } = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-proxy-'));
  const ca = makeCa(dir);
  const leaf = issue(dir, 'localhost', ['localhost', '*.test.local', 'api.example.com', '127.0.0.1']);
  const upstreams: DemoUpstream[] = [];
  for (let i = 0; i < (opts.upstreamCount ?? 1); i++) upstreams.push(await startDemoUpstream({ name: `up${i}` }));
  const fill = (text: string) => text.replaceAll('{{cert}}', leaf.cert).replaceAll('{{key}}', leaf.key)
    .replace(/\{\{up(\d+)\}\}/g, (_, i: string) => upstreams[Number(i)]!.url);
  const config = (text: string) => parseConfig(fill(text), { baseDir: dir });
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({ write(chunk, _enc, cb) { for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line)); cb(); } });
  const registry = createRegistry();
  const proxy = new Proxy({ config: config(yaml), tlsListenerFactory: nodeTlsListenerFactory, logger: pino({ level: 'info' }, sink), registry, ...opts.proxy });
  await proxy.start();
  t.teardown(async () => {
    await proxy.shutdown(1000);
    for (const u of upstreams) await u.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const port = proxy.listenerAddress(proxy.config.listeners[0]!.name)!.port;
  return {
    dir, ca, proxy, port, upstreams, logs, registry, config,
    curl: (path, args = [], host = 'localhost') => curl(['--cacert', ca, '--resolve', `${host}:${port}:127.0.0.1`, ...args, `https://${host}:${port}${path}`]),
  };
}

/** A one-listener config on an ephemeral port with admin on an ephemeral port. */
export function baseYaml(routes: string, upstreams = ''): string {
  return `
listeners:
  - name: main
    address: 127.0.0.1
    port: 0
    certificates: [{ cert: "{{cert}}", key: "{{key}}" }]
routes:
${routes}
${upstreams ? `upstreams:\n${upstreams}` : ''}
admin: { address: 127.0.0.1, port: 0 }
log: { level: info }
`;
}

export interface HsmBackedHarness extends Harness {
  /** The fake HSM holding the site key (set signDelayMs to slow every signature). */
  hsm: FakeHsm;
  /** The self-signed localhost certificate of the HSM-held key (also a CA file for curl). */
  cert: string;
}

/**
 * One HSM-backed listener `web` (tls/ TlsServer, the site key in a fake HSM behind the engine,
 * a self-signed localhost certificate made with it) routing localhost to up0. `alpn` and the
 * offload listener's `acmeChallenge` as given.
 */
export async function startHsmBackedHarness(
  t: Test, opts: { alpn?: string[]; acmeChallenge?: OffloadListenerOptions['acmeChallenge'] } = {},
): Promise<HsmBackedHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-hsm-site-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const hsm = new FakeHsm();
  const backend = new SimBackend({ client: hsm, clusterId: '5a'.repeat(32), credentials: { user: 'cu1', password: 'secret1' } });
  const engine = new Engine({ backends: { sim: backend } });
  t.teardown(() => engine.close());
  const handle = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'site' });
  const key = join(dir, 'site.key.pem');
  await writeKeyReference(handle, key);
  const cert = join(dir, 'site.pem');
  writeFileSync(cert, certPem(await selfSign(await signingKey(await engine.signer(key), engine.webcrypto()), { subject: 'CN=localhost', sans: ['DNS:localhost'], days: 1 })));
  const alpn = opts.alpn ? `, alpn: [${opts.alpn.join(', ')}]` : '';
  const yaml = `
listeners: [{ name: web, address: 127.0.0.1, port: 0${alpn}, certificates: [{ cert: "${cert}", key: "${key}" }] }]
routes: [{ host: localhost, upstream: [ "{{up0}}" ] }]
admin: { address: 127.0.0.1, port: 0 }
`;
  const factory = offloadListenerFactory({ engine, ...(opts.acmeChallenge ? { acmeChallenge: opts.acmeChallenge } : {}) });
  return { ...(await startHarness(t, yaml, { proxy: { tlsListenerFactory: factory } })), hsm, cert };
}
