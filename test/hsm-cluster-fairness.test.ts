// Several applications sharing one cluster whose HSMs have hardware capacity (hsm1.medium: 250
// P-256 signs/s per HSM, 8 crypto units): two equal clients get about equal throughput, each
// spread over every HSM, and a light client keeps getting its signatures while a heavy one
// saturates the cluster (the HSM queues are FIFO across connections: no client is starved).
import t from 'tap';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedCluster, type EmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { connectCluster } from '../src/hsm/cluster/membership.js';
import type { ClusterClient } from '../src/hsm/client/cluster-client.js';

t.setTimeout(60_000);

let cluster: EmbeddedCluster;
let dir: string;
let keyId: string;

t.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hsmproxy-fair-'));
  cluster = await startEmbeddedCluster({ dir, hsms: 3, scryptCost: 1024, profile: 'hsm1.medium' });
  keyId = (await cluster.client.generateKeyPair('ec:p256', { label: 'shared-by-apps' })).privateKey.keyId;
});
t.teardown(async () => {
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Load { done: number; failed: number; slowestMs: number }

// `workers` loops signing through `client` until `until`.
function load(client: ClusterClient, workers: number, until: number): Promise<Load> {
  const r: Load = { done: 0, failed: 0, slowestMs: 0 };
  const data = Buffer.from('fair share');
  return Promise.all(Array.from({ length: workers }, async () => {
    while (Date.now() < until) {
      const t0 = Date.now();
      try {
        await client.sign({ keyId, mechanism: 'ecdsa-sha256', data });
        r.done++;
      } catch {
        r.failed++;
      }
      r.slowestMs = Math.max(r.slowestMs, Date.now() - t0);
    }
  })).then(() => r);
}

async function second(): Promise<ClusterClient> {
  return connectCluster(dir, { credentials: cluster.credentials.cu, watch: false });
}

t.test('two clients with the same load get about the same throughput, each from every HSM', async (t) => {
  const other = await second();
  t.teardown(() => other.close());
  const until = Date.now() + 2000;
  // 16 + 16 signs in flight against 3 × 8 crypto units: the HSMs are saturated and queue.
  const [a, b] = await Promise.all([load(cluster.client, 16, until), load(other, 16, until)]);
  const total = a.done + b.done;
  t.equal(a.failed + b.failed, 0, 'no sign failed');
  t.ok(total > 300, `the cluster was busy (${total} signs in 2 s; capacity 750/s)`);
  for (const [name, r] of [['first', a], ['second', b]] as const) {
    const share = r.done / total;
    t.ok(share > 0.35 && share < 0.65, `the ${name} client got ${(share * 100).toFixed(0)}% (${r.done} signs)`);
  }
  for (const [name, c] of [['first', cluster.client], ['second', other]] as const) {
    const served = c.stats().map((s) => s.served);
    t.ok(served.every((n) => n > 0), `the ${name} client used every HSM (${served.join('/')} served)`);
  }
});

t.test('a light client is not starved while a heavy one saturates the cluster', async (t) => {
  const light = await second();
  t.teardown(() => light.close());
  const byHsm = new Map<string, number>();
  const onRequest = (m: unknown): void => {
    const ev = m as { op: string; hsm: string; outcome: string };
    if (ev.op === 'sign' && ev.outcome === 'ok') byHsm.set(ev.hsm, (byHsm.get(ev.hsm) ?? 0) + 1);
  };
  subscribe('hsmproxy:hsm:request', onRequest);
  t.teardown(() => unsubscribe('hsmproxy:hsm:request', onRequest));
  const until = Date.now() + 2000;
  const [heavy, l] = await Promise.all([load(cluster.client, 64, until), load(light, 2, until)]);
  t.equal(heavy.failed + l.failed, 0, 'no sign failed');
  t.ok(heavy.done > 300, `the heavy client kept the cluster busy (${heavy.done} signs)`);
  // FIFO queues give each request in flight the same rate: compare per request in flight (scale-free on a busy box).
  const perSlotLight = l.done / 2;
  const perSlotHeavy = heavy.done / 64;
  t.ok(l.done >= 5 && perSlotLight >= 0.3 * perSlotHeavy, `the light client kept getting signatures (${l.done} in 2 s: ${perSlotLight.toFixed(1)} per request slot vs ${perSlotHeavy.toFixed(1)} for the heavy one)`);
  t.ok(l.slowestMs < 1500, `none of its signs waited long (slowest ${l.slowestMs} ms)`);
  t.same([...byHsm.keys()].sort(), ['hsm-1', 'hsm-2', 'hsm-3'], 'all three HSMs served');
});
