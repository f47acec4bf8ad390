// Quorum (M of N) on a real two-HSM cluster on loopback: crypto officers register quorum keys,
// M is set per service, tokens are issued, signed offline, approved and used up; forged,
// duplicate and expired approvals are refused; the quorum and each token's state hold on both
// HSMs (replication); key policy changes need the key service's quorum; M = 1 changes nothing.
import t, { type Test } from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClusterClient } from '../src/hsm/client/cluster-client.js';
import type { HsmConnection } from '../src/hsm/client/connection.js';
import {
  approveQuorumToken, generateQuorumKey, getQuorumToken, quorumStatus, quorumTokenStatus, registerQuorumKey, setQuorumM,
  signQuorumToken, type QuorumTarget,
} from '../src/hsm/client/quorum.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { connectCluster, linkFactory, membersOf } from '../src/hsm/cluster/membership.js';
import { startNode } from '../src/hsm/cluster/run-node.js';
import type { LoginCredentials } from '../src/hsm/client/link.js';
import type { QuorumService, QuorumTokenInfo } from '../src/hsm/protocol/index.js';
import { tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

// Two in-process HSMs of one cluster, activated as `cluster init` + `cluster activate` leave them.
const cluster = {
  credentials: {
    co: { user: 'admin', password: 'co-password' },
    cu: { user: 'alice', password: 'alice-password' },
    au: { user: 'sync', password: 'sync-password' },
  },
  client: undefined as unknown as ClusterClient,
};
let dir: string;
let co1: ClusterClient;
let co2: ClusterClient;
const closers: Array<() => Promise<unknown>> = [];

const key1 = generateQuorumKey('p256');
const key2 = generateQuorumKey('rsa');
const co2Login: LoginCredentials = { user: 'officer2', password: 'officer2-password' };
const co3Login: LoginCredentials = { user: 'officer3', password: 'officer3-password' };

t.before(async () => {
  const made = await tempCluster({ hsms: 2 });
  dir = made.dir;
  closers.push(() => made.cleanup());
  for (const h of made.manifest.hsms) {
    const node = await startNode({ dir, hsmId: h.id, scryptCost: TEST_SCRYPT_COST, log: () => undefined });
    closers.push(() => node.stop());
  }
  const factory = await linkFactory(dir, made.manifest);
  const links = await Promise.all(membersOf(made.manifest).map((a) => factory(a, { user: made.precoUser, password: made.precoPassword })));
  await Promise.all(links.map((l) => l.changePassword(cluster.credentials.co.password)));
  await links[1]!.importUsers(await links[0]!.exportUsers());
  await Promise.all(links.map((l) => l.close()));
  co1 = await connectCluster(dir, { credentials: cluster.credentials.co, watch: false });
  closers.push(() => co1.close());
  await co1.createUser(cluster.credentials.cu.user, 'CU', cluster.credentials.cu.password);
  await co1.createUser(cluster.credentials.au.user, 'AU', cluster.credentials.au.password);
  cluster.client = await connectCluster(dir, { credentials: cluster.credentials.cu, syncCredentials: cluster.credentials.au, watch: false });
  closers.push(() => cluster.client.close());
  // M = 1 (the default): user management needs no token, exactly as before quorum existed.
  await co1.createUser(co2Login.user, 'CO', co2Login.password);
  await co1.createUser(co3Login.user, 'CO', co3Login.password);
  co2 = await connectCluster(dir, { credentials: co2Login, watch: false });
  closers.push(() => co2.close());
  await registerQuorumKey(co1, key1.privateKeyPem);
  await registerQuorumKey(co2, key2.privateKeyPem);
});
t.teardown(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
});

// A logged-in connection to one HSM of the cluster, closed at the end of the test.
async function direct(tt: Test, hsm: string, who: LoginCredentials): Promise<HsmConnection> {
  const m = await readManifest(dir);
  const factory = await linkFactory(dir, m);
  const addr = membersOf(m).find((a) => a.id === hsm)!;
  const c = await factory(addr, who);
  tt.teardown(() => c.close());
  return c;
}

