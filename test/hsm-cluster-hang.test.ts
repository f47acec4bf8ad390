// An HSM that stops answering without closing its connections (its process frozen with SIGSTOP:
// TCP stays up, nothing comes back) — the failure a crash test does not show. The client's
// health check deadline takes it out of rotation, the signs stuck on it are repeated on the
// other HSMs, callers see no failure, `cluster status` reports it down, and once it answers
// again it is admitted back and takes load.
import t from 'tap';
import { createPublicKey, verify } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { clusterStatus } from '../src/hsm/cluster/status.js';

t.setTimeout(90_000);

t.test('a frozen HSM leaves rotation by the health deadline; callers see no failure; it returns when it answers again', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-hang-'));
  const cluster = await startEmbeddedCluster({
    dir, hsms: 3, scryptCost: 1024,
    node: { healthIntervalMs: 200, healthTimeoutMs: 1000, reconnectMinMs: 50, reconnectMaxMs: 300 },
  });
  let frozen: number | undefined;
  t.teardown(async () => {
    if (frozen !== undefined) process.kill(frozen, 'SIGCONT');
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const { client, supervisor } = cluster;
  const key = await client.generateKeyPair('ec:p256', { label: 'hang-key' });
  const pub = createPublicKey({ key: (await client.exportPublicKey(key.publicKey.keyId)).der, format: 'der', type: 'spki' });

  const served = new Map<string, number>();
  const onRequest = (m: unknown): void => {
    const ev = m as { op: string; hsm: string; outcome: string };
    if (ev.op === 'sign' && ev.outcome === 'ok') served.set(ev.hsm, (served.get(ev.hsm) ?? 0) + 1);
  };
  subscribe('hsmproxy:hsm:request', onRequest);
  t.teardown(() => unsubscribe('hsmproxy:hsm:request', onRequest));

  let stop = false;
  let ok = 0;
  let slowest = 0;
  const failures: string[] = [];
  const data = Buffer.from('sign me while one HSM hangs');
  const deadline = Date.now() + 45_000;
  const workers = Array.from({ length: 4 }, async () => {
    while (!stop && Date.now() < deadline && ok + failures.length < 200_000) {
      const t0 = Date.now();
      try {
        const sig = await client.sign({ keyId: key.privateKey.keyId, mechanism: 'ecdsa-sha256', data });
        if (verify('sha256', data, pub, sig)) ok++;
        else failures.push('bad signature');
      } catch (err) {
        failures.push((err as Error).message);
      }
      slowest = Math.max(slowest, Date.now() - t0);
    }
  });

  while (ok < 200 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.ok((served.get('hsm-2') ?? 0) > 0, 'hsm-2 served before it froze');
  frozen = supervisor.pids().get('hsm-2');
  t.ok(frozen, 'hsm-2 runs as a child process');
  const frozenAt = Date.now();
  process.kill(frozen!, 'SIGSTOP');

  // Generous bound: health period 200 ms + deadline 1,000 ms, on a busy 2-core box.
  while (client.node('hsm-2')?.available && Date.now() < frozenAt + 10_000) await new Promise((r) => setTimeout(r, 10));
  const outAfter = Date.now() - frozenAt;
  t.notOk(client.node('hsm-2')?.available, `hsm-2 left rotation ${outAfter} ms after it froze`);
  const okAtOut = ok;
  while (ok < okAtOut + 200 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.ok(ok >= okAtOut + 200, 'the two other HSMs carry the load meanwhile');

  const status = await clusterStatus(dir, 1000);
  t.same(status.hsms.map((h) => [h.id, h.up]), [['hsm-1', true], ['hsm-2', false], ['hsm-3', true]], 'cluster status reports the frozen HSM down');
  t.match(status.hsms[1]?.error, /timed out|deadline/, `with the reason: ${status.hsms[1]?.error}`);

  process.kill(frozen!, 'SIGCONT');
  frozen = undefined;
  await client.waitInRotation('hsm-2', 20_000);
  const back = served.get('hsm-2') ?? 0;
  while ((served.get('hsm-2') ?? 0) < back + 50 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  stop = true;
  await Promise.all(workers);
  t.ok((served.get('hsm-2') ?? 0) >= back + 50, `hsm-2 takes load again (${(served.get('hsm-2') ?? 0) - back} signs after it thawed)`);
  t.same(failures, [], `zero failed signs seen by the callers (${ok} signed)`);
  t.ok(slowest < 15_000, `no caller waited past the request timeout (slowest sign ${slowest} ms)`);
});
