// `hsmproxy serve` with 2 HSMs under a load of requests on new connections (each a full
// handshake signed in the HSM): kill -9 one HSM and clients see no failed handshake, while
// `hsmproxy_hsm_up` for it goes to 0 and back to 1 once the embedded supervisor restarted it.
import t from 'tap';
import { startDemoUpstream } from '../src/proxy/index.js';
import { devCa, getOnce, prepareServeDir, hsmPid, sample, serveYaml, startServe } from './helpers/serve-fixture.js';

const d = await prepareServeDir();
t.teardown(() => d.cleanup());
const upstream = await startDemoUpstream();
t.teardown(() => upstream.close());
const ca = await devCa(d);


t.test('kill -9 of one HSM under load: no failed handshake, hsm_up goes 0 and back to 1', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url));
  t.teardown(() => s.stop());
  const metrics = () => fetch(`http://127.0.0.1:${s.admin}/metrics`).then((r) => r.text());
  const upOf = async (hsm: string) => sample(await metrics(), 'hsmproxy_hsm_up', { hsm });

  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  const deadline = Date.now() + 40_000;
  // Three clients in a loop, each request on a new connection, so each needs an HSM signature.
  const load = Array.from({ length: 3 }, async () => {
    while (!stop && Date.now() < deadline && ok + failures.length < 5_000) {
      try {
        const status = await getOnce(s.port, ca);
        if (status === 200) ok++;
        else failures.push(`HTTP ${status}`);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  });

  while (ok < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.equal(await upOf('hsm-2'), 1, 'hsm-2 is up before (published from the start, not only after a health check)');
  t.ok((sample(await metrics(), 'hsmproxy_hsm_request_duration_seconds_count', { op: 'sign', hsm: 'hsm-2' }) ?? 0) > 0, 'hsm-2 was taking signatures when killed');
  const victim = await hsmPid(d.data, 'hsm-2');
  t.ok(victim, 'hsm-2 runs as a child process');
  const okAtKill = ok;
  process.kill(victim!, 'SIGKILL');

  let sawDown = false;
  for (const until = Date.now() + 10_000; Date.now() < until && !sawDown;) {
    sawDown = (await upOf('hsm-2')) === 0;
    if (!sawDown) await new Promise((r) => setTimeout(r, 20));
  }
  t.ok(sawDown, 'hsmproxy_hsm_up{hsm="hsm-2"} went to 0');
  let backUp = false;
  for (const until = Date.now() + 20_000; Date.now() < until && !backUp;) {
    backUp = (await upOf('hsm-2')) === 1;
    if (!backUp) await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(backUp, 'and back to 1 after the supervisor restarted it');
  t.not(await hsmPid(d.data, 'hsm-2'), victim, 'a new hsm-2 process');
  const okAtReturn = ok;
  while (ok < okAtReturn + 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  stop = true;
  await Promise.all(load);
  t.ok(ok > okAtKill + 20, `requests kept succeeding across the kill (${ok - okAtKill} after it)`);
  t.same(failures, [], `no failed handshake or request (${ok} succeeded)`);
  const text = await metrics();
  t.ok((sample(text, 'hsmproxy_hsm_request_duration_seconds_count', { op: 'sign', hsm: 'hsm-1' }) ?? 0) > 0, 'hsm-1 signed');
  t.equal(sample(text, 'hsmproxy_tls_handshakes_total', { result: 'sign_error' }) ?? 0, 0, 'no handshake failed for want of a signature');
});
