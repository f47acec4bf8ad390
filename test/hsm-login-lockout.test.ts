// Login lockout against parallel guessing (issue 19, item 2). Before, the device checked `locked`
// before the asynchronous password hash and counted the failure after it, so 50 guesses sent at
// once all passed the check and all got hashed; a connection could pipeline any number of LOGIN
// frames; and the refusals told a peer which names exist ("N attempts left" only for real users,
// "user X is locked" for locked ones). Now an attempt is counted before its hash, one attempt per
// user name runs at a time, logins in progress are capped per connection and per client
// certificate (the excess answered HSM_ERR_BUSY unhashed), and every refusal is the same bytes.
// One device (lockout after 3), an appliance per test with the caps under test, loopback only.
import t, { type Test } from 'tap';
import { readFile } from 'node:fs/promises';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { webcrypto } from 'node:crypto';
import { createClientCert, privateKeyPem } from '../src/hsm/cluster/certs.js';
import * as x509 from '@peculiar/x509';
import { HsmNode } from '../src/hsm/client/node.js';
import type { HsmLink } from '../src/hsm/client/link.js';
import { clusterPath } from '../src/hsm/cluster/manifest.js';
import { Hsm } from '../src/hsm/device/index.js';
import { HsmAppliance, type HsmApplianceOptions } from '../src/hsm/node.js';
import { FLAG_JSON, FrameDecoder, Op, STATUS_ERROR, STATUS_OK, encodeFrame } from '../src/hsm/protocol/index.js';
import { activate, clientTls, connect, tempCluster } from './helpers/hsm-cluster.js';

const LOCKOUT = 3;
// ~25 ms a hash on CI: slow enough that a login is still hashing when the busy answers arrive.
const SCRYPT_COST = 1 << 13;

const cluster = await tempCluster({ scryptCost: SCRYPT_COST });
const h = cluster.manifest.hsms[0]!;
const [key, cert, ca, clusterKey] = await Promise.all(
  [h.key, h.cert, cluster.manifest.caCert, cluster.manifest.maskingKey].map((p) => readFile(clusterPath(cluster.dir, p))),
) as [Buffer, Buffer, Buffer, Buffer];
const device = await Hsm.open({ dir: clusterPath(cluster.dir, h.dataDir), hsmId: h.id, clusterKey, lockoutThreshold: LOCKOUT, scryptCost: SCRYPT_COST });
t.teardown(async () => {
  await device.close();
  await cluster.cleanup();
});

/** An appliance over the shared device with `limits`; closed when the test ends. */
async function appliance(t: Test, limits: Partial<HsmApplianceOptions> = {}): Promise<HsmAppliance> {
  const a = await HsmAppliance.listen({ device, hsmId: h.id, host: '127.0.0.1', port: 0, key, cert, ca, ...limits });
  t.teardown(() => a.close());
  return a;
}

// The crypto officer's connection, on an appliance of its own, for user management and records.
const admin = await HsmAppliance.listen({ device, hsmId: h.id, host: '127.0.0.1', port: 0, key, cert, ca });
await activate(cluster, admin.port);
const co = await connect(cluster, admin.port);
await co.login('admin', 'co-password');
t.teardown(async () => {
  co.destroy();
  await admin.close();
});

