// Issue 19 item 3: a masked object (token key, user table) is replayed only to be refused.
// Every replicated object carries a version inside its masking; an HSM applies only newer
// ones, remembers deletions, keeps its own lockout state, and its change sequence (persisted)
// decides which of two disagreeing HSMs is current — also across restarts and through the
// cluster client.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Hsm } from '../src/hsm/device/index.js';
import { DeviceStore } from '../src/hsm/device/persist.js';
import { sealJson, unsealJson } from '../src/hsm/device/sealing.js';
import { currentState } from '../src/hsm/client/current.js';
import { resync } from '../src/hsm/client/sync.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { connectCluster, linkFactory, membersOf } from '../src/hsm/cluster/membership.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { startNode, type RunningNode } from '../src/hsm/cluster/run-node.js';
import type { HsmConnection } from '../src/hsm/client/connection.js';
import { CO_PASSWORD, freshHsm, TEST_SCRYPT_COST, type Fixture } from './helpers/hsm-device.js';
import { cliInProcess, tempCluster } from './helpers/hsm-cluster.js';

const CLUSTER = randomBytes(32);
const STALE = { code: 'HSM_ERR_STALE_OBJECT' };

// An appliance user, as `cluster activate` makes for resync (its login sits in DIR/sync-user.json).
async function applianceUser(h: Fixture): Promise<Awaited<ReturnType<Hsm['login']>>> {
  await h.hsm.createUser(h.co, 'sync', 'AU', 'sync-password');
  return h.hsm.login('sync', 'sync-password');
}

t.test('a CU that made its key non-extractable and sensitive cannot undo it by replaying the old masked copy', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const alice = await a.cu('alice');
  const key = (await a.hsm.generateKey(alice, 'aes:256', { label: 'k', extractable: true, sensitive: false })).result.keyId;
  const wrapping = (await a.hsm.generateKey(alice, 'aes:256', { label: 'kek' })).result.keyId;
  const old = a.hsm.exportMasked(alice, key);
  await a.hsm.setAttributes(alice, key, { extractable: false, sensitive: true });

  await t.rejects(a.hsm.importMasked(alice, old), { ...STALE, message: /not newer/ });
  t.match(a.hsm.getKey(alice, key), { extractable: false, sensitive: true }, 'the key stays non-extractable and sensitive');
  await t.rejects(a.hsm.wrapKey(alice, { wrappingKeyId: wrapping, keyId: key, mechanism: 'aes-key-wrap-pad' }), { code: 'HSM_ERR_PERMISSION_DENIED', message: /not extractable/ });
});

t.test("a crypto officer's trusted flag cannot be undone by replaying the key's old masked copy", async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const alice = await a.cu('alice');
  const key = (await a.hsm.generateKeyPair(alice, 'ec:p256', { label: 'web' })).result.publicKey.keyId;
  await a.hsm.setAttributes(a.co, key, { trusted: true });
  const trusted = a.hsm.exportMasked(alice, key);
  await a.hsm.setAttributes(a.co, key, { trusted: false }); // the officer withdraws the trust

  await t.rejects(a.hsm.importMasked(alice, trusted), STALE);
  t.equal(a.hsm.getKey(a.co, key).trusted, false, 'the withdrawal stands');
});

t.test('replaying an old user table cannot restore an old password', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const au = await applianceUser(a);
  await a.cu('bob');
  const old = a.hsm.exportUsers(au);
  await a.hsm.resetPassword(a.co, 'bob', 'bob-new-password');

  await t.rejects(a.hsm.importUsers(au, old), { ...STALE, message: /user bob at version 1 \(this HSM holds version 2\)/ });
  await t.rejects(a.hsm.login('bob', 'bob-password'), { code: 'HSM_ERR_BAD_CREDENTIALS' }, 'the old password does not work');
  t.equal((await a.hsm.login('bob', 'bob-new-password')).user, 'bob', 'the new one does');
});

t.test('replaying an old user table neither clears a lockout nor resets the count of failed logins', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const au = await applianceUser(a);
  await a.cu('bob');
  await a.cu('carol');
  const old = a.hsm.exportUsers(au);
  const guess = (user: string): Promise<unknown> => a.hsm.login(user, 'wrong-guess').catch(() => undefined);
  for (let i = 0; i < 5; i++) await guess('bob');
  for (let i = 0; i < 3; i++) await guess('carol');

  await a.hsm.importUsers(au, old).catch(() => undefined);
  await t.rejects(a.hsm.login('bob', 'bob-password'), { code: 'HSM_ERR_BAD_CREDENTIALS' }, 'bob is still locked out');
  t.match(a.hsm.listUsers(a.co).find((u) => u.name === 'bob'), { locked: true });
  for (let i = 0; i < 2; i++) await guess('carol');
  t.match(a.hsm.listUsers(a.co).find((u) => u.name === 'carol'), { locked: true }, "carol's 3 earlier failures still count: 2 more lock her");
});

