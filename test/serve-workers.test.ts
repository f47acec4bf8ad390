// `workers: N`: `hsmproxy serve` runs N worker processes (node:cluster) with HSM-held keys, each
// with its own cluster client; connections spread over them, the admin /metrics sums them, a
// killed worker is replaced, SIGHUP reloads every worker and SIGTERM stops them all; a session
// ticket resumes on any worker, the replacement of a killed one included.
import t from 'tap';
import { execFile } from 'node:child_process';
import { startDemoUpstream } from '../src/proxy/index.js';
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { connectTls, devCa, getOnce, prepareServeDir, reissueEcdsa, sample, serveYaml, startServe } from './helpers/serve-fixture.js';

const d = await prepareServeDir();
t.teardown(() => d.cleanup());
const upstream = await startDemoUpstream();
t.teardown(() => upstream.close());
const ca = await devCa(d);

function childPids(pid: number): Promise<number[]> {
  return new Promise((resolve) => execFile('pgrep', ['-P', String(pid)], (_err, out) => resolve(out.split('\n').filter(Boolean).map(Number))));
}

const workerPids = (logs: Array<Record<string, unknown>>) => new Set(logs.filter((l) => l.type === 'access').map((l) => l.pid as number));

/** One GET on a new connection, offering `session` if given; its status, whether it resumed, and the ticket it got. */
async function get(port: number, session?: Buffer): Promise<{ status: number; resumed: boolean; session?: Buffer }> {
  const c = await connectTls(port, ca, session ? { session } : {});
  let ticket: Buffer | undefined;
  c.on('session', (b: Buffer) => { ticket = b; });
  const resumed = c.isSessionReused();
  return new Promise((resolve, reject) => {
    let buf = '';
    c.setEncoding('utf8').on('data', (x: string) => { buf += x; });
    c.once('end', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(buf)?.[1] ?? 0), resumed, ...(ticket ? { session: ticket } : {}) }));
    c.once('error', reject);
    c.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
  });
}

t.test('workers: 2 serves HSM-backed HTTPS from two processes and /metrics adds them up', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url, 'workers: 2'));
  t.teardown(() => s.stop());
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) statuses.push(await getOnce(s.port, ca));
  t.same(statuses, Array(12).fill(200), 'every request on a new connection succeeds');
  await new Promise((r) => setTimeout(r, 300)); // access log lines are written asynchronously
  t.equal(workerPids(s.logs()).size, 2, 'the connections were served by two worker processes');
  const metrics = await fetch(`http://127.0.0.1:${s.admin}/metrics`).then((r) => r.text());
  t.equal(sample(metrics, 'hsmproxy_tls_handshakes_total', { result: 'ok' }), 12, 'handshakes of both workers are summed');
  t.ok((sample(metrics, 'hsmproxy_hsm_request_duration_seconds_count', { op: 'sign' }) ?? 0) >= 1, 'HSM signatures of the workers are measured');
  t.equal(sample(metrics, 'hsmproxy_hsm_up', { hsm: 'hsm-1' }), 1, 'an HSM both workers reach is up once (1), not once per worker, from the start');
  const ready = await fetch(`http://127.0.0.1:${s.admin}/readyz`);
  t.equal(ready.status, 200, '/readyz on the primary: every worker serves and an HSM is up');
  // The advisor runs in the primary on the signatures the workers forward.
  let scaling: { windows: { '1m': { signs: number } }; recommendation: { currentHsms: number } } | undefined;
  for (const until = Date.now() + 5_000; Date.now() < until && !(scaling && scaling.windows['1m'].signs >= 12);) {
    scaling = await fetch(`http://127.0.0.1:${s.admin}/scaling`).then((r) => r.json()) as typeof scaling;
    if (!(scaling && scaling.windows['1m'].signs >= 12)) await new Promise((r) => setTimeout(r, 200));
  }
  t.ok(scaling && scaling.windows['1m'].signs >= 12, `/scaling counts the workers' signatures (${scaling?.windows['1m'].signs})`);
  t.equal(scaling?.recommendation.currentHsms, 2);
  const after = await fetch(`http://127.0.0.1:${s.admin}/metrics`).then((r) => r.text());
  t.equal(sample(after, 'hsmproxy_cluster_recommended_hsms'), 2, 'the advisor\'s gauges come from the primary, once');
  t.equal(after.split('\n').filter((l) => l.startsWith('# TYPE hsmproxy_cluster_recommended_hsms ')).length, 1);
  t.equal(await s.stop(), 0, 'SIGTERM stops the workers and the primary exits 0');
});

