// Graceful shutdown and live reload: in-flight requests finish, established connections survive.
import t from 'tap';
import https from 'node:https';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import WebSocket from 'ws';
import { ReloadRefusedError } from '../src/proxy/index.js';
import { baseYaml, startHarness, type Harness } from './helpers/proxy-harness.js';
import { issue } from './helpers/proxy-certs.js';

interface Got { status: number; body: string; serial: string; reused: boolean }

/** GET over `agent` (keep-alive), reporting the certificate the connection was set up with. */
function get(h: Harness, agent: https.Agent, path: string): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', servername: 'localhost', port: h.port, path, agent, ca: readFileSync(h.ca), headers: { host: 'localhost' } }, (res) => {
      let body = '';
      const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber;
      res.setEncoding('utf8').on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode!, body, serial, reused: req.reusedSocket }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
  });
}

const routeYaml = (up: string) => baseYaml(`  - upstream: [ "{{${up}}}" ]`);

/** Resolves once the proxy has a request in flight (a fixed sleep is too short on a loaded machine). */
async function requestInFlight(h: Harness): Promise<void> {
  const gauge = h.registry.getSingleMetric('hsmproxy_http_requests_in_flight');
  for (let i = 0; i < 400; i++) {
    if (((await gauge?.get())?.values[0]?.value ?? 0) >= 1) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('no request reached the proxy within 10 s');
}

t.test('shutdown lets an in-flight slow request finish, then refuses new connections', async (t) => {
  const h = await startHarness(t, routeYaml('up0'));
  const slow = h.curl('/slow?ms=800');
  await requestInFlight(h);
  const report = await h.proxy.shutdown(5000);
  const r = await slow;
  t.equal(r.status, 200, 'the in-flight request completed');
  t.equal(report.drained, true);
  t.equal(report.forcedConnections, 0);
  const after = await h.curl('/');
  t.equal(after.exitCode, 7, 'new connections are refused (curl: failed to connect)');
});

t.test('shutdown destroys a request that outlasts the deadline', async (t) => {
  const h = await startHarness(t, routeYaml('up0'));
  const slow = h.curl('/slow?ms=10000');
  await requestInFlight(h);
  const report = await h.proxy.shutdown(300);
  t.equal(report.drained, false);
  t.equal(report.forcedConnections, 1);
  t.ok(report.durationMs < 3000, `returned soon after the deadline (${report.durationMs} ms)`);
  t.not((await slow).status, 200, 'the client saw the connection end, not a response');
});

t.test('idle keep-alive connections do not hold up shutdown', async (t) => {
  const h = await startHarness(t, routeYaml('up0'));
  const agent = new https.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  t.equal((await get(h, agent, '/')).status, 200);
  const report = await h.proxy.shutdown(5000);
  t.equal(report.drained, true);
  t.ok(report.durationMs < 2000, `idle connection closed promptly (${report.durationMs} ms)`);
});

t.test('reload serves a new certificate to new connections while an old connection stays open', async (t) => {
  const h = await startHarness(t, routeYaml('up0'));
  const old = new https.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => old.destroy());
  const before = await get(h, old, '/');
  const next = issue(h.dir, 'renewed', ['localhost', '127.0.0.1']);
  await h.proxy.reload(h.config(routeYaml('up0').replace('{{cert}}', next.cert).replace('{{key}}', next.key)));
  const sameConn = await get(h, old, '/');
  t.equal(sameConn.status, 200);
  t.equal(sameConn.reused, true, 'the established connection was reused, not dropped');
  t.equal(sameConn.serial, before.serial, 'and still carries the old certificate');
  const fresh = new https.Agent({ keepAlive: false });
  const newConn = await get(h, fresh, '/');
  t.equal(newConn.status, 200);
  t.equal(newConn.serial, next.serial, 'a new connection gets the new certificate');
  t.not(newConn.serial, before.serial);
});

t.test('a reload with an unusable certificate is refused and the old one keeps serving', async (t) => {
  const h = await startHarness(t, routeYaml('up0'), { upstreamCount: 2 });
  // A fresh agent per request: no TLS session resumption, so each connection shows its certificate.
  const before = await get(h, new https.Agent(), '/');
  const broken = join(h.dir, 'broken.pem');
  writeFileSync(broken, 'not a certificate\n');
  const bad = h.config(routeYaml('up1').replace('{{cert}}', broken));
  await t.rejects(h.proxy.reload(bad), ReloadRefusedError);
  await t.rejects(h.proxy.reload(bad), { code: 'PROXY_ERR_RELOAD_REFUSED', message: /still serving the previous configuration: listener "main": .*broken\.pem is not a PEM certificate/ });
  const after = await get(h, new https.Agent(), '/');
  t.equal(after.status, 200);
  t.equal(after.serial, before.serial, 'same certificate as before');
  t.equal(JSON.parse(after.body).upstream, 'up0', 'routes were not swapped either');
});

t.test('reload switches routes for the next request', async (t) => {
  const h = await startHarness(t, routeYaml('up0'), { upstreamCount: 2 });
  t.equal(JSON.parse((await h.curl('/')).body).upstream, 'up0');
  await h.proxy.reload(h.config(routeYaml('up1')));
  t.equal(JSON.parse((await h.curl('/')).body).upstream, 'up1');
  t.ok(h.logs.some((l) => l.msg === 'configuration reloaded'));
});

t.test('reload and start are refused on a stopped proxy', async (t) => {
  const h = await startHarness(t, routeYaml('up0'));
  await h.proxy.shutdown(100);
  await t.rejects(h.proxy.reload(h.proxy.config), { code: 'PROXY_ERR_STATE' });
  await t.rejects(h.proxy.start(), { code: 'PROXY_ERR_STATE' });
});

t.test('an open WebSocket keeps working across a reload', async (t) => {
  const h = await startHarness(t, routeYaml('up0'), { upstreamCount: 2 });
  const ws = new WebSocket(`wss://localhost:${h.port}/ws`, { ca: readFileSync(h.ca) });
  t.teardown(() => ws.terminate());
  const echo = (text: string) => new Promise<string>((resolve, reject) => {
    ws.once('message', (d) => resolve(String(d)));
    ws.once('error', reject);
    ws.send(text);
  });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  t.equal(await echo('before'), 'before');
  await h.proxy.reload(h.config(routeYaml('up1')));
  t.equal(await echo('after'), 'after', 'same connection, still echoing');
  t.equal(JSON.parse((await h.curl('/')).body).upstream, 'up1', 'while new requests use the new routes');
});