async function onEachHsm<T>(tt: Test, who: LoginCredentials, fn: (c: HsmConnection) => Promise<T>): Promise<T[]> {
  return Promise.all(['hsm-1', 'hsm-2'].map(async (id) => fn(await direct(tt, id, who))));
}

// A token for `service` with approvals from the given officers (each signing offline).
async function approvedToken(c: QuorumTarget, service: QuorumService, signers: Array<[string, string]>, ttl?: number): Promise<QuorumTokenInfo> {
  let tok = await getQuorumToken(c, service, ttl);
  for (const [approver, pem] of signers) {
    tok = await approveQuorumToken(c, { tokenId: tok.id, approver, signature: signQuorumToken(tok.text, pem) });
  }
  return tok;
}

const BOTH: Array<[string, string]> = [['admin', key1.privateKeyPem], [co2Login.user, key2.privateKeyPem]];

// Polls (bounded) until the token reports expired: expiry is the HSM's clock, not ours.
async function untilExpired(c: QuorumTarget, id: string): Promise<QuorumTokenInfo> {
  for (let i = 0; i < 100; i++) {
    const s = await quorumTokenStatus(c, id);
    if (s.state === 'expired') return s;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`token ${id} never expired`);
}

t.test('registered officers are listed as approvers on every HSM; M is 1 everywhere by default', async (t) => {
  const views = await onEachHsm(t, cluster.credentials.co, (c) => c.quorumStatus());
  for (const v of views) {
    t.same(v.m, { user: 1, key: 1, quorum: 1 });
    t.same(v.approvers.map((a) => [a.name, a.keyType]), [['admin', 'ec'], [co2Login.user, 'rsa']]);
  }
});

t.test('M cannot exceed the crypto officers with a registered key, and the error says so', async (t) => {
  await t.rejects(setQuorumM(co1, 'user', 3), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /M=3 for user exceeds the 2 crypto officer\(s\) with a registered quorum key \(admin, officer2\)/ });
  t.same((await quorumStatus(co1)).m.user, 1, 'M is unchanged');
});

t.test('with M=2 for users, a user creation without a token is refused', async (t) => {
  await setQuorumM(co1, 'user', 2);
  const views = await onEachHsm(t, cluster.credentials.co, (c) => c.quorumStatus());
  t.same(views.map((v) => v.m.user), [2, 2], 'the new M is on both HSMs');
  await t.rejects(co1.createUser('carol', 'CU', 'carol-password'), { code: 'HSM_ERR_QUORUM_REQUIRED', message: /user operations need 2 approvals.*you hold no quorum token/ });
});

t.test('one approval is not enough; the same officer approving twice counts once', async (t) => {
  const tok = await getQuorumToken(co1, 'user');
  t.equal(tok.state, 'pending');
  const sig = signQuorumToken(tok.text, key1.privateKeyPem);
  const once = await approveQuorumToken(co1, { tokenId: tok.id, approver: 'admin', signature: sig });
  t.same([once.approvals, once.m, once.duplicate], [['admin'], 2, false]);
  const again = await approveQuorumToken(co1, { tokenId: tok.id, approver: 'admin', signature: sig });
  t.same([again.approvals, again.duplicate], [['admin'], true], 'a duplicate approval counts once');
  await t.rejects(co1.createUser('carol', 'CU', 'carol-password'), { code: 'HSM_ERR_QUORUM_REQUIRED', message: /has 1 of 2 approvals/ });
});