async function newUser(name: string): Promise<void> {
  await co.createUser(name, 'CU', `${name}-password`);
}
async function record(name: string): Promise<{ failedLogins: number; locked: boolean }> {
  const u = (await co.listUsers()).find((x) => x.name === name);
  if (!u) throw new Error(`no user ${name}`);
  return u;
}
async function loginAudit(name: string): Promise<Array<Record<string, unknown>>> {
  const lines = (await readFile(device.auditLogPath, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  return lines.filter((e) => e.event === 'login' && e.user === name);
}

interface Reply { status: number; body: Buffer }
type Tls = { ca: Buffer; cert: Buffer | string; key: Buffer | string };

/** A raw mTLS connection speaking frames, so several LOGIN frames can leave in one write and answers are seen as bytes. */
class RawPeer {
  private readonly decoder = new FrameDecoder(1 << 20);
  private readonly waiting = new Map<number, (r: Reply) => void>();
  private nextId = 1;
  /** Request ids in the order their answers arrived. */
  readonly arrivals: number[] = [];

  private constructor(readonly socket: TLSSocket) {
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.decoder.push(chunk)) {
        this.arrivals.push(f.requestId);
        this.waiting.get(f.requestId)?.({ status: f.code, body: Buffer.from(f.body) });
      }
    });
  }

  static async open(t: Test, a: HsmAppliance, tls: Tls): Promise<RawPeer> {
    const socket = tlsConnect({ host: '127.0.0.1', port: a.port, ...tls });
    t.teardown(() => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    return new RawPeer(socket);
  }

  /** Sends one LOGIN frame per attempt, all in one write; the answers in the order of the attempts. */
  logins(attempts: Array<[user: string, password: string]>): { ids: number[]; replies: Promise<Reply[]> } {
    const ids: number[] = [];
    const replies = attempts.map(([user, password]) => {
      const id = this.nextId++;
      ids.push(id);
      return { id, frame: encodeFrame(id, Op.LOGIN, FLAG_JSON, Buffer.from(JSON.stringify({ user, password }))) };
    });
    const answered = Promise.all(replies.map((r) => new Promise<Reply>((resolve) => this.waiting.set(r.id, resolve))));
    this.socket.write(Buffer.concat(replies.map((r) => r.frame)));
    return { ids, replies: answered };
  }
}

const clusterTls = await clientTls(cluster);
const wire = (r: Reply): { code: string; message: string } => JSON.parse(r.body.toString('utf8')) as { code: string; message: string };

t.test('50 wrong passwords at once over 50 connections lock the account after exactly the threshold; then the right one is refused', async (t) => {
  const a = await appliance(t, { maxLoginsPerCertificate: 64 });
  await newUser('bob');
  const peers = await Promise.all(Array.from({ length: 50 }, () => RawPeer.open(t, a, clusterTls)));
  const replies = (await Promise.all(peers.map((p) => p.logins([['bob', 'wrong-password']]).replies))).flat();
  t.ok(replies.every((r) => r.status === STATUS_ERROR && r.body.equals(replies[0]!.body)), 'all 50 refused, with the same bytes');
  t.equal(wire(replies[0]!).code, 'HSM_ERR_BAD_CREDENTIALS');
  t.same(await record('bob'), { name: 'bob', role: 'CU', failedLogins: LOCKOUT, locked: true }, `locked after exactly ${LOCKOUT} counted failures`);

  const audit = await loginAudit('bob');
  t.equal(audit.length, 50, 'every attempt is in the audit log');
  t.equal(audit.filter((e) => e.reason === 'wrong-password').length, LOCKOUT, 'only the threshold were checked against an open account');
  t.equal(audit.filter((e) => e.reason === 'locked').length, 50 - LOCKOUT, 'the rest met the lock (the log says so; the peer was not told)');
  t.equal(audit.filter((e) => e.lockedNow === true).length, 1, 'one attempt locked it');

  const right = await (await RawPeer.open(t, a, clusterTls)).logins([['bob', 'bob-password']]).replies;
  t.ok(right[0]!.body.equals(replies[0]!.body), 'the right password is refused while locked, with the same bytes as a wrong one');
  t.equal((await record('bob')).failedLogins, LOCKOUT, 'attempts on a locked account do not add to the count');
});

t.test('50 LOGIN frames in one write on one connection (per-connection cap raised) count the same', async (t) => {
  const a = await appliance(t, { maxLoginsPerConnection: 64, maxLoginsPerCertificate: 64 });
  await newUser('carl');
  const peer = await RawPeer.open(t, a, clusterTls);
  const replies = await peer.logins(Array.from({ length: 50 }, () => ['carl', 'wrong-password'] as [string, string])).replies;
  t.ok(replies.every((r) => r.status === STATUS_ERROR && wire(r).code === 'HSM_ERR_BAD_CREDENTIALS'), 'all 50 refused');
  t.same(await record('carl'), { name: 'carl', role: 'CU', failedLogins: LOCKOUT, locked: true });
  t.equal((await loginAudit('carl')).filter((e) => e.reason === 'wrong-password').length, LOCKOUT);
});

