// What clients get when upstreams fail: 502 refused, 504 too slow, 503 none healthy.
import t from 'tap';
import net from 'node:net';
import { baseYaml, startHarness } from './helpers/proxy-harness.js';

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

t.test('502 with a clear body when the upstream refuses the connection', async (t) => {
  const port = await closedPort();
  const h = await startHarness(t, baseYaml(`  - upstream: [ "http://127.0.0.1:${port}" ]`));
  const r = await h.curl('/');
  t.equal(r.status, 502);
  t.match(r.body, /^502 Bad Gateway: the upstream server refused or dropped the connection \(request id [0-9a-f-]{36}\)\n$/);
  t.ok(h.logs.some((l) => l.msg === 'upstream request failed' && l.code === 'ECONNREFUSED'), 'the error is logged with its code');
});

t.test('504 when the upstream does not answer within responseMs', async (t) => {
  const h = await startHarness(t, baseYaml('  - { upstream: [ "{{up0}}" ], timeouts: { responseMs: 300 } }'));
  const started = Date.now();
  const r = await h.curl('/slow?ms=5000');
  t.equal(r.status, 504);
  t.match(r.body, /^504 Gateway Timeout: the upstream server did not answer in time/);
  t.ok(Date.now() - started < 4000, 'answered well before the upstream would have');
});

t.test('a route timeout overrides its pool and a fast answer is unaffected', async (t) => {
  const h = await startHarness(t, baseYaml('  - { upstream: slowpool, timeouts: { responseMs: 2000 } }', '  slowpool: { targets: [ "{{up0}}" ], timeouts: { responseMs: 100 } }'));
  t.equal((await h.curl('/slow?ms=400')).status, 200);
});

t.test('a checked pool gets no traffic before its first check passes: a dead upstream is 503 from the first request, a live one 200', async (t) => {
  const port = await closedPort();
  // A long interval: only the check made at start can have decided.
  const check = 'healthCheck: { path: /healthz, intervalMs: 60000, timeoutMs: 500, unhealthyAfter: 2, healthyAfter: 2 }';
  const h = await startHarness(t, baseYaml('  - { host: dead.test, upstream: dead }\n  - upstream: live',
    `  dead: { targets: [ "http://127.0.0.1:${port}" ], ${check} }\n  live: { targets: [ "{{up0}}" ], ${check} }`));
  const dead = await h.curl('/', ['-H', 'Host: dead.test']);
  t.equal(dead.status, 503, 'not 502: the target was never seen healthy');
  t.match(dead.body, /^503 Service Unavailable: no healthy upstream server/);
  t.equal((await h.curl('/')).status, 200, 'one passed check is enough at start (healthyAfter applies after a failure)');
  const metrics = await fetch(`http://127.0.0.1:${h.proxy.adminAddress()!.port}/metrics`).then((r) => r.text());
  t.match(metrics, new RegExp(`hsmproxy_upstream_healthy\\{upstream="dead",target="http://127\\.0\\.0\\.1:${port}"\\} 0`));
  t.match(metrics, /hsmproxy_upstream_healthy\{upstream="live",target="[^"]+"\} 1/);
});

t.test('503 when health checks find no healthy target, and back to 200 when one recovers', async (t) => {
  const port = await closedPort();
  const h = await startHarness(t, baseYaml('  - upstream: checked',
    `  checked: { targets: [ "http://127.0.0.1:${port}" ], healthCheck: { path: /healthz, intervalMs: 100, timeoutMs: 200, unhealthyAfter: 1, healthyAfter: 1 } }`));
  let r = await h.curl('/');
  for (let i = 0; i < 50 && r.status !== 503; i++) {
    await new Promise((res) => setTimeout(res, 100));
    r = await h.curl('/');
  }
  t.equal(r.status, 503);
  t.match(r.body, /^503 Service Unavailable: no healthy upstream server for this route; try again shortly/);
  // Bring a server up on that port: the next checks mark it healthy again.
  const server = net.createServer((s) => s.once('data', () => s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok')));
  await new Promise<void>((res) => server.listen(port, '127.0.0.1', () => res()));
  t.teardown(() => new Promise<void>((res) => server.close(() => res())));
  for (let i = 0; i < 50 && r.status !== 200; i++) {
    await new Promise((res) => setTimeout(res, 100));
    r = await h.curl('/');
  }
  t.equal(r.status, 200, 'recovered target serves again');
});

t.test('a WebSocket to a refusing upstream gets a 502 handshake answer', async (t) => {
  const port = await closedPort();
  const h = await startHarness(t, baseYaml(`  - upstream: [ "http://127.0.0.1:${port}" ]`));
  const r = await h.curl('/ws', ['-H', 'connection: Upgrade', '-H', 'upgrade: websocket', '-H', 'sec-websocket-version: 13', '-H', 'sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==']);
  t.equal(r.status, 502);
});

t.test('a bodiless request refused by one target is retried on another', async (t) => {
  const port = await closedPort();
  const h = await startHarness(t, baseYaml('  - upstream: mixed', `  mixed: { targets: [ "http://127.0.0.1:${port}", "{{up0}}" ] }`));
  for (let i = 0; i < 4; i++) {
    const r = await h.curl('/');
    t.equal(r.status, 200, `request ${i} served`);
  }
  t.ok(h.logs.some((l) => l.msg === 'upstream refused, trying another target'), 'the retry is logged');
});

t.test('a request with a body is not retried after a refusal', async (t) => {
  const port = await closedPort();
  const h = await startHarness(t, baseYaml('  - upstream: mixed', `  mixed: { targets: [ "http://127.0.0.1:${port}", "{{up0}}" ] }`));
  const statuses: number[] = [];
  for (let i = 0; i < 2; i++) statuses.push((await h.curl('/', ['-d', 'payload'])).status);
  t.same(statuses.sort(), [200, 502], 'round-robin: one reaches the live target, one gets 502');
});
