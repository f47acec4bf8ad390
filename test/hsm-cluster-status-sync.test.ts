// `cluster status`'s IN SYNC column follows the cluster client's rule (client/current.ts) over the
// manifest's members, not a majority of whoever answered: with a peer unreachable and the two
// that answer disagreeing, nothing is proven and status says so (human and --json).
import t from 'tap';
import { startNode } from '../src/hsm/cluster/run-node.js';
import { applySyncVerdict, type HsmStatus } from '../src/hsm/cluster/status.js';
import { readManifest, writeManifest } from '../src/hsm/cluster/manifest.js';
import { activate, cliInProcess, tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

const up = (id: string, digest: string, version: number): HsmStatus => ({ id, address: `127.0.0.1:${id}`, up: true, digest, version });

t.test('the verdict is the client rule: every HSM answered, a tie goes to the higher version (not the first in the manifest)', async (t) => {
  const hsms = [up('hsm-1', 'aaa', 3), up('hsm-2', 'bbb', 7)];
  t.equal(applySyncVerdict(hsms, ['hsm-1', 'hsm-2']), undefined);
  t.same(hsms.map((h) => [h.id, h.inSync]), [['hsm-1', false], ['hsm-2', true]]);
});

t.test('a strict majority of the manifest is proven; a down HSM has no verdict', async (t) => {
  const hsms = [up('hsm-1', 'aaa', 1), up('hsm-2', 'aaa', 1), { id: 'hsm-3', address: 'x', up: false }];
  t.equal(applySyncVerdict(hsms, ['hsm-1', 'hsm-2', 'hsm-3']), undefined);
  t.same(hsms.map((h) => h.inSync), [true, true, undefined]);
});

t.test('a lone HSM with its peer down is not called in sync', async (t) => {
  const hsms = [up('hsm-1', 'aaa', 5), { id: 'hsm-2', address: 'x', up: false }];
  t.match(applySyncVerdict(hsms, ['hsm-1', 'hsm-2']), /hsm-1 cannot prove it holds the cluster's latest state while hsm-2 is unreachable/);
  t.equal(hsms[0]!.inSync, undefined);
});

t.test('real cluster of 3, hsm-3 down, hsm-1 and hsm-2 disagree: status says unproven, human and --json', async (t) => {
  const cluster = await tempCluster({ hsms: 3 });
  const nodes = await Promise.all(['hsm-1', 'hsm-2'].map((hsmId) => startNode({ dir: cluster.dir, hsmId, scryptCost: TEST_SCRYPT_COST, log: () => undefined })));
  t.teardown(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await cluster.cleanup();
  });
  // Activated one by one, each with its own CU: two different states. The manifest says activated,
  // as after `cluster activate` (before activation status gives no verdict: states differ by design).
  await activate(cluster, nodes[0]!.port, 'alice');
  await activate(cluster, nodes[1]!.port, 'bob');
  await writeManifest(cluster.dir, { ...await readManifest(cluster.dir), activated: true });

  const json = await cliInProcess(['cluster', 'status', '--dir', cluster.dir, '--json']);
  t.error(json.error);
  const s = JSON.parse(json.stdout) as { hsms: Array<{ id: string; up: boolean; inSync?: boolean }>; syncUnproven?: string };
  t.same(s.hsms.map((h) => [h.id, h.up, h.inSync]), [['hsm-1', true, undefined], ['hsm-2', true, undefined], ['hsm-3', false, undefined]], 'nobody is called in sync (the old majority-by-order said hsm-1)');
  t.match(s.syncUnproven, /cannot prove .*hsm-3 is unreachable/);

  const human = await cliInProcess(['cluster', 'status', '--dir', cluster.dir]);
  t.error(human.error);
  t.match(human.stdout, /hsm-1 .* sync unproven/);
  t.match(human.stdout, /hsm-2 .* sync unproven/);
  t.notMatch(human.stdout, / in sync {2}|OUT OF SYNC/);
  t.match(human.stdout, /in sync: unproven: .*hsm-3 is unreachable/);
});