t.test('a deleted user cannot be resurrected by replaying an old user table, here or on a clone', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-a' });
  const b = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-b' });
  await a.cu('carol');
  const old = a.hsm.exportUsers(a.co);
  await b.hsm.importUsers(b.co, old);
  await a.hsm.deleteUser(a.co, 'carol');
  await b.hsm.importUsers(b.co, a.hsm.exportUsers(a.co)); // the clone learns the deletion

  for (const h of [a, b]) {
    await t.rejects(h.hsm.importUsers(h.co, old), { ...STALE, message: /user carol at version 1 \(deleted here at version 2\)/ }, `${h.hsm.info().hsmId} refuses the replay`);
    t.notOk(h.hsm.listUsers(h.co).some((u) => u.name === 'carol'));
    await t.rejects(h.hsm.login('carol', 'carol-password'), { code: 'HSM_ERR_BAD_CREDENTIALS' });
  }
  t.equal(a.hsm.stateDigest().digest, b.hsm.stateDigest().digest, 'the clones agree');

  await a.hsm.createUser(a.co, 'carol', 'CU', 'carol-second-pw');
  await t.rejects(a.hsm.importUsers(a.co, old), STALE);
  t.equal((await a.hsm.login('carol', 'carol-second-pw')).user, 'carol', 'a new carol is not replaced by the old one either');
});

t.test('a deleted key cannot be resurrected by replaying its old masked copy, here or on a clone', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-a' });
  const b = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-b' });
  const alice = await a.cu('alice');
  await b.hsm.importUsers(b.co, a.hsm.exportUsers(a.co));
  const pair = (await a.hsm.generateKeyPair(alice, 'ec:p256', { label: 'to-delete' })).result;
  const id = pair.privateKey.keyId;
  const old = a.hsm.exportMasked(alice, id);
  await b.hsm.importMasked(b.co, old);
  await b.hsm.importMasked(b.co, a.hsm.exportMasked(alice, pair.publicKey.keyId));
  await a.hsm.deleteKey(alice, id);
  // b missed the delete; the user table carries it (as resync copies it).
  await b.hsm.importUsers(b.co, a.hsm.exportUsers(a.co));
  t.same(b.hsm.listTokenKeyIds(b.co), [], 'the clone deleted both halves');

  for (const h of [a, b]) {
    await t.rejects(h.hsm.importMasked(h.co, old), { ...STALE, message: /was deleted here/ });
    t.throws(() => h.hsm.getKey(h.co, id), { code: 'HSM_ERR_NO_SUCH_KEY' }, `the key stays deleted on ${h.hsm.info().hsmId}`);
  }
  await b.hsm.close();
  const reopened = await Hsm.open({ ...b.opts, initialPassword: undefined });
  t.teardown(() => reopened.close());
  const co = await reopened.login('admin', CO_PASSWORD);
  await t.rejects(reopened.importMasked(co, old), STALE, 'the deletion is remembered across a restart');
});

t.test('a deletion interrupted after its tombstone was written completes at the next open', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const alice = await a.cu('alice');
  await a.cu('bob');
  const id = (await a.hsm.generateKey(alice, 'aes:256', { label: 'k' })).result.keyId;
  await a.hsm.shareKey(alice, id, 'bob');
  await a.hsm.close();
  // What a kill -9 between writing the tombstones and removing the objects leaves on disk.
  const store = await DeviceStore.open(a.dir);
  await store.writeTombstones(() => ({ users: { bob: 2 }, keys: { [id]: 3 } }));
  await store.release();

  const reopened = await Hsm.open({ ...a.opts, initialPassword: undefined });
  t.teardown(() => reopened.close());
  const co = await reopened.login('admin', CO_PASSWORD);
  t.same(reopened.listTokenKeyIds(co), [], 'the key is gone');
  t.notOk(reopened.listUsers(co).some((u) => u.name === 'bob'), 'and the user');
});

