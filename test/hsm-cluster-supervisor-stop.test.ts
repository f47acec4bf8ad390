// A supervisor that has stopped starts nothing again: a manifest check still in flight when stop()
// ran used to find every child gone and start them all anew, leaving orphan HSM processes that
// held the data directories' locks (the next start then failed with "in use by process N").
import t from 'tap';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';

t.test('reconcile after stop() starts no HSM process', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-supervisor-stop-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const cluster = await startEmbeddedCluster({ dir, hsms: 1, scryptCost: 1024 });
  await cluster.stop();
  await cluster.supervisor.reconcile();
  const pids = [...cluster.supervisor.pids().values()];
  t.teardown(() => { for (const p of pids) process.kill(p, 'SIGKILL'); });
  t.same(pids, [], 'no HSM process was started after stop()');
  t.notOk(existsSync(join(dir, 'hsms', 'hsm-1', 'lock')), 'and nothing holds the HSM\'s data directory');
  const again = await startEmbeddedCluster({ dir });
  t.teardown(() => again.stop());
  t.equal(again.supervisor.pids().size, 1, 'the next start takes the directory');
});
