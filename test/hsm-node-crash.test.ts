// kill -9 of an HSM node process in the middle of a burst of key creations, then restart:
// the store opens and every key whose creation was acknowledged is there.
import t from 'tap';
import { activate, connect, killChild, spawnNode, tempCluster } from './helpers/hsm-cluster.js';

t.test('every acknowledged key survives kill -9 of the node mid-burst', async (t) => {
  const cluster = await tempCluster();
  t.teardown(() => cluster.cleanup());
  const port = cluster.manifest.hsms[0]?.port as number;
  let child = await spawnNode(cluster.dir);
  t.teardown(() => killChild(child));
  await activate(cluster, port);

  const conn = await connect(cluster, port);
  await conn.login('alice', 'cu-password');
  const acked: string[] = [];
  let failed = 0;
  let stop = false;
  const worker = async (w: number): Promise<void> => {
    for (let i = 0; !stop && i < 500; i++) {
      try {
        const spec = i % 2 === 0 ? 'aes:256' : 'ec:p256';
        const id = spec === 'aes:256'
          ? (await conn.generateKey('aes:256', { label: `burst-${w}-${i}` })).keyId
          : (await conn.generateKeyPair('ec:p256', { label: `burst-${w}-${i}` })).privateKey.keyId;
        acked.push(id);
      } catch {
        failed++;
        return; // the connection is gone
      }
    }
  };
  const workers = Array.from({ length: 8 }, (_, w) => worker(w));
  // Kill once a good number of creations were acknowledged (bounded in time either way).
  for (let i = 0; i < 300 && acked.length < 60; i++) await new Promise((r) => setTimeout(r, 10));
  await killChild(child, 'SIGKILL');
  stop = true;
  await Promise.all(workers);
  t.ok(acked.length > 0, `${acked.length} creations acknowledged before the kill`);
  t.ok(failed > 0, 'requests in flight at the kill failed rather than hanging');

  child = await spawnNode(cluster.dir);
  const after = await connect(cluster, port);
  t.teardown(() => after.destroy());
  await after.login('alice', 'cu-password');
  const present = new Set((await after.findKeys({})).map((k) => k.keyId));
  const missing = acked.filter((id) => !present.has(id));
  t.same(missing, [], 'no acknowledged key is missing after restart');
  await killChild(child, 'SIGTERM');
  t.equal(child.exitCode, 0, 'SIGTERM stops the node cleanly');
});
