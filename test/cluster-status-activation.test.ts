// `cluster status` on a cluster not activated yet says so and what to run: before activation the
// HSMs' states differ by design, and it used to read like a fault ("disagree and nothing shows
// which is current").
import t from 'tap';
import { Supervisor } from '../src/hsm/cluster/supervisor.js';
import type { ClusterStatus } from '../src/hsm/cluster/status.js';
import { TEST_SCRYPT_COST, cliInProcess, tempCluster } from './helpers/hsm-cluster.js';

t.setTimeout(120_000);

t.test('a new 2-HSM cluster: not activated yet, then in sync once activated', async (t) => {
  const r = await tempCluster({ hsms: 2 });
  t.teardown(() => r.cleanup());
  const sup = new Supervisor({ dir: r.dir, scryptCost: TEST_SCRYPT_COST });
  await sup.start();
  t.teardown(() => sup.stop());

  const text = await cliInProcess(['cluster', 'status', '--dir', r.dir]);
  t.error(text.error);
  t.match(text.stdout, new RegExp(`^not activated yet: .*HSMPROXY_PIN=admin:<one-time password> hsmproxy cluster activate --dir ${r.dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'm'));
  t.notMatch(text.stdout, /disagree|unproven/, 'no word of a fault');
  t.match(text.stdout, /hsm-1 .* up .* not activated/);
  const json = JSON.parse((await cliInProcess(['cluster', 'status', '--dir', r.dir, '--json'])).stdout) as ClusterStatus;
  t.equal(json.activated, false);
  t.equal(json.syncUnproven, undefined);

  const act = await cliInProcess(['cluster', 'activate', '--dir', r.dir], { HSMPROXY_PIN: `${r.precoUser}:${r.precoPassword}`, HSMPROXY_NEW_PASSWORD: 'co-password-1' });
  t.error(act.error);
  const after = JSON.parse((await cliInProcess(['cluster', 'status', '--dir', r.dir, '--json'])).stdout) as ClusterStatus;
  t.equal(after.activated, true);
  t.same(after.hsms.map((h) => h.inSync), [true, true], 'activated: both in sync');
  t.notMatch((await cliInProcess(['cluster', 'status', '--dir', r.dir])).stdout, /not activated/);
});