t.test('the same 50 calls on the device itself lock after exactly the threshold', async (t) => {
  await newUser('dora');
  const out = await Promise.allSettled(Array.from({ length: 50 }, () => device.login('dora', 'wrong-password')));
  t.ok(out.every((o) => o.status === 'rejected' && (o.reason as { code?: string }).code === 'HSM_ERR_BAD_CREDENTIALS'));
  t.same(await record('dora'), { name: 'dora', role: 'CU', failedLogins: LOCKOUT, locked: true });
  await t.rejects(device.login('dora', 'dora-password'), { code: 'HSM_ERR_BAD_CREDENTIALS' }, 'the right password is refused while locked');
});

t.test('an unknown user, a wrong password and a locked account get byte-identical refusals', async (t) => {
  const a = await appliance(t);
  await newUser('erin');
  await newUser('fred');
  for (let i = 0; i < LOCKOUT; i++) await (await RawPeer.open(t, a, clusterTls)).logins([['fred', 'wrong-password']]).replies;
  t.equal((await record('fred')).locked, true, 'fred is locked');
  const ask = async (user: string, password: string): Promise<Reply> => (await (await RawPeer.open(t, a, clusterTls)).logins([[user, password]]).replies)[0]!;
  const wrong = await ask('erin', 'wrong-password');
  const unknown = await ask('nobody-here', 'wrong-password');
  const locked = await ask('fred', 'fred-password');
  t.equal(wrong.status, STATUS_ERROR);
  t.same(wire(wrong), { code: 'HSM_ERR_BAD_CREDENTIALS', message: wire(wrong).message });
  t.notMatch(wire(wrong).message, /attempts? left|erin/, 'no countdown and no name');
  t.ok(unknown.body.equals(wrong.body), `unknown user: same bytes (${unknown.body.toString()})`);
  t.ok(locked.body.equals(wrong.body), `locked account with its right password: same bytes (${locked.body.toString()})`);
  t.match(await loginAudit('nobody-here'), [{ ok: false, reason: 'no-such-user', client: String }], 'the audit log has the truth, and which certificate tried');
  t.match((await loginAudit('fred')).at(-1), { ok: false, reason: 'locked' });
  t.match((await loginAudit('erin')).at(-1), { ok: false, reason: 'wrong-password', failedLogins: 1 });
});

t.test('a second LOGIN on a connection while one is in progress is answered busy at once, unhashed and uncounted', async (t) => {
  const a = await appliance(t);
  await newUser('gina');
  const peer = await RawPeer.open(t, a, clusterTls);
  const { ids, replies } = peer.logins(Array.from({ length: 10 }, () => ['gina', 'wrong-password'] as [string, string]));
  const out = await replies;
  t.equal(wire(out[0]!).code, 'HSM_ERR_BAD_CREDENTIALS', 'the first is checked');
  t.ok(out.slice(1).every((r) => r.status === STATUS_ERROR && wire(r).code === 'HSM_ERR_BUSY'), 'the other nine are busy');
  t.match(wire(out[1]!).message, /this connection already has a login in progress/);
  t.equal(peer.arrivals.indexOf(ids[0]!), 9, 'every busy answer arrived while the first was still being hashed');
  t.same(await record('gina'), { name: 'gina', role: 'CU', failedLogins: 1, locked: false }, 'only the checked attempt counted');
  t.equal(a.stats.loginsOverCap, 9);
  const audit = await loginAudit('gina');
  t.equal(audit.filter((e) => e.code === 'HSM_ERR_BUSY' && e.reason === 'busy').length, 9, 'the busy ones are audited too');
  const later = await peer.logins([['gina', 'gina-password']]).replies;
  t.equal(later[0]!.status, STATUS_OK, 'once the first is answered the connection may log in');
});