t.test('a session ticket issued by one worker resumes on the others (they share each epoch\'s key)', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url, 'workers: 2'));
  t.teardown(() => s.stop());
  const first = await get(s.port);
  t.ok(first.session, 'the first connection got a ticket');
  const before = s.logs().filter((l) => l.type === 'access').length;
  const again: boolean[] = [];
  for (let i = 0; i < 8; i++) again.push((await get(s.port, first.session)).resumed);
  t.same(again, Array(8).fill(true), 'every connection offering the ticket resumed');
  await new Promise((r) => setTimeout(r, 300)); // access log lines are written asynchronously
  t.equal(workerPids(s.logs().filter((l) => l.type === 'access').slice(before)).size, 2, 'the resumed connections were served by both workers');
});

t.test('a worker that dies is replaced and service continues', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url, 'workers: 2'));
  t.teardown(() => s.stop());
  const ticket = (await get(s.port)).session;
  t.ok(ticket, 'a ticket from before the replacement');
  const before = await childPids(s.child.pid!);
  const worker = (await Promise.all(before.map(async (p) => ({ p, grand: await childPids(p) })))).find((x) => x.grand.length === 0)?.p;
  t.ok(worker, 'found a worker process (a child without HSM children of its own)');
  process.kill(worker!, 'SIGKILL');
  const deadline = Date.now() + 20_000;
  let ready = 0;
  while (Date.now() < deadline) {
    ready = (await fetch(`http://127.0.0.1:${s.admin}/readyz`)).status;
    const now = await childPids(s.child.pid!);
    if (ready === 200 && now.length === before.length && !now.includes(worker!)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  t.equal(ready, 200, 'ready again once the replacement serves');
  const after: Array<{ status: number; resumed: boolean }> = [];
  for (let i = 0; i < 6; i++) after.push(await get(s.port, ticket));
  t.same(after.map((r) => r.status), Array(6).fill(200));
  t.same(after.map((r) => r.resumed), Array(6).fill(true), 'the replacement was given the current ticket keys: the old ticket resumes on every worker');
});

t.test('SIGHUP reloads every worker: all new connections get the reissued certificate', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url, 'workers: 2'));
  t.teardown(() => s.stop());
  const pem = await reissueEcdsa(d);
  const previous = await readFile(d.pki.ecdsaChain, 'utf8');
  t.teardown(() => writeFile(d.pki.ecdsaChain, previous));
  await writeFile(d.pki.ecdsaChain, pem);
  process.kill(s.child.pid!, 'SIGHUP');
  const until = Date.now() + 15_000;
  while (s.logs().filter((l) => l.msg === 'configuration reloaded' && l.worker !== undefined).length < 2 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(s.logs().filter((l) => l.msg === 'configuration reloaded' && l.worker !== undefined).length, 2, 'both workers reloaded');
  const want = new X509Certificate(pem).serialNumber;
  const serials = new Set<string>();
  for (let i = 0; i < 8; i++) {
    const c = await connectTls(s.port, Buffer.concat([ca, Buffer.from(pem)]));
    serials.add(c.getPeerX509Certificate()!.serialNumber);
    c.destroy();
  }
  t.same([...serials], [want], 'every connection, whichever worker took it, gets the new certificate');
});

t.test('workers: auto starts one worker per CPU', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url, 'workers: auto'));
  t.teardown(() => s.stop());
  const { availableParallelism } = await import('node:os');
  const n = availableParallelism();
  t.match(s.stderr(), n > 1 ? `${n} worker processes share the listening ports` : /hsmproxy is serving/);
  t.equal(await getOnce(s.port, ca), 200);
});
