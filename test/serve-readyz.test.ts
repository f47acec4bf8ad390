// `/readyz` of `hsmproxy serve` on the embedded cluster means "certificates loaded and at least one
// HSM holding their keys is up": with every HSM frozen (SIGSTOP: the supervisor sees no exit, so
// nothing restarts them) it turns 503 with a reason naming each HSM's state, and 200 again as soon
// as one of them answers. Loopback, ephemeral ports, a temp directory; only serve's own children
// are signalled, and all of them are continued on the way out.
import t from 'tap';
import { startDemoUpstream } from '../src/proxy/index.js';
import { devCa, freezeHsms, getOnce, prepareServeDir, serveYaml, startServe } from './helpers/serve-fixture.js';

const d = await prepareServeDir();
t.teardown(() => d.cleanup());
const upstream = await startDemoUpstream();
t.teardown(() => upstream.close());
const ca = await devCa(d);


async function readyz(admin: number): Promise<{ status: number; body: { ready: boolean; reasons: string[] } }> {
  const res = await fetch(`http://127.0.0.1:${admin}/readyz`);
  return { status: res.status, body: await res.json() as { ready: boolean; reasons: string[] } };
}

/** Polls /readyz until it answers `status` (bounded); returns the last answer. */
async function until(admin: number, status: number, ms: number): Promise<{ status: number; body: { ready: boolean; reasons: string[] } }> {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await readyz(admin);
    if (r.status === status || Date.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 100));
  }
}

t.test('/readyz is 503 with a reason while no HSM holding the keys answers, 200 once one is back', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url));
  t.teardown(() => s.stop());
  t.equal((await readyz(s.admin)).status, 200, 'ready with both HSMs up');
  t.equal(await getOnce(s.port, ca), 200);

  const { resume } = await freezeHsms(t, d.data, ['hsm-1', 'hsm-2']); // both run as children of serve

  const down = await until(s.admin, 503, 15_000);
  t.equal(down.status, 503, 'not ready once the health checks of every HSM failed');
  t.equal(down.body.ready, false);
  t.match(down.body.reasons.join('; '), /no HSM holding the listeners' keys is in rotation \(hsm-1 [a-z ]+, hsm-2 [a-z ]+\)/, 'the reason names the keys and each HSM\'s state');

  resume('hsm-2');
  const back = await until(s.admin, 200, 30_000);
  t.equal(back.status, 200, 'ready again with one HSM back (hsm-1 still frozen)');
  t.same(back.body.reasons, []);
  t.equal(await getOnce(s.port, ca), 200, 'and a new connection is served');
  resume('hsm-1');
});