t.test('forged approvals are refused: another key, altered token text, an officer without a key, a non-officer', async (t) => {
  const tok = await getQuorumToken(co1, 'user');
  const stranger = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ format: 'pem', type: 'pkcs8' });
  await t.rejects(approveQuorumToken(co1, { tokenId: tok.id, approver: co2Login.user, signature: signQuorumToken(tok.text, stranger) }),
    { code: 'HSM_ERR_QUORUM_BAD_SIGNATURE', message: /does not verify under officer2's registered quorum key/ }, 'signed with a key that is not the registered one');
  const altered = tok.text.replace('service: user', 'service: key');
  await t.rejects(approveQuorumToken(co1, { tokenId: tok.id, approver: co2Login.user, signature: signQuorumToken(altered, key2.privateKeyPem) }),
    { code: 'HSM_ERR_QUORUM_BAD_SIGNATURE' }, 'the registered key over altered token text');
  await t.rejects(approveQuorumToken(co1, { tokenId: tok.id, approver: co3Login.user, signature: signQuorumToken(tok.text, stranger) }),
    { code: 'HSM_ERR_PERMISSION_DENIED', message: /officer3 has no registered quorum key/ });
  await t.rejects(approveQuorumToken(co1, { tokenId: tok.id, approver: cluster.credentials.cu.user, signature: signQuorumToken(tok.text, stranger) }),
    { code: 'HSM_ERR_PERMISSION_DENIED', message: /is a CU, not a crypto officer/ });
  t.same((await quorumTokenStatus(co1, tok.id)).approvals, [], 'none of them was recorded');
  // The refusals are in each HSM's audit log, with their codes.
  const logs = await auditLines();
  t.ok(logs.some((e) => e.event === 'quorum.approve' && e.ok === false && e.code === 'HSM_ERR_QUORUM_BAD_SIGNATURE'), 'a bad signature is audited');
});

t.test('two approvals from different officers: the creation succeeds on every HSM, and uses the token up', async (t) => {
  const tok = await approvedToken(co1, 'user', BOTH);
  t.same([tok.state, tok.approvals], ['approved', ['admin', co2Login.user]]);
  await co1.createUser('carol', 'CU', 'carol-password');
  const logins = await onEachHsm(t, { user: 'carol', password: 'carol-password' }, async (c) => c.user?.role);
  t.same(logins, ['CU', 'CU'], 'carol exists on both HSMs');
  const states = await onEachHsm(t, cluster.credentials.co, async (c) => (await c.quorumTokenStatus(tok.id)).state);
  t.same(states, ['used', 'used'], 'the token is used on both HSMs');
  await t.rejects(co1.createUser('dave', 'CU', 'dave-password'), { code: 'HSM_ERR_QUORUM_REQUIRED' }, 'a used token approves nothing more');
});

t.test('a token approved through the cluster works on the second HSM alone; once used there, it is used on the first too', async (t) => {
  const tok = await approvedToken(co1, 'user', BOTH);
  const hsm2 = await direct(t, 'hsm-2', cluster.credentials.co);
  const hsm1 = await direct(t, 'hsm-1', cluster.credentials.co);
  t.same((await hsm2.quorumTokenStatus(tok.id)).approvals, ['admin', co2Login.user], 'both approvals reached hsm-2');
  await hsm2.createUser('erin', 'CU', 'erin-password');
  // What the cluster client does after a user change: copy the user table to the other HSMs.
  await hsm1.importUsers(await hsm2.exportUsers());
  t.equal((await hsm1.quorumTokenStatus(tok.id)).state, 'used', 'the use travelled with the user table');
  await t.rejects(hsm1.createUser('frank', 'CU', 'frank-password'), { code: 'HSM_ERR_QUORUM_REQUIRED' }, 'no replay on hsm-1');
});

t.test('a new token replaces its owner\'s earlier one for the service, on both HSMs', async (t) => {
  const first = await approvedToken(co1, 'user', BOTH);
  const second = await getQuorumToken(co1, 'user');
  const states = await onEachHsm(t, cluster.credentials.co, async (c) => [(await c.quorumTokenStatus(first.id)).state, (await c.quorumTokenStatus(second.id)).state]);
  t.same(states, [['replaced', 'pending'], ['replaced', 'pending']]);
  await t.rejects(co1.createUser('paul', 'CU', 'paul-password'), { code: 'HSM_ERR_QUORUM_REQUIRED', message: /has 0 of 2 approvals/ }, 'the approved but replaced token approves nothing');
});

