// ClusterClient.login against in-process fake HSMs that, like the real ones, refuse a second login
// on a connection: the links are logged in when they connect, so a login with the same
// credentials keeps them, and a login as another user replaces each link with a new one.
import t from 'tap';
import { createHash } from 'node:crypto';
import { ClusterClient } from '../src/hsm/client/cluster-client.js';
import type { HsmConnection } from '../src/hsm/client/connection.js';
import type { LoginCredentials } from '../src/hsm/client/link.js';
import type { HsmInfo, StateDigest } from '../src/hsm/protocol/types.js';

const USERS: Record<string, string> = { alice: 'pw-a', bob: 'pw-b' };

class FakeConn {
  readonly closed: Promise<void>;
  private onClosed!: () => void;
  user: { user: string; role: string } | undefined;
  logins = 0;
  isClosed = false;
  constructor(readonly hsmId: string) {
    this.closed = new Promise((r) => { this.onClosed = r; });
  }
  async login(user: string, password: string): Promise<{ user: string; role: string }> {
    if (this.user) throw Object.assign(new Error(`already logged in as ${this.user.user}`), { code: 'HSM_ERR_ALREADY_LOGGED_IN' });
    if (USERS[user] !== password) throw Object.assign(new Error('login failed: wrong user name or password'), { code: 'HSM_ERR_BAD_CREDENTIALS' });
    this.logins++;
    this.user = { user, role: 'CU' };
    return this.user;
  }
  async stateDigest(): Promise<StateDigest> {
    return { version: 1, digest: createHash('sha256').update('same').digest('hex'), users: 2, tokenKeys: 0 };
  }
  async info(): Promise<HsmInfo> {
    return { hsmId: this.hsmId, profile: 'unlimited', units: 1, utilisation: 0, queued: 0, inService: 0, occupancy: { token: 0, session: 0, max: 3500 }, users: 2, state: await this.stateDigest() };
  }
  async close(): Promise<void> {
    this.isClosed = true;
    this.onClosed();
  }
}

async function cluster(t: { teardown(fn: () => unknown): void }): Promise<{ c: ClusterClient; links: FakeConn[] }> {
  const links: FakeConn[] = [];
  const c = await ClusterClient.connect({
    members: ['hsm-1', 'hsm-2'].map((id, i) => ({ id, host: '127.0.0.1', port: 1000 + i })),
    credentials: { user: 'alice', password: 'pw-a' },
    factory: async (a, login: LoginCredentials) => {
      const l = new FakeConn(a.id);
      await l.login(login.user, login.password);
      links.push(l);
      return l as unknown as HsmConnection;
    },
    waitForHsmMs: 200,
    node: { healthIntervalMs: 60_000, reconnectMinMs: 60_000, reconnectMaxMs: 60_000 },
  });
  t.teardown(() => c.close());
  return { c, links };
}

const inRotation = (c: ClusterClient): string[] => c.stats().filter((s) => s.inRotation).map((s) => s.hsm);

t.test('login with the credentials the links logged in with keeps them (no second login on a link)', async (t) => {
  const { c, links } = await cluster(t);
  t.same(await c.login('alice', 'pw-a'), { user: 'alice', role: 'CU' });
  t.equal(links.length, 2, 'no new links');
  t.same(links.map((l) => l.logins), [1, 1], 'each link logged in once');
  t.same(inRotation(c), ['hsm-1', 'hsm-2']);
});

t.test('login as another user opens a new, logged-in link per HSM and closes the old ones', async (t) => {
  const { c, links } = await cluster(t);
  t.same(await c.login('bob', 'pw-b'), { user: 'bob', role: 'CU' });
  t.equal(links.length, 4);
  t.ok(links.slice(0, 2).every((l) => l.isClosed), 'the old links are closed');
  t.same(links.slice(2).map((l) => l.user?.user), ['bob', 'bob']);
  t.equal(c.user?.user, 'bob');
  t.same(inRotation(c), ['hsm-1', 'hsm-2'], 'the HSMs stay in rotation');
});

t.test('a refused login keeps the current links and reports the refusal', async (t) => {
  const { c, links } = await cluster(t);
  await t.rejects(c.login('bob', 'wrong'), { code: 'HSM_ERR_BAD_CREDENTIALS' });
  t.equal(links.length, 2);
  t.notOk(links.some((l) => l.isClosed));
  t.same(inRotation(c), ['hsm-1', 'hsm-2']);
});
