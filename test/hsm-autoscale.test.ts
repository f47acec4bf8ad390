// Auto-scaling the simulated cluster end to end: an offered sign load above one hsm1.medium's
// capacity makes the cluster grow until p99 is back under the SLO; when the load falls it shrinks
// back to the minimum; no sign fails and every signature verifies, throughout. Loopback only,
// short windows and cool-downs, bounded in time.
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { AutoscaleConfig } from '../src/config/index.js';
import { startScaling } from '../src/app/scaling.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import type { AutoscaleEvent } from '../src/hsm/cluster/autoscale.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { createRegistry, defineMetrics, subscribeMetrics } from '../src/metrics/index.js';
import { TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

// Growing and shrinking take real seconds (HSM processes, 5 s utilisation windows); bounded here.
t.setTimeout(60_000);

// hsm1.medium signs P-256 at 250/s per HSM (8 units, 32 ms each): 350/s needs two.
const SLO_MS = 60;
const OFFERED_PER_SEC = 350;
const MAX_IN_FLIGHT = 64;

const autoscale: AutoscaleConfig = {
  enabled: true, min: 1, max: 3, sloP99Ms: SLO_MS, cooldownMs: 2_000, sustainMs: 1_000, removeAfterMs: 2_000,
  windowMs: 2_000, intervalMs: 250, from: 'auto',
};

t.test('the cluster grows under load until p99 is under the SLO, shrinks back to min when it stops, and no sign fails', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-autoscale-'));
  const cluster = await startEmbeddedCluster({ dir, hsms: 1, profile: 'hsm1.medium', scryptCost: TEST_SCRYPT_COST, node: { healthIntervalMs: 250 } });
  const registry = createRegistry();
  const metrics = defineMetrics(registry);
  const unsubscribe = subscribeMetrics(metrics);
  const events: AutoscaleEvent[] = [];
  const runtime = startScaling({
    client: cluster.client, dir, supervisor: cluster.supervisor, autoscale, metrics, scryptCost: TEST_SCRYPT_COST,
    joinTimeoutMs: 20_000, drainTimeoutMs: 10_000, onAutoscale: (e) => events.push(e),
  });
  t.teardown(async () => {
    await runtime.stop();
    unsubscribe();
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const client = cluster.client;
  const pair = await client.generateKeyPair('ec:p256', { label: 'autoscale', sign: true, verify: true });
  const publicKey = createPublicKey({ key: (await client.exportPublicKey(pair.publicKey.keyId)).pem });

  // An open-loop load: `rate` signs/s, at most MAX_IN_FLIGHT outstanding (a client's pool).
  let rate = OFFERED_PER_SEC;
  let inFlight = 0;
  let ok = 0;
  let unverified = 0;
  const failures: string[] = [];
  const data = randomBytes(32);
  const tick = setInterval(() => {
    const n = Math.round(rate / 100);
    for (let i = 0; i < n && inFlight < MAX_IN_FLIGHT; i++) {
      inFlight++;
      client.sign({ keyId: pair.privateKey.keyId, mechanism: 'ecdsa-sha256', data }).then((sig) => {
        if (verify('sha256', data, publicKey, sig)) ok++;
        else unverified++;
      }, (err: Error) => failures.push(err.message)).finally(() => { inFlight--; });
    }
  }, 10);
  t.teardown(() => clearInterval(tick));

  const members = () => client.stats().length;
  const p99 = () => runtime.monitor.figures(autoscale.windowMs).signP99Ms ?? 0;
  const waitFor = async (what: string, cond: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`${what} within ${ms} ms (members ${members()}, p99 ${p99().toFixed(1)} ms, events ${JSON.stringify(events)})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  // Grow: p99 goes over the SLO on one HSM; HSMs are added until it is back under.
  await waitFor('p99 over the SLO on one HSM', () => p99() > SLO_MS, 10_000);
  t.equal(members(), 1, 'one HSM at first');
  // On a machine whose cores the other test files share, two or three simulated HSMs may still
  // not bring p99 under the SLO (their processes wait for CPU): then the autoscaler must have gone
  // on adding up to max. What is asserted is the autoscaler's decision, not this machine's speed.
  const settled = () => p99() < SLO_MS || members() === autoscale.max;
  await waitFor('grown, and p99 back under the SLO or at max', () => members() >= 2 && client.stats().every((s) => s.inRotation) && settled() && runtime.monitor.figures(autoscale.windowMs).signs > 200, 30_000);
  t.ok(members() >= 2 && members() <= autoscale.max, `grew to ${members()} HSMs (max ${autoscale.max})`);
  t.ok(settled(), `p99 ${p99().toFixed(1)} ms is under the ${SLO_MS} ms SLO, or the cluster grew to max (${members()} HSMs)`);
  t.ok(events.filter((e) => e.action === 'add').every((e) => e.result === 'ok'), 'every add succeeded');

  // Shrink: a trickle of signs continues (drains must not fail them) while utilisation is low.
  rate = 20;
  // The client drops an HSM before its process is stopped: wait for the autoscaler to report the remove.
  await waitFor('shrunk back to min', () => members() === autoscale.min && events.at(-1)?.action === 'remove' && events.at(-1)?.hsms === autoscale.min, 30_000);
  clearInterval(tick);
  await waitFor('load finished', () => inFlight === 0, 10_000);

  t.same(failures, [], 'no sign failed while growing or shrinking');
  t.equal(unverified, 0, 'every signature verifies');
  t.ok(ok > 1000, `${ok} signs made`);
  t.equal((await readManifest(dir)).hsms.length, autoscale.min, 'the manifest lists min HSMs again');
  t.equal(cluster.supervisor.pids().size, autoscale.min, 'the removed HSMs\' processes were stopped');
  const text = await registry.metrics();
  t.match(text, /hsmproxy_cluster_scaling_actions_total\{action="add",result="ok"\} [1-9]/, 'adds are counted');
  t.match(text, /hsmproxy_cluster_scaling_actions_total\{action="remove",result="ok"\} [1-9]/, 'removes are counted');
  t.comment(events.map((e) => `${e.action} ${e.hsm} ${e.result} in ${e.durationMs} ms: ${e.reason}`).join('\n'));
});
