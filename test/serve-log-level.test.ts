// The config's log.level governs what serve writes (it was ignored: serve always logged at info),
// unless --log-level or HSMPROXY_LOG_LEVEL overrides it.
import t from 'tap';
import { startDemoUpstream } from '../src/proxy/index.js';
import { devCa, getOnce, prepareServeDir, serveYaml, startServe } from './helpers/serve-fixture.js';

const d = await prepareServeDir();
t.teardown(() => d.cleanup());
const upstream = await startDemoUpstream();
t.teardown(() => upstream.close());
const ca = await devCa(d);

const accessLines = (logs: Array<Record<string, unknown>>) => logs.filter((l) => l.type === 'access').length;

t.test('log: { level: warn } in the config: no access log lines, from the workers either', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url, 'log: { level: warn }\nworkers: 2'));
  t.teardown(() => s.stop());
  t.equal(await getOnce(s.port, ca), 200);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(accessLines(s.logs()), 0);
});

t.test('HSMPROXY_LOG_LEVEL=info overrides the config', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url, 'log: { level: warn }'), { HSMPROXY_LOG_LEVEL: 'info' });
  t.teardown(() => s.stop());
  t.equal(await getOnce(s.port, ca), 200);
  for (let i = 0; i < 30 && accessLines(s.logs()) === 0; i++) await new Promise((r) => setTimeout(r, 100));
  t.equal(accessLines(s.logs()), 1);
});
