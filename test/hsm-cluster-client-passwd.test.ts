// A CU's own password change through ClusterClient, against in-process fake HSMs: it follows the
// replication discipline of other user changes — applied on every HSM in rotation before it is
// acknowledged, and an HSM that fails part-way leaves rotation instead of keeping the old password
// while serving.
import t from 'tap';
import { createHash } from 'node:crypto';
import { ClusterClient } from '../src/hsm/client/cluster-client.js';
import type { HsmConnection } from '../src/hsm/client/connection.js';
import type { HsmInfo, StateDigest } from '../src/hsm/protocol/types.js';

class FakeHsm {
  hash = 'pw0';
  failChange = false;
  changes = 0;
  constructor(readonly id: string) {}
}

// Only what ClusterClient touches for a login, health checks, digests and a password change.
class FakeConn {
  readonly closed: Promise<void>;
  private onClosed!: () => void;
  readonly user = { user: 'alice', role: 'CU' };
  constructor(readonly hsm: FakeHsm) {
    this.closed = new Promise((r) => { this.onClosed = r; });
  }
  async stateDigest(): Promise<StateDigest> {
    return { version: this.hsm.changes, digest: createHash('sha256').update(this.hsm.hash).digest('hex'), users: 2, tokenKeys: 0 };
  }
  async info(): Promise<HsmInfo> {
    return { hsmId: this.hsm.id, profile: 'unlimited', units: 1, utilisation: 0, queued: 0, inService: 0, occupancy: { token: 0, session: 0, max: 3500 }, users: 2, state: await this.stateDigest() };
  }
  async changePassword(pw: string, _opts?: unknown, nonce?: Buffer): Promise<{ user: string; role: string }> {
    if (this.hsm.failChange) throw Object.assign(new Error(`connection to ${this.hsm.id} closed`), { code: 'HSM_ERR_CONNECTION_CLOSED', hsmId: this.hsm.id });
    this.hsm.hash = `${pw}/${nonce?.toString('hex') ?? ''}`;
    this.hsm.changes++;
    return this.user;
  }
  async close(): Promise<void> {
    this.onClosed();
  }
}

async function cluster(t: { teardown(fn: () => unknown): void }): Promise<{ c: ClusterClient; hsms: FakeHsm[] }> {
  const hsms = [new FakeHsm('hsm-1'), new FakeHsm('hsm-2'), new FakeHsm('hsm-3')];
  const c = await ClusterClient.connect({
    members: hsms.map((h, i) => ({ id: h.id, host: '127.0.0.1', port: 1000 + i })),
    credentials: { user: 'alice', password: 'pw0' },
    factory: async (a) => new FakeConn(hsms.find((h) => h.id === a.id)!) as unknown as HsmConnection,
    waitForHsmMs: 200,
    node: { healthIntervalMs: 60_000, reconnectMinMs: 60_000, reconnectMaxMs: 60_000 },
  });
  t.teardown(() => c.close());
  return { c, hsms };
}

const inRotation = (c: ClusterClient): string[] => c.stats().filter((s) => s.inRotation).map((s) => s.hsm);

t.test("a CU's password change reaches every HSM with one hash", async (t) => {
  const { c, hsms } = await cluster(t);
  await c.changePassword('pw1');
  t.equal(new Set(hsms.map((h) => h.hash)).size, 1, 'same hash everywhere');
  t.match(hsms[0]!.hash, /^pw1\//);
  t.same(inRotation(c), ['hsm-1', 'hsm-2', 'hsm-3']);
});

t.test('an HSM that fails during the change leaves rotation; the HSMs in rotation agree', async (t) => {
  for (const failing of ['hsm-1', 'hsm-2', 'hsm-3']) {
    const { c, hsms } = await cluster(t);
    hsms.find((h) => h.id === failing)!.failChange = true;
    const outcome = await c.changePassword('pw1').then(() => 'acknowledged', (err: { code?: string }) => err.code);
    const serving = hsms.filter((h) => inRotation(c).includes(h.id));
    t.notOk(inRotation(c).includes(failing), `${failing} failed and is out of rotation (${outcome})`);
    t.equal(new Set(serving.map((h) => h.hash)).size, 1, `the HSMs in rotation agree (${outcome})`);
    if (outcome === 'acknowledged') t.ok(serving.every((h) => h.hash.startsWith('pw1/')), 'acknowledged: all of them have the new password');
    else {
      t.equal(outcome, 'HSM_ERR_NOT_REPEATED');
      t.ok(serving.every((h) => h.hash.startsWith('pw0/') || h.hash === 'pw0'), 'not acknowledged: they keep (or were set back to) the old one');
    }
    await c.close();
  }
});