t.test('a masked key from before versions existed counts as version 0: installed where absent, refused over a versioned key', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-a' });
  const b = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-b' });
  const alice = await a.cu('alice');
  await b.hsm.importUsers(b.co, a.hsm.exportUsers(a.co));
  const id = (await a.hsm.generateKey(alice, 'aes:256', { label: 'old-format' })).result.keyId;
  const rec = unsealJson<Record<string, unknown>>(CLUSTER, 'hsmproxy masked key v1', a.hsm.exportMasked(a.co, id), 'key');
  delete rec.version;
  const unversioned = sealJson(CLUSTER, 'hsmproxy masked key v1', rec);

  t.equal((await b.hsm.importMasked(b.co, unversioned)).label, 'old-format', 'an HSM without the key installs it');
  await t.rejects(a.hsm.importMasked(a.co, unversioned), { ...STALE, message: /version 0 of key .* not newer than the version 1/ });
});

t.test('a newer version replaces the older one on a clone; the same version again is a no-op', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-a' });
  const b = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-b' });
  const alice = await a.cu('alice');
  await b.hsm.importUsers(b.co, a.hsm.exportUsers(a.co));
  const id = (await a.hsm.generateKey(alice, 'aes:256', { label: 'v1' })).result.keyId;
  await b.hsm.importMasked(b.co, a.hsm.exportMasked(a.co, id));
  await a.hsm.setAttributes(alice, id, { label: 'v2' });
  const v2 = a.hsm.exportMasked(a.co, id);

  t.equal((await b.hsm.importMasked(b.co, v2)).label, 'v2');
  t.equal((await b.hsm.importMasked(b.co, v2)).label, 'v2', 'importing it twice is harmless (resync copies every key again)');
  t.equal(b.hsm.stateDigest().digest, a.hsm.stateDigest().digest);
});

t.test('the change sequence survives a restart and decides which of two disagreeing HSMs is current', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-a' });
  const b = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-b' });
  const alice = await a.cu('alice');
  await b.hsm.importUsers(b.co, a.hsm.exportUsers(a.co));
  const id = (await a.hsm.generateKey(alice, 'aes:256', { label: 'k', extractable: true })).result.keyId;
  await b.hsm.importMasked(b.co, a.hsm.exportMasked(a.co, id));
  t.same(b.hsm.stateDigest(), a.hsm.stateDigest(), 'in sync: same digest and same sequence');

  // A change reaches hsm-a only (its client crashed before copying it), then hsm-a restarts.
  await a.hsm.setAttributes(alice, id, { extractable: false });
  await a.hsm.close();
  const reopened = await Hsm.open({ ...a.opts, initialPassword: undefined });
  t.teardown(() => reopened.close());
  const [da, db] = [reopened.stateDigest(), b.hsm.stateDigest()];
  t.ok(da.version > db.version, `hsm-a's sequence (${da.version}) is still above hsm-b's (${db.version}) after its restart`);
  const verdict = currentState([{ id: 'hsm-a', ...da }, { id: 'hsm-b', ...db }], ['hsm-a', 'hsm-b']);
  t.match(verdict, { proven: true, ids: ['hsm-a'] }, 'hsm-a, which took the change, is current');
});

// A logged-in connection to one HSM of the cluster in `dir`, bypassing any cluster client.
async function direct(dir: string, id: string, who: { user: string; password: string }): Promise<HsmConnection> {
  const m = await readManifest(dir);
  return (await linkFactory(dir, m))(membersOf(m).find((a) => a.id === id)!, who);
}

async function onEach<T>(dir: string, who: { user: string; password: string }, fn: (c: HsmConnection, id: string) => Promise<T>): Promise<T[]> {
  const m = await readManifest(dir);
  return Promise.all(membersOf(m).map(async (a) => {
    const c = await direct(dir, a.id, who);
    try {
      return await fn(c, a.id);
    } finally {
      await c.close();
    }
  }));
}

t.test('a 3-HSM cluster: a newer version reaches every HSM, the old copy is refused on each', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-rollback-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const embedded = await startEmbeddedCluster({ dir, hsms: 3, scryptCost: TEST_SCRYPT_COST });
  t.teardown(() => embedded.stop());
  const { cu, au } = embedded.credentials;
  const key = await embedded.client.generateKey('aes:256', { label: 'replicated', extractable: true });
  const capture = await direct(dir, 'hsm-1', cu);
  const old = await capture.exportMasked(key.keyId);
  await embedded.client.setAttributes(key.keyId, { extractable: false });

  t.same(await onEach(dir, cu, async (c) => (await c.getKey(key.keyId)).extractable), [false, false, false], 'every HSM holds the new version');
  const refused = await onEach(dir, cu, async (c) => c.importMasked(old).then(() => 'applied', (e: { code?: string }) => e.code));
  t.same(refused, Array(3).fill('HSM_ERR_STALE_OBJECT'), 'every HSM refuses the replayed copy');
  t.same(await onEach(dir, cu, async (c) => (await c.getKey(key.keyId)).extractable), [false, false, false], 'and the key stays non-extractable everywhere');

  // A change that reached hsm-1 alone is copied by resync as the newer version.
  await capture.setAttributes(key.keyId, { label: 'renamed-on-hsm-1' });
  await capture.close();
  const [source, ...targets] = await Promise.all(['hsm-1', 'hsm-2', 'hsm-3'].map((id) => direct(dir, id, au)));
  t.teardown(() => Promise.all([source, ...targets].map((l) => l!.close())));
  for (const target of targets) t.match(await resync(source!, target!), { inSync: true, newerOnTarget: [] });
  t.same(await onEach(dir, cu, async (c) => (await c.getKey(key.keyId)).label), Array(3).fill('renamed-on-hsm-1'));
  t.equal(new Set(await onEach(dir, cu, async (c) => (await c.stateDigest()).digest)).size, 1, 'the three HSMs agree');
});

