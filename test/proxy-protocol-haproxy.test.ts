// Two proxies behind a real HAProxy in `mode tcp` with `send-proxy-v2` (and one `send-proxy`, v1):
// curl connects from 127.0.0.77, HAProxy connects to the proxies from 127.0.0.9 (the only address in
// their proxyProtocol.from), and each upstream must see 127.0.0.77 as the client.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { curl } from './helpers/proxy-harness.js';
import { offloadKey, startOffloadFront } from './helpers/offload-front.js';

const haproxy = spawnSync('haproxy', ['-v']).status === 0;
const CLIENT = '127.0.0.77';
const BALANCER = '127.0.0.9';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`haproxy exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`haproxy did not listen on ${port} within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

t.test('HAProxy send-proxy-v2 in front of two proxies: each upstream sees the client\'s address', { skip: haproxy ? false : 'haproxy is not installed (.ci/run installs it)' }, async (t) => {
  const k = await offloadKey(t);
  const pp = `proxyProtocol: { from: [ ${BALANCER}/32 ] }`;
  const a = await startOffloadFront(t, k, pp);
  const b = await startOffloadFront(t, k, pp);
  const [v2Port, v1Port] = [await freePort(), await freePort()];
  const cfg = join(k.dir, 'haproxy.cfg');
  writeFileSync(cfg, `
global
  maxconn 100
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend v2
  bind 127.0.0.1:${v2Port}
  default_backend proxies_v2
backend proxies_v2
  balance roundrobin
  source ${BALANCER}
  server a 127.0.0.1:${a.port} send-proxy-v2
  server b 127.0.0.1:${b.port} send-proxy-v2
frontend v1
  bind 127.0.0.1:${v1Port}
  default_backend proxy_a_v1
backend proxy_a_v1
  source ${BALANCER}
  server a 127.0.0.1:${a.port} send-proxy
`);
  const child = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGTERM'); });
  await waitForPort(v2Port, child, 15_000).catch((err: Error) => { throw new Error(`${err.message}: ${stderr}`); });

  const get = (port: number) => curl(['--cacert', k.cert, '--interface', CLIENT, '--resolve', `localhost:${port}:127.0.0.1`, `https://localhost:${port}/`]);
  const seen: string[] = [];
  for (let i = 0; i < 6; i++) {
    const r = await get(v2Port);
    t.equal(r.status, 200, r.stderr);
    seen.push(String(JSON.parse(r.body || '{}').headers?.['x-forwarded-for']));
  }
  t.same(seen, Array(6).fill(CLIENT), 'every request through HAProxy (v2) reached the upstream as 127.0.0.77');
  const served = (h: typeof a) => h.logs.filter((l) => l.msg === 'request' && l.status === 200).length;
  t.equal(served(a) + served(b), 6);
  t.ok(served(a) >= 1 && served(b) >= 1, `both proxies served (a: ${served(a)}, b: ${served(b)})`);

  const v1 = await get(v1Port);
  t.equal(v1.status, 200, v1.stderr);
  t.equal(JSON.parse(v1.body).headers['x-forwarded-for'], CLIENT, 'send-proxy (v1) too');

  // Bypassing the balancer: the proxies refuse a connection that does not come from it. Counted as a
  // difference: in a parallel run a stray connection from another test may reach a reused port too.
  const notAllowed = async (): Promise<number> => Number(/result="source_not_allowed"\} (\d+)/.exec(await a.registry.getSingleMetricAsString('hsmproxy_client_gate_connections_total'))?.[1] ?? 0);
  const refusedBefore = await notAllowed();
  const direct = await curl(['--cacert', k.cert, '--interface', CLIENT, '--resolve', `localhost:${a.port}:127.0.0.1`, `https://localhost:${a.port}/`]);
  t.not(direct.exitCode, 0, 'a client connecting past HAProxy is refused');
  t.ok(await notAllowed() > refusedBefore, 'the refusal is counted as source_not_allowed');
});
