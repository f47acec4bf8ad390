// `/readyz` means the same with `workers: N` as in one process: the proxy is not draining, and
// every serving process has its listeners open with an HSM holding their keys in rotation. Before,
// worker mode built its proxies without the readiness check: the primary answered from its own
// HSM client and a count of workers, and said ready (200) all through a SIGTERM drain.
// Loopback, ephemeral ports, a temp directory; only serve's own children are signalled.
import t from 'tap';
import { startDemoUpstream } from '../src/proxy/index.js';
import { connectTls, devCa, freezeHsms, getOn, getOnce, prepareServeDir, serveYaml, startServe } from './helpers/serve-fixture.js';

const d = await prepareServeDir();
t.teardown(() => d.cleanup());
const upstream = await startDemoUpstream();
t.teardown(() => upstream.close());
const ca = await devCa(d);

type Readyz = { status: number; body: { ready: boolean; reasons: string[] } };

async function readyz(admin: number): Promise<Readyz> {
  const res = await fetch(`http://127.0.0.1:${admin}/readyz`);
  return { status: res.status, body: await res.json() as Readyz['body'] };
}

/** Polls /readyz until it answers `status` (bounded); returns the last answer. */
async function until(admin: number, status: number, ms: number): Promise<Readyz> {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await readyz(admin);
    if (r.status === status || Date.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 100));
  }
}

for (const workers of [1, 2]) {
  t.test(`workers: ${workers}: /readyz is 503 "draining" while SIGTERM drains the requests in flight`, async (t) => {
    const s = await startServe(d, serveYaml(d, upstream.url, `workers: ${workers}`));
    t.teardown(() => s.stop());
    t.equal((await until(s.admin, 200, 15_000)).status, 200, 'ready before the signal');
    // Two slow requests per process (node:cluster hands connections out in turn): each has one to drain.
    const conns = await Promise.all(Array.from({ length: 2 * workers }, () => connectTls(s.port, ca)));
    t.teardown(() => { for (const c of conns) c.destroy(); });
    const slow = conns.map((c) => getOn(c, '/slow?ms=3000'));
    await new Promise((r) => setTimeout(r, 300));
    process.kill(s.child.pid!, 'SIGTERM');
    const draining = await until(s.admin, 503, 2_000);
    t.equal(draining.status, 503, 'a load balancer polling /readyz stops sending traffic at once');
    t.match(draining.body.reasons.join('; '), /draining/);
    t.same(await Promise.all(slow), slow.map(() => 200), 'the requests in flight are still answered');
    t.equal(await s.exited, 0);
  });
}

t.test('workers: 2: /readyz asks each worker, whose own HSM client decides', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url, 'workers: 2'));
  t.teardown(() => s.stop());
  t.equal((await until(s.admin, 200, 15_000)).status, 200, 'ready with both HSMs up');
  const { resume } = await freezeHsms(t, d.data, ['hsm-1', 'hsm-2']); // both run as children of serve

  const down = await until(s.admin, 503, 20_000);
  t.equal(down.status, 503, 'not ready once the workers\' health checks of every HSM failed');
  const reasons = down.body.reasons.join('; ');
  t.match(reasons, /worker [12]: no HSM holding the listeners' keys is in rotation/, 'the reason names the worker and its keys');

  resume();
  const back = await until(s.admin, 200, 30_000);
  t.equal(back.status, 200, 'ready again once the HSMs answer');
  t.same(back.body.reasons, []);
  t.equal(await getOnce(s.port, ca), 200);
});
