// Many proxies ordering from one HSM cluster, against a real CA (Debian's Pebble on loopback).
// The cluster runs in this test process; every proxy is an `hsmproxy serve` in hsm.mode cluster,
// listening on the port Pebble validates (tls-alpn-01) at an address of its own (127.0.0.x), with
// an acme.dir of its own (so what one proxy learns from another came through the HSMs) and the
// shared account key. challtestsrv's /add-a points each name at the proxy that must answer.
import t from 'tap';
import { randomBytes, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { createServer as createHttpServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ClusterCertificateStore } from '../src/acme/index.js';
import { startEmbeddedCluster, type EmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { freePorts, startPebble, type Pebble } from './helpers/pebble.js';
import { prepareServeDir, sample, startServe, type ServeDir, type ServeProcess } from './helpers/serve-fixture.js';
import { servedCertificate } from './helpers/served.js';

/** The leaf served at `host`:`port` for `servername` to a client trusting only `ca`. */
/** Polls until `servername` is served a certificate verifying to `ca` at `host`. */
async function waitServed(host: string, port: number, servername: string, ca: string, procs: ServeProcess[], ms = 120_000): Promise<X509Certificate> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      return await servedCertificate(port, servername, ca, { host });
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const logs = procs.map((p) => JSON.stringify(p.logs().filter((l) => l.component === 'acme'))).join('\n');
      throw new Error(`${servername} was never served at ${host} a certificate verifying to Pebble's root (${(last as Error).message}); acme logs:\n${logs}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function getText(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve(body));
    }).on('error', reject).end();
  });
}

/** challtestsrv answers A queries for `host` with `address`. */
async function pointAt(pebble: Pebble, host: string, address: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const body = JSON.stringify({ host, addresses: [address] });
    request({ host: '127.0.0.1', port: pebble.challtestsrv, path: '/add-a', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      if (res.statusCode === 200) resolve(); else reject(new Error(`add-a answered ${res.statusCode}`));
    }).on('error', reject).end(body);
  });
}

let d: ServeDir;
let cluster: EmbeddedCluster;
let pebble: Pebble;
let port: number;
let httpPort: number;
let upstreamPort: number;
let root: string;
const tag = randomBytes(4).toString('hex');
const procs: ServeProcess[] = [];

t.before(async () => {
  d = await prepareServeDir();
  cluster = await startEmbeddedCluster({ dir: d.data, scryptCost: 1024 });
  const [p, hp] = await freePorts(2) as [number, number];
  port = p;
  httpPort = hp;
  const upstream = createHttpServer((_req, res) => res.end('ok'));
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  t.teardown(() => { upstream.closeAllConnections(); upstream.close(); });
  upstreamPort = (upstream.address() as AddressInfo).port;
  pebble = await startPebble({ tlsPort: port, httpPort });
  root = await pebble.root();
});
t.teardown(async () => {
  await Promise.all(procs.map((p) => p.stop(5_000)));
  await pebble?.stop();
  await cluster?.stop();
  await d?.cleanup();
});

/** Starts one proxy of the cluster at `address`, ordering `name` (over tls-alpn-01 unless told). */
async function proxy(id: string, address: string, name: string, opts: { directory?: string; leaseSeconds?: number; workers?: number; challenge?: 'http-01' } = {}): Promise<ServeProcess> {
  const dir = join(d.dir, id);
  await mkdir(dir, { recursive: true });
  const { cu } = cluster.credentials;
  const yaml = `
listeners:
  - name: main
    address: ${address}
    port: ${port}
    certificates:
      - { cert: ${d.pki.ecdsaChain}, key: ${d.pki.ecdsaKey} }
      - acme: { names: [${name}], keyType: ec:p256, challenge: ${opts.challenge ?? 'tls-alpn-01'} }
routes: [{ upstream: [http://127.0.0.1:${upstreamPort}] }]
hsm: { mode: cluster, manifest: ${join(d.data, 'cluster.json')} }
admin: { address: 127.0.0.1, port: 0 }
workers: ${opts.workers ?? 1}
acme: { directory: ${opts.directory ?? pebble.directory}, directoryCa: ${pebble.caFile}, termsOfServiceAgreed: true, dir: ${join(dir, 'acme')}, accountKey: ${join(d.dir, 'account.key')}, leaseSeconds: ${opts.leaseSeconds ?? 120}${opts.challenge ? `, httpPort: ${httpPort}, httpAddress: ${address}` : ''} }
`;
  // `data` is this proxy's own directory: stop() waits for HSM processes under it, and the HSMs are this test's.
  const proc = await startServe({ ...d, dir, data: dir }, yaml, { HSMPROXY_PIN: `${cu.user}:${cu.password}` });
  procs.push(proc);
  return proc;
}

const acmeLogs = (p: ServeProcess, msg: string): Array<Record<string, unknown>> => p.logs().filter((l) => l.component === 'acme' && String(l.msg).startsWith(msg));

t.test('the CA\'s validation reaching a proxy that did not order is answered, and proxies that did not order serve the certificate', async (t) => {
  const name = `shared-${tag}.acme.test`;
  await pointAt(pebble, name, '127.0.0.2');
  // B cannot reach the CA at all (its directory is a closed port): what it answers and serves came through the HSMs.
  const b = await proxy('b', '127.0.0.2', name, { directory: 'https://127.0.0.1:9/directory' });
  const a = await proxy('a', '127.0.0.1', name);
  const atB = await waitServed('127.0.0.2', port, name, root, [a, b]);
  const atA = await waitServed('127.0.0.1', port, name, root, [a, b]);
  t.equal(atB.serialNumber, atA.serialNumber, 'the proxy that did not order serves the certificate the other ordered');
  t.ok(acmeLogs(a, 'acme order step: challenge valid').length >= 1, 'A\'s challenge was validated (Pebble reached B, where the name points)');
  // B may take the lease before A (its account is opened under the lease, and its CA is unreachable,
  // so it gives the lease back): what matters is that it placed no order.
  t.same(acmeLogs(b, 'acme order step: new order'), [], 'B placed no order');
  t.ok(acmeLogs(b, 'acme certificate taken up from the store').length >= 1, 'B took the certificate up from the cluster');

  // A third proxy started now finds the certificate in the cluster and places no order.
  const c = await proxy('c', '127.0.0.3', name);
  const atC = await servedCertificate(port, name, root, { host: '127.0.0.3' });
  t.equal(atC.serialNumber, atA.serialNumber, 'a proxy started later serves the same certificate at once');
  const metrics = await getText(c.admin, '/metrics');
  t.equal(sample(metrics, 'hsmproxy_acme_orders_total', { result: 'issued', challenge: 'tls-alpn-01' }) ?? 0, 0, 'C issued no order');
  t.same(acmeLogs(c, 'acme order step: new order'), [], 'C sent no new order to the CA');
  t.ok((sample(await getText(a.admin, '/metrics'), 'hsmproxy_acme_orders_total', { result: 'issued', challenge: 'tls-alpn-01' }) ?? 0) === 1, 'A placed the one order');
  await Promise.all([a.stop(5_000), b.stop(5_000), c.stop(5_000)]);
});

t.test('a proxy killed while holding the order lease blocks the others only until it expires, and its late result is refused', async (t) => {
  const name = `killed-${tag}.acme.test`;
  await pointAt(pebble, name, '127.0.0.5');
  const dead = await proxy('d', '127.0.0.4', name, { leaseSeconds: 4 });
  let taken: Record<string, unknown> | undefined;
  for (let i = 0; i < 600 && !taken; i++) {
    taken = acmeLogs(dead, 'acme order lease taken')[0];
    if (!taken) await new Promise((r) => setTimeout(r, 50));
  }
  if (!taken) throw new Error(`D never took the order lease; its acme logs: ${JSON.stringify(dead.logs().filter((l) => l.component === 'acme'))}\n${dead.stderr()}`);
  t.pass('D took the order lease');
  dead.child.kill('SIGKILL');
  await dead.exited;
  const deadToken = Number(taken!.token);
  const store = new ClusterCertificateStore(cluster.client, 'test');
  // The lease D held is still live in the cluster: nobody else may order now.
  t.equal(await store.acquire(name, 60_000), undefined, 'the killed proxy\'s lease still stands right after the kill');

  const e = await proxy('e', '127.0.0.5', name, { leaseSeconds: 4 });
  const atE = await waitServed('127.0.0.5', port, name, root, [e]);
  t.ok(acmeLogs(e, 'acme order lease taken').some((l) => Number(l.token) > deadToken), 'E ordered under a newer fencing token');
  const stored = await store.read(name);
  t.equal(new X509Certificate(stored!.chainPem).serialNumber, atE.serialNumber, 'the cluster holds E\'s certificate');

  // D's result arriving late, under its old token: refused with a clear error, nothing overwritten.
  const late = { name, token: deadToken, renew: async () => {}, publish: async () => {}, release: async () => {} };
  await t.rejects(store.write(late, { ...stored!, orderedAt: new Date().toISOString(), account: 'late' }), {
    code: 'ACME_ERR_FENCED', message: new RegExp(`order lease \\(token ${deadToken}\\) lapsed and another proxy took it over.*nothing was overwritten`),
  });
  const after = await store.read(name);
  t.equal(after?.account, stored!.account, 'the stored certificate is untouched');
  t.equal(new X509Certificate(after!.chainPem).serialNumber, atE.serialNumber);
  await e.stop(5_000);
});

t.test('with workers: 2 each worker is one more proxy of the cluster: one orders, both serve its certificate', async (t) => {
  const name = `workers-${tag}.acme.test`;
  await pointAt(pebble, name, '127.0.0.6');
  const w = await proxy('w', '127.0.0.6', name, { workers: 2 });
  const first = await waitServed('127.0.0.6', port, name, root, [w]);
  // Connections are spread over the workers: wait until 12 in a row get the certificate.
  const deadline = Date.now() + 60_000;
  let streak = 0;
  const serials = new Set<string>();
  while (streak < 12 && Date.now() < deadline) {
    try {
      serials.add((await servedCertificate(port, name, root, { host: '127.0.0.6' })).serialNumber);
      streak++;
    } catch {
      streak = 0;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  t.equal(streak, 12, 'every worker serves the certificate');
  t.same([...serials], [first.serialNumber], 'the same certificate');
  // Both workers may take the lease in turn: the later one finds the stored issue under it and takes
  // it up instead of ordering. What must hold is one order, by one worker.
  const orderers = new Set(acmeLogs(w, 'acme order step: new order').map((l) => l.worker));
  t.equal(orderers.size, 1, 'one worker ordered');
  const takers = acmeLogs(w, 'acme certificate taken up from the store').map((l) => l.worker);
  t.ok(takers.some((x) => !orderers.has(x)), 'the other worker took the certificate up from the cluster');
  t.equal(acmeLogs(w, 'acme order step: new order').length, 1, 'one order was placed');
  await w.stop(5_000);
});

t.test('an http-01 validation reaching a proxy that did not order is answered from the cluster', async (t) => {
  const name = `http-${tag}.acme.test`;
  await pointAt(pebble, name, '127.0.0.8');
  const f = await proxy('f', '127.0.0.8', name, { directory: 'https://127.0.0.1:9/directory', challenge: 'http-01' });
  const g = await proxy('g', '127.0.0.7', name, { challenge: 'http-01' });
  const atF = await waitServed('127.0.0.8', port, name, root, [f, g]);
  const atG = await waitServed('127.0.0.7', port, name, root, [f, g]);
  t.equal(atF.serialNumber, atG.serialNumber, 'both serve the certificate G ordered');
  t.ok(acmeLogs(g, 'acme order step: challenge valid').length >= 1, 'G\'s http-01 challenge was validated at F');
  t.same(acmeLogs(f, 'acme order step: new order'), [], 'F placed no order');
  await Promise.all([f.stop(5_000), g.stop(5_000)]);
});