t.test('2-HSM cluster: a change that reached one HSM is kept, whether a new client decides after restarts or a running one readmits it', async (t) => {
  const cluster = await tempCluster({ hsms: 2 });
  t.teardown(() => cluster.cleanup());
  const dir = cluster.dir;
  const nodes = new Map<string, RunningNode>();
  const start = async (hsmId: string): Promise<void> => { nodes.set(hsmId, await startNode({ dir, hsmId, scryptCost: TEST_SCRYPT_COST, log: () => undefined })); };
  const stop = async (hsmId: string): Promise<void> => { await nodes.get(hsmId)?.stop(); nodes.delete(hsmId); };
  t.teardown(() => Promise.all([...nodes.keys()].map(stop)));
  await Promise.all(['hsm-1', 'hsm-2'].map(start));
  const act = await cliInProcess(['cluster', 'activate', '--dir', dir], { HSMPROXY_PIN: `${cluster.precoUser}:${cluster.precoPassword}`, HSMPROXY_NEW_PASSWORD: 'co-password-1' });
  t.error(act.error);
  const co = { user: cluster.precoUser, password: 'co-password-1' };
  const alice = { user: 'alice', password: 'alice-password' };
  const officer = await connectCluster(dir, { credentials: co, watch: false });
  await officer.createUser(alice.user, 'CU', alice.password);
  await officer.close();
  let client = await connectCluster(dir, { credentials: alice, watch: false });
  const key = await client.generateKey('aes:256', { label: 'k', extractable: true });
  await client.close();
  const statuses = async (): Promise<Array<[string, boolean | undefined]>> => {
    const s = await cliInProcess(['cluster', 'status', '--dir', dir, '--json']);
    if (s.error) throw s.error;
    return (JSON.parse(s.stdout) as { hsms: Array<{ id: string; inSync?: boolean }> }).hsms.map((h) => [h.id, h.inSync]);
  };

  // A client makes the key non-extractable on hsm-1 and dies before copying it; both HSMs restart.
  const crashed = await direct(dir, 'hsm-1', alice);
  await crashed.setAttributes(key.keyId, { extractable: false });
  await crashed.close();
  await Promise.all(['hsm-1', 'hsm-2'].map(stop));
  await Promise.all(['hsm-1', 'hsm-2'].map(start));
  t.same(await statuses(), [['hsm-1', true], ['hsm-2', false]], 'status: hsm-1, with the higher sequence, is current');
  client = await connectCluster(dir, { credentials: alice, watch: false });
  t.teardown(() => client.close());
  await client.waitInRotation('hsm-1', 10_000);
  await client.waitInRotation('hsm-2', 10_000);
  t.same(await onEach(dir, alice, async (c) => (await c.getKey(key.keyId)).extractable), [false, false], 'hsm-2 was resynced forward: the change is not lost');

  // With that client running, hsm-2 alone takes a change, restarts, and is readmitted.
  const lone = await direct(dir, 'hsm-2', alice);
  await lone.setAttributes(key.keyId, { label: 'made-on-hsm-2-only' });
  await lone.close();
  await stop('hsm-2');
  await start('hsm-2');
  client.node('hsm-2')!.markDown(Object.assign(new Error('restarted'), { code: 'HSM_ERR_CONNECTION_CLOSED' }));
  await client.waitInRotation('hsm-2', 10_000);
  t.same(await onEach(dir, alice, async (c) => (await c.getKey(key.keyId)).label), ['made-on-hsm-2-only', 'made-on-hsm-2-only'], 'hsm-1 took the newer version instead of undoing it on hsm-2');
  t.same(await statuses(), [['hsm-1', true], ['hsm-2', true]]);
});
