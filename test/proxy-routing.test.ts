// Routing by Host (exact, then wildcard, then any host) and path prefix, and balancing in a pool.
import t from 'tap';
import { parseConfig } from '../src/config/index.js';
import { hostOf, Router } from '../src/proxy/index.js';
import { baseYaml, startHarness } from './helpers/proxy-harness.js';

const routes = parseConfig(`
listeners: [{ port: 1, certificates: [{ cert: a, key: b }] }]
routes:
  - { name: api-v2, host: api.example.com, pathPrefix: /v2, upstream: [http://127.0.0.1:1] }
  - { name: api, host: api.example.com, upstream: [http://127.0.0.1:1] }
  - { name: wild, host: '*.example.com', upstream: [http://127.0.0.1:1] }
  - { name: deep-wild, host: '*.eu.example.com', upstream: [http://127.0.0.1:1] }
  - { name: static, pathPrefix: /static/, upstream: [http://127.0.0.1:1] }
  - { name: default, upstream: [http://127.0.0.1:1] }
`, { checkFiles: false }).routes;
const router = new Router(routes);
const name = (host: string, path: string) => router.match(host, path)?.name;

t.test('an exact host beats a wildcard', async (t) => {
  t.equal(name('api.example.com', '/x'), 'api');
  t.equal(name('API.Example.com:8443', '/x'), 'api', 'case and port do not matter');
});

t.test('the longest path prefix wins within a host, on segment boundaries', async (t) => {
  t.equal(name('api.example.com', '/v2/users'), 'api-v2');
  t.equal(name('api.example.com', '/v2'), 'api-v2');
  t.equal(name('api.example.com', '/v2?q=1'), 'api-v2');
  t.equal(name('api.example.com', '/v20'), 'api', '/v20 is not under /v2');
});

t.test('the most specific wildcard matches, at any depth, but not the bare domain', async (t) => {
  t.equal(name('shop.example.com', '/'), 'wild');
  t.equal(name('a.b.example.com', '/'), 'wild');
  t.equal(name('x.eu.example.com', '/'), 'deep-wild');
  t.equal(name('example.com', '/'), 'default');
});

t.test('host-less routes catch the rest, by prefix', async (t) => {
  t.equal(name('other.org', '/static/app.js'), 'static');
  t.equal(name('other.org', '/'), 'default');
  t.equal(name('', '/'), 'default', 'a request without Host still routes');
});

t.test('no route for an unmatched host when there is no host-less route', async (t) => {
  t.equal(new Router(routes.slice(0, 2)).match('other.org', '/'), undefined);
});

t.test('hostOf strips ports and IPv6 brackets', async (t) => {
  t.equal(hostOf('[::1]:8443'), '::1');
  t.equal(hostOf('Example.COM.'), 'example.com');
  t.equal(hostOf(undefined), '');
});

t.test('requests reach the upstream of their route, by Host and path (curl)', async (t) => {
  const h = await startHarness(t, baseYaml(`
  - { host: api.example.com, upstream: [ "{{up0}}" ] }
  - { host: '*.test.local', upstream: [ "{{up1}}" ] }
  - { pathPrefix: /two, upstream: [ "{{up1}}" ] }
  - { upstream: [ "{{up2}}" ] }`), { upstreamCount: 3 });
  const via = async (host: string, path: string) => JSON.parse((await h.curl(path, [], host)).body).upstream;
  t.equal(await via('api.example.com', '/'), 'up0');
  t.equal(await via('a.test.local', '/'), 'up1');
  t.equal(await via('localhost', '/two/x'), 'up1');
  t.equal(await via('localhost', '/'), 'up2');
});

t.test('round-robin spreads requests over every target of a pool', async (t) => {
  const h = await startHarness(t, baseYaml('  - upstream: rr', `  rr: { targets: [ "{{up0}}", "{{up1}}" ], balance: round-robin }`), { upstreamCount: 2 });
  const seen: string[] = [];
  for (let i = 0; i < 4; i++) seen.push(JSON.parse((await h.curl('/')).body).upstream);
  t.same(seen.sort(), ['up0', 'up0', 'up1', 'up1']);
});

t.test('least-connections sends new requests away from a busy target', async (t) => {
  const h = await startHarness(t, baseYaml('  - upstream: lc', `  lc: { targets: [ "{{up0}}", "{{up1}}" ], balance: least-connections }`), { upstreamCount: 2 });
  // Occupy one target with a slow request, then the next three must all go to the other.
  const slow = h.curl('/slow?ms=1500');
  await new Promise((r) => setTimeout(r, 300));
  const quick: string[] = [];
  for (let i = 0; i < 3; i++) quick.push(JSON.parse((await h.curl('/')).body).upstream);
  const busy = JSON.parse((await slow).body).upstream;
  t.equal(quick.filter((u) => u === busy).length, 0, `all quick requests avoided ${busy}`);
});