t.test('an expired token takes no approval and approves nothing', async (t) => {
  // (An approved token that expires before use: hsm-device-quorum.test.ts, with the clock moved.)
  const late = await getQuorumToken(co1, 'user', 2);
  await untilExpired(co1, late.id);
  await t.rejects(approveQuorumToken(co1, { tokenId: late.id, approver: 'admin', signature: signQuorumToken(late.text, key1.privateKeyPem) }), { code: 'HSM_ERR_QUORUM_TOKEN_EXPIRED' });
  await t.rejects(co1.createUser('gina', 'CU', 'gina-password'), { code: 'HSM_ERR_QUORUM_TOKEN_EXPIRED', message: /expired at/ });
});

t.test('deleting an officer that would leave fewer approvers than M is refused', async (t) => {
  await t.rejects(co1.deleteUser(co2Login.user), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /would leave 1 registered quorum approver\(s\), fewer than M=2/ });
});

t.test('a token for another service does not approve user management', async (t) => {
  await approvedToken(co1, 'quorum', BOTH);
  await t.rejects(co1.createUser('hank', 'CU', 'hank-password'), { code: 'HSM_ERR_QUORUM_REQUIRED', message: /is for the quorum service, not user/ });
});

t.test('lowering M needs the current quorum; with M back at 1 user management works without tokens', async (t) => {
  const co2Only = await getQuorumToken(co2, 'quorum');
  await approveQuorumToken(co2, { tokenId: co2Only.id, approver: co2Login.user, signature: signQuorumToken(co2Only.text, key2.privateKeyPem) });
  await t.rejects(setQuorumM(co2, 'user', 1), { code: 'HSM_ERR_QUORUM_REQUIRED', message: /quorum operations need 2 approvals.*has 1 of 2/ }, 'one officer cannot lower the user quorum alone');
  await approvedToken(co1, 'quorum', BOTH);
  const r = await setQuorumM(co1, 'user', 1);
  t.equal(r.m.user, 1);
  await co1.createUser('ivan', 'CU', 'ivan-password');
  await co1.deleteUser('ivan');
  t.pass('create and delete without a token');
});

t.test('with M=2 for keys, sharing a key needs an approved token of its owner, and the share reaches both HSMs', async (t) => {
  await setQuorumM(co1, 'key', 2);
  const cu = cluster.client;
  const pair = await cu.generateKeyPair('ec:p256', { label: 'quorum-shared' });
  await t.rejects(cu.shareKey(pair.privateKey.keyId, 'carol'), { code: 'HSM_ERR_QUORUM_REQUIRED', message: /key operations need 2 approvals/ });
  // The crypto user gets the token; the officers sign it offline; the owner submits the signatures.
  await approvedToken(cu, 'key', BOTH);
  const shared = await cu.shareKey(pair.privateKey.keyId, 'carol');
  t.same(shared.sharedWith, ['carol']);
  const seen = await onEachHsm(t, cluster.credentials.cu, async (c) => (await c.getKey(pair.privateKey.keyId)).sharedWith);
  t.same(seen, [['carol'], ['carol']], 'shared on both HSMs');
  await t.rejects(cu.unshareKey(pair.privateKey.keyId, 'carol'), { code: 'HSM_ERR_QUORUM_REQUIRED' }, 'the token was used by the share');
  await approvedToken(co1, 'quorum', BOTH);
  await setQuorumM(co1, 'key', 1);
  await cu.unshareKey(pair.privateKey.keyId, 'carol');
  t.pass('with M=1 again, unsharing needs no token');
});

// Every audit entry of every HSM of the cluster.
async function auditLines(): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (e.name === 'audit.log') {
        for (const line of (await readFile(join(d, e.name), 'utf8')).split('\n')) if (line) out.push(JSON.parse(line) as Record<string, unknown>);
      }
    }
  };
  await walk(dir);
  return out;
}
