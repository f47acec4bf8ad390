// The autoscaler's two actions on a real embedded cluster: an add cloned from the latest backup
// is resynced (keys made after the backup) before it serves; a remove drains the requests in
// flight on the leaving HSM (none fails) and refuses to go below the minimum; the decision loop
// acts on what the decision source says. Loopback, hsm1.medium so signs take ~32 ms.
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Autoscaler, type AutoscaleEvent, type ScalingDecision } from '../src/hsm/cluster/autoscale.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { backupCluster } from '../src/hsm/cluster/lifecycle.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

t.test('add from the latest backup resyncs the new HSM; remove drains in-flight signs and respects the minimum', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-autoscale-actions-'));
  const cluster = await startEmbeddedCluster({ dir, hsms: 1, profile: 'hsm1.medium', scryptCost: TEST_SCRYPT_COST, node: { healthIntervalMs: 250 } });
  t.teardown(async () => {
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const client = cluster.client;
  const before = await client.generateKeyPair('ec:p256', { label: 'before-backup', sign: true, verify: true });
  await backupCluster(dir);
  // Made after the backup: the new HSM only has it if the sync gate resynced it.
  const after = await client.generateKeyPair('ec:p256', { label: 'after-backup', sign: true, verify: true });

  let decision: ScalingDecision = { action: 'hold', count: 0, reason: 'hold' };
  const events: AutoscaleEvent[] = [];
  const scaler = new Autoscaler({
    dir, client, supervisor: cluster.supervisor, decide: () => decision, min: 1, intervalMs: 100, scryptCost: TEST_SCRYPT_COST,
    joinTimeoutMs: 20_000, onEvent: (e) => events.push(e),
  });

  decision = { action: 'add', count: 1, reason: 'add 1 HSM: test' };
  const [added] = await scaler.step();
  t.match(added, { action: 'add', hsm: 'hsm-2', result: 'ok', from: 'backup', hsms: 2, reason: 'add 1 HSM: test' });
  t.ok(client.node('hsm-2')?.inRotation, 'the new HSM serves');
  const labels = (await client.node('hsm-2')!.currentLink!.findKeys({ class: 'private' })).map((k) => k.label).sort();
  t.same(labels, ['after-backup', 'before-backup'], 'keys made after the backup reached it before it served');
  t.ok(cluster.supervisor.pids().has('hsm-2'), 'the supervisor runs it');

  // Remove while signs are in flight on both HSMs: the leaving one answers its own first.
  const pub = createPublicKey({ key: (await client.exportPublicKey(before.publicKey.keyId)).pem });
  const data = randomBytes(32);
  const signs = Array.from({ length: 60 }, (_, i) => client.sign({ keyId: (i % 2 ? after : before).privateKey.keyId, mechanism: 'ecdsa-sha256', data }).then((sig) => ({ i, sig })));
  await new Promise((r) => setTimeout(r, 5));
  t.ok(client.node('hsm-2')!.inFlight > 0, 'hsm-2 has requests in flight when the remove starts');
  decision = { action: 'remove', count: 1, reason: 'remove 1 HSM: test' };
  const [removed] = await scaler.step();
  const results = await Promise.allSettled(signs);
  t.equal(results.filter((r) => r.status === 'rejected').length, 0, 'no sign failed during the drain');
  for (const r of results) if (r.status === 'fulfilled' && r.value.i % 2 === 0) t.ok(verify('sha256', data, pub, r.value.sig), `signature ${r.value.i} verifies`);
  t.match(removed, { action: 'remove', hsm: 'hsm-2', result: 'ok', hsms: 1 });
  t.same((await readManifest(dir)).hsms.map((h) => h.id), ['hsm-1']);
  t.same(client.stats().map((s) => s.hsm), ['hsm-1'], 'the client dropped it');
  t.notOk(cluster.supervisor.pids().has('hsm-2'), 'its process was stopped');

  const [refused] = await scaler.step();
  t.match(refused, { action: 'remove', result: 'failed', hsms: 1 });
  t.match(refused!.error, /removing one would leave fewer than the minimum of 1/);
  t.equal(events.length, 3, 'every action reached onEvent');

  // The loop: it asks every interval and acts; stop() waits for an action under way.
  decision = { action: 'add', count: 1, reason: 'add 1 HSM: loop' };
  const seen = events.length;
  scaler.start();
  const end = Date.now() + 20_000;
  while (events.length === seen && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  decision = { action: 'hold', count: 0, reason: 'hold' };
  await scaler.stop();
  t.match(events[seen], { action: 'add', result: 'ok', hsms: 2 });
  t.equal((await readManifest(dir)).hsms.length, 2, 'one add, then holds');
});