t.test('a login that finishes after its connection closed leaves no session behind', async (t) => {
  const a = await appliance(t);
  await newUser('ivan');
  const peer = await RawPeer.open(t, a, clusterTls);
  void peer.logins([['ivan', 'ivan-password']]).replies;
  // Closed while the node still counts the attempt and hashes the password.
  const logged = (async () => {
    const end = Date.now() + 5000;
    while (Date.now() < end) {
      const audit = await loginAudit('ivan');
      if (audit.length > 0) return audit;
      await new Promise((r) => setTimeout(r, 5));
    }
    return [];
  })();
  setTimeout(() => peer.socket.destroy(), 1);
  t.match(await logged, [{ ok: true }], 'the login itself went through');
  const end = Date.now() + 5000;
  const logouts = async (): Promise<number> => (await readFile(device.auditLogPath, 'utf8')).split('\n').filter((l) => l.includes('"event":"logout"') && l.includes('"user":"ivan"')).length;
  while ((await logouts()) === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  t.equal(await logouts(), 1, 'and its session was ended at once');
});

// A second client certificate from the customer CA, as another client of the cluster holds.
async function otherCertificate(): Promise<Tls> {
  const caPem = await readFile(clusterPath(cluster.dir, cluster.manifest.caCert), 'utf8');
  const caKeyPem = await readFile(clusterPath(cluster.dir, cluster.manifest.caKey), 'utf8');
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const caCert = new x509.X509Certificate(caPem);
  const der = Buffer.from(caKeyPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const keys = {
    privateKey: await webcrypto.subtle.importKey('pkcs8', der, alg, true, ['sign']),
    publicKey: await caCert.publicKey.export(alg, ['verify'], webcrypto),
  };
  const leaf = await createClientCert({ cert: caCert, keys });
  return { ca, cert: leaf.cert.toString('pem'), key: await privateKeyPem(leaf.keys) };
}

t.test('logins in progress are capped per client certificate; another certificate is not held back', async (t) => {
  const a = await appliance(t, { maxLoginsPerCertificate: 2 });
  await newUser('hank');
  const same = await Promise.all(Array.from({ length: 6 }, () => RawPeer.open(t, a, clusterTls)));
  const other = await RawPeer.open(t, a, await otherCertificate());
  const sent = [...same, other].map((p) => p.logins([['hank', 'hank-password']]).replies);
  const out = (await Promise.all(sent)).flat();
  const mine = out.slice(0, 6);
  t.equal(mine.filter((r) => r.status === STATUS_OK).length, 2, 'two logins with the shared certificate were checked (and succeeded)');
  const busy = mine.filter((r) => r.status === STATUS_ERROR);
  t.equal(busy.length, 4);
  t.ok(busy.every((r) => wire(r).code === 'HSM_ERR_BUSY' && /too many logins in progress with this client certificate/.test(wire(r).message)), 'the rest answered busy');
  t.equal(out[6]!.status, STATUS_OK, 'the other certificate logged in meanwhile');
  t.equal(a.stats.loginsOverCap, 4);
  t.equal((await record('hank')).failedLogins, 0, 'busy answers count as no attempt on the account');
  // The places are given back with each verdict: the four refused log in when they retry in turn.
  for (const p of same.filter((_p, i) => mine[i]!.status === STATUS_ERROR)) t.equal((await p.logins([['hank', 'hank-password']]).replies)[0]!.status, STATUS_OK, 'a retry logs in');
});

t.test('a cluster client retries a login answered busy, with backoff', async (t) => {
  let calls = 0;
  const link = { closed: new Promise<void>(() => undefined), close: async () => undefined } as unknown as HsmLink;
  const node = new HsmNode<HsmLink>({ id: 'hsm-1', host: '127.0.0.1', port: 1 }, async () => {
    if (++calls === 1) throw Object.assign(new Error('too many logins in progress'), { code: 'HSM_ERR_BUSY' });
    return link;
  }, { user: 'cu', password: 'pw' }, { onConnected: () => undefined }, { reconnectMinMs: 10, reconnectMaxMs: 40, healthIntervalMs: 60_000 });
  t.teardown(() => node.close());
  await node.start();
  const end = Date.now() + 2000;
  while (node.status !== 'up' && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  t.equal(node.status, 'up', 'connected on the retry');
  t.equal(calls, 2);
});
