// Failover: kill -9 one of 3 HSMs while 4 workers sign in a loop. Callers see no failure, the HSM
// is marked down, keys created meanwhile reach it when it returns (resync before it serves),
// and then it takes load again.
import t from 'tap';
import { createPublicKey, verify } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { linkFactory, membersOf } from '../src/hsm/cluster/membership.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';

t.test('kill -9 of one HSM under load: no failed signs, marked down, resynced on return, serves again', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-failover-'));
  const cluster = await startEmbeddedCluster({
    dir, hsms: 3, scryptCost: 1024,
    node: { healthIntervalMs: 200, reconnectMinMs: 50, reconnectMaxMs: 300 },
    // Keep the killed HSM down long enough to create keys it misses.
    supervisor: { restartMinMs: 1500 },
  });
  t.teardown(async () => {
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const { client, supervisor } = cluster;
  const key = await client.generateKeyPair('ec:p256', { label: 'busy-key' });
  const pub = createPublicKey({ key: (await client.exportPublicKey(key.publicKey.keyId)).der, format: 'der', type: 'spki' });

  const served = new Map<string, number>();
  const stateDown: string[] = [];
  const onRequest = (m: unknown): void => {
    const ev = m as { op: string; hsm: string; outcome: string };
    if (ev.op === 'sign' && ev.outcome === 'ok') served.set(ev.hsm, (served.get(ev.hsm) ?? 0) + 1);
  };
  const onState = (m: unknown): void => {
    const ev = m as { hsm: string; up: boolean };
    if (!ev.up) stateDown.push(ev.hsm);
  };
  subscribe('hsmproxy:hsm:request', onRequest);
  subscribe('hsmproxy:hsm:state', onState);
  t.teardown(() => {
    unsubscribe('hsmproxy:hsm:request', onRequest);
    unsubscribe('hsmproxy:hsm:state', onState);
  });

  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  const data = Buffer.from('sign me through the failover');
  const deadline = Date.now() + 30_000;
  const workers = Array.from({ length: 4 }, async () => {
    while (!stop && Date.now() < deadline && ok + failures.length < 200_000) {
      try {
        const sig = await client.sign({ keyId: key.privateKey.keyId, mechanism: 'ecdsa-sha256', data });
        if (verify('sha256', data, pub, sig)) ok++;
        else failures.push('bad signature');
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  });

  while (ok < 200) await new Promise((r) => setTimeout(r, 10));
  const victimPid = supervisor.pids().get('hsm-2');
  t.ok(victimPid, 'hsm-2 runs as a child process');
  process.kill(victimPid!, 'SIGKILL');

  const downBy = Date.now() + 5000;
  while (client.node('hsm-2')?.available && Date.now() < downBy) await new Promise((r) => setTimeout(r, 10));
  t.notOk(client.node('hsm-2')?.available, 'hsm-2 is taken out of rotation');
  t.ok(stateDown.includes('hsm-2'), 'and reported down on hsm:state');

  // Changes made while hsm-2 is down.
  const missed = await client.generateKeyPair('rsa:2048', { label: 'made-while-down' });
  t.notOk(client.node('hsm-2')?.available, 'the key was created while hsm-2 was still down');

  await supervisor.waitRunning('hsm-2');
  await client.waitInRotation('hsm-2', 15_000);
  const report = client.resyncs.get('hsm-2');
  t.ok(report && report.keysCopied >= 2, `hsm-2 was resynced before serving (${report?.keysCopied ?? 0} keys copied)`);

  const before = served.get('hsm-2') ?? 0;
  const loadBy = Date.now() + 10_000;
  while ((served.get('hsm-2') ?? 0) < before + 50 && Date.now() < loadBy) await new Promise((r) => setTimeout(r, 20));
  stop = true;
  await Promise.all(workers);
  t.ok((served.get('hsm-2') ?? 0) >= before + 50, `hsm-2 takes load again (${(served.get('hsm-2') ?? 0) - before} signs after its return)`);
  t.same(failures, [], `zero failed signs seen by the callers (${ok} signed)`);

  // The key made while it was down is on hsm-2, addressed directly.
  const m = await readManifest(dir);
  const addr = membersOf(m).find((a) => a.id === 'hsm-2')!;
  const direct = await (await linkFactory(dir, m))(addr, cluster.credentials.cu);
  t.teardown(() => direct.close());
  const msg = Buffer.from('made while down');
  const sig = await direct.sign({ keyId: missed.privateKey.keyId, mechanism: 'rsa-pkcs1-sha256', data: msg });
  const missedPub = createPublicKey({ key: (await direct.exportPublicKey(missed.publicKey.keyId)).der, format: 'der', type: 'spki' });
  t.ok(verify('sha256', msg, missedPub, sig), 'hsm-2 signs with the key created while it was down');
});
