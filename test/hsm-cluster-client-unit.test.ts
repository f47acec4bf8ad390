// ClusterBase (the cluster client's balancing, retry, failover and sync gate) against in-process
// fake HSM links: each behaviour alone, without processes or sockets.
import t from 'tap';
import { createHash } from 'node:crypto';
import { ClusterBase } from '../src/hsm/client/cluster-base.js';
import { HsmNode } from '../src/hsm/client/node.js';
import type { HsmAddress, HsmLink } from '../src/hsm/client/link.js';
import type { HsmInfo, KeyInfo, StateDigest } from '../src/hsm/protocol/types.js';

const coded = (code: string): Error => Object.assign(new Error(code), { code });

class FakeHsm {
  calls = 0;
  users = 'admin';
  keys = new Map<string, string>();
  reachable = true;
  /** What `work` does on this HSM. */
  behaviour: () => Promise<string> = async () => this.id;
  infoHangs = false;
  /** When set, the next state digest waits for it (an admission caught mid-way). */
  digestGate?: Promise<void>;
  digestWaiting = false;
  /** The state version the HSM reports (changes since its process started). */
  version = 0;
  /** Refuses user-table imports, as an HSM does for a CU (so it cannot be resynced). */
  refuseImport = false;
  constructor(readonly id: string) {}
  digest(): string {
    return createHash('sha256').update(this.users + [...this.keys].sort().join(',')).digest('hex');
  }
}

class FakeLink implements HsmLink {
  readonly closed: Promise<void>;
  private onClosed!: () => void;
  constructor(readonly hsm: FakeHsm) {
    this.closed = new Promise((r) => { this.onClosed = r; });
  }
  work(): Promise<string> {
    this.hsm.calls++;
    return this.hsm.behaviour();
  }
  async info(): Promise<HsmInfo> {
    if (this.hsm.infoHangs) return new Promise(() => undefined);
    return { hsmId: this.hsm.id, profile: 'unlimited', units: 1, utilisation: 0, queued: 0, inService: 0, occupancy: { token: this.hsm.keys.size, session: 0, max: 3500 }, users: 1, state: await this.stateDigest() };
  }
  async stateDigest(): Promise<StateDigest> {
    const gate = this.hsm.digestGate;
    if (gate) {
      this.hsm.digestGate = undefined;
      this.hsm.digestWaiting = true;
      await gate;
    }
    return { version: this.hsm.version, digest: this.hsm.digest(), users: 1, tokenKeys: this.hsm.keys.size };
  }
  async exportMasked(keyId: string): Promise<Buffer> {
    return Buffer.from(`${keyId}=${this.hsm.keys.get(keyId) ?? ''}`);
  }
  async importMasked(masked: Buffer): Promise<KeyInfo> {
    const [id, v] = masked.toString().split('=') as [string, string];
    this.hsm.keys.set(id, v);
    return { keyId: id } as KeyInfo;
  }
  async exportUsers(): Promise<Buffer> {
    return Buffer.from(this.hsm.users);
  }
  async importUsers(masked: Buffer): Promise<void> {
    if (this.hsm.refuseImport) throw coded('HSM_ERR_PERMISSION_DENIED');
    this.hsm.users = masked.toString();
  }
  async listTokenKeyIds(): Promise<string[]> {
    return [...this.hsm.keys.keys()];
  }
  async deleteKey(keyId: string): Promise<void> {
    this.hsm.keys.delete(keyId);
  }
  async close(): Promise<void> {
    this.onClosed();
  }
}

async function cluster(t: { teardown(fn: () => unknown): void }, n: number, opts: { busyBackoffMs?: number; waitForHsmMs?: number; healthTimeoutMs?: number } = {}, prepare?: (hsms: FakeHsm[]) => void): Promise<{ c: ClusterBase<FakeLink>; hsms: FakeHsm[] }> {
  const hsms = Array.from({ length: n }, (_, i) => new FakeHsm(`hsm-${i + 1}`));
  prepare?.(hsms);
  const members: HsmAddress[] = hsms.map((h, i) => ({ id: h.id, host: '127.0.0.1', port: 1000 + i }));
  const c = new ClusterBase<FakeLink>({
    members,
    credentials: { user: 'cu', password: 'pw' },
    factory: async (a) => {
      const h = hsms.find((x) => x.id === a.id)!;
      if (!h.reachable) throw coded('HSM_ERR_UNREACHABLE');
      return new FakeLink(h);
    },
    busyBackoffMs: opts.busyBackoffMs ?? 1,
    waitForHsmMs: opts.waitForHsmMs ?? 200,
    node: { healthIntervalMs: 60_000, healthTimeoutMs: opts.healthTimeoutMs ?? 1000, reconnectMinMs: 10, reconnectMaxMs: 20 },
  });
  await c.start();
  t.teardown(() => c.close());
  return { c, hsms };
}

const work = (c: ClusterBase<FakeLink>, safe = true): Promise<string> => c.execute('sign', { safe }, (l) => l.work());

t.test('a busy answer is retried on another HSM', async (t) => {
  const { c, hsms } = await cluster(t, 2);
  hsms[0]!.behaviour = async () => { throw coded('HSM_ERR_BUSY'); };
  for (let i = 0; i < 4; i++) t.equal(await work(c), 'hsm-2');
  t.ok(c.node('hsm-1')?.available, 'a busy HSM stays in rotation');
});

t.test('busy everywhere gives up after 3 retries with a clear busy error', async (t) => {
  const { c, hsms } = await cluster(t, 2);
  for (const h of hsms) h.behaviour = async () => { throw coded('HSM_ERR_BUSY'); };
  await t.rejects(work(c), { code: 'HSM_ERR_BUSY', message: /add an HSM/ });
  t.equal(hsms[0]!.calls + hsms[1]!.calls, 4, 'one try and 3 retries');
});

t.test('a safe request in flight on a failing HSM is repeated on another; the HSM leaves rotation', async (t) => {
  const { c, hsms } = await cluster(t, 2);
  hsms[0]!.behaviour = async () => { throw coded('HSM_ERR_CONNECTION_CLOSED'); };
  hsms[1]!.behaviour = async () => { await new Promise((r) => setTimeout(r, 5)); return 'hsm-2'; };
  // The second HSM is busier, so the first pick is hsm-1.
  const slow = work(c);
  t.equal(await work(c), 'hsm-2');
  t.equal(await slow, 'hsm-2');
  t.notOk(c.node('hsm-1')?.available, 'hsm-1 is out of rotation');
});

t.test('an unsafe request (key creation) is never repeated after an HSM failure', async (t) => {
  const { c, hsms } = await cluster(t, 2);
  for (const h of hsms) h.behaviour = async () => { throw coded('HSM_ERR_TIMEOUT'); };
  await t.rejects(c.execute('generateKeyPair', { safe: false }, (l) => l.work()), { code: 'HSM_ERR_NOT_REPEATED', message: /must not happen twice/ });
  t.equal(hsms[0]!.calls + hsms[1]!.calls, 1, 'exactly one HSM saw the request');
});

t.test("an HSM's own answer (no such key) is returned as is, and the HSM stays in rotation", async (t) => {
  const { c, hsms } = await cluster(t, 2);
  for (const h of hsms) h.behaviour = async () => { throw coded('HSM_ERR_NO_SUCH_KEY'); };
  await t.rejects(work(c), { code: 'HSM_ERR_NO_SUCH_KEY' });
  t.equal(hsms[0]!.calls + hsms[1]!.calls, 1);
  t.ok(c.node('hsm-1')?.available && c.node('hsm-2')?.available);
});

t.test('requests go to the HSM with the fewest outstanding', async (t) => {
  const { c, hsms } = await cluster(t, 2);
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  hsms[0]!.behaviour = async () => { await gate; return 'hsm-1'; };
  hsms[1]!.behaviour = async () => { await gate; return 'hsm-2'; };
  const pending = Array.from({ length: 6 }, () => work(c));
  t.same(c.stats().map((s) => s.inFlight), [3, 3], 'six requests split three and three');
  release();
  await Promise.all(pending);
  t.same(c.stats().map((s) => s.inFlight), [0, 0]);
});

t.test('with no HSM reachable a request fails with a message that says what to do', async (t) => {
  const { c, hsms } = await cluster(t, 1, { waitForHsmMs: 50 });
  hsms[0]!.reachable = false;
  c.node('hsm-1')!.markDown(coded('HSM_ERR_CONNECTION_CLOSED'));
  await t.rejects(work(c), { code: 'HSM_ERR_NO_HEALTHY_HSM', message: /cluster status/ });
});

t.test('a health check that misses its deadline takes the HSM out of rotation', async (t) => {
  const { c, hsms } = await cluster(t, 2, { healthTimeoutMs: 30 });
  hsms[0]!.infoHangs = true;
  await c.node('hsm-1')!.healthCheck();
  t.notOk(c.node('hsm-1')?.available);
  t.equal(await work(c), 'hsm-2');
});

t.test('an HSM that returns out of sync is resynced from a peer before it serves', async (t) => {
  const { c, hsms } = await cluster(t, 2);
  const [h1, h2] = hsms as [FakeHsm, FakeHsm];
  h1.reachable = false;
  c.node('hsm-1')!.markDown(coded('HSM_ERR_CONNECTION_CLOSED'));
  // Changes while hsm-1 is away.
  h2.keys.set('k-new', 'material');
  h2.users = 'admin,alice';
  h1.keys.set('k-deleted', 'old');
  h1.reachable = true;
  await c.waitInRotation('hsm-1', 2000);
  t.equal(h1.digest(), h2.digest(), 'digests match once it is back in rotation');
  t.equal(h1.users, 'admin,alice');
  t.notOk(h1.keys.has('k-deleted'), 'a key deleted meanwhile is deleted on it too');
  t.match(c.resyncs.get('hsm-1'), { keysCopied: 1, keysDeleted: 1, inSync: true });
});

t.test('at start, an HSM that disagrees with the majority is resynced from it', async (t) => {
  const { c, hsms } = await cluster(t, 3, {}, (h) => {
    for (const x of h) x.keys.set('k1', 'v1');
    h[2]!.users = 'admin,stale';
  });
  await c.waitInRotation('hsm-3', 2000);
  t.ok(c.stats().every((s) => s.inRotation), 'all three serve');
  t.equal(hsms[2]!.users, 'admin', 'the odd one took the majority user table');
  t.equal(new Set(hsms.map((h) => h.digest())).size, 1);
});

t.test('a change whose origin HSM fails before it reaches the others is not acknowledged', async (t) => {
  const { c } = await cluster(t, 2);
  let origin = '';
  const p = c.replicated('generateKey', async (l, node) => {
    origin = node.id;
    l.hsm.keys.set('k', 'v');
    return 'k';
  }, async (o) => {
    throw Object.assign(new Error('connection closed'), { code: 'HSM_ERR_CONNECTION_CLOSED', hsmId: (o as FakeLink).hsm.id });
  });
  await t.rejects(p, { code: 'HSM_ERR_NOT_REPEATED', message: /must not happen twice/ });
  t.notOk(c.node(origin)?.available, 'the failed origin is out of rotation');
  const other = origin === 'hsm-1' ? 'hsm-2' : 'hsm-1';
  t.ok(c.node(other)?.available, 'the healthy target stays in rotation');
});

t.test('a creation whose origin fails half-way is taken back on the targets that already had it', async (t) => {
  const { c, hsms } = await cluster(t, 3);
  let origin = '';
  let firstTarget = '';
  const p = c.replicated('generateKey', async (l, node) => {
    origin = node.id;
    l.hsm.keys.set('k', 'v');
    return 'k';
  }, async (o, _r, target) => {
    // The first target gets its copy; then the origin's connection fails before the second.
    if (!firstTarget) {
      firstTarget = target.hsm.id;
      target.hsm.keys.set('k', 'v');
      return;
    }
    throw Object.assign(new Error('connection closed'), { code: 'HSM_ERR_CONNECTION_CLOSED', hsmId: (o as FakeLink).hsm.id });
  }, undefined, async (target, id) => {
    target.hsm.keys.delete(id);
  });
  await t.rejects(p, { code: 'HSM_ERR_NOT_REPEATED' }, 'not acknowledged');
  const targets = hsms.filter((h) => h.id !== origin);
  t.ok(firstTarget, `${firstTarget} had received a copy`);
  t.same(targets.map((h) => h.keys.has('k')), [false, false], 'no HSM in rotation keeps the unacknowledged key');
  t.equal(new Set(targets.map((h) => h.digest())).size, 1, 'the HSMs in rotation agree');
  t.ok(targets.every((h) => c.node(h.id)?.available), 'and both stay in rotation');
});

t.test('a target that fails during replication leaves rotation; the change is acknowledged', async (t) => {
  const { c } = await cluster(t, 2);
  let origin = '';
  const r = await c.replicated('generateKey', async (l, node) => {
    origin = node.id;
    l.hsm.keys.set('k', 'v');
    return 'k';
  }, async (_o, _r, target) => {
    throw Object.assign(new Error('connection closed'), { code: 'HSM_ERR_CONNECTION_CLOSED', hsmId: target.hsm.id });
  });
  t.equal(r, 'k');
  const other = origin === 'hsm-1' ? 'hsm-2' : 'hsm-1';
  t.notOk(c.node(other)?.available, 'the failed target is out of rotation (resynced when it returns)');
  t.ok(c.node(origin)?.available);
});

// A node whose every connect attempt fails with `err`; records when each attempt happened.
function failingNode(err: Error): { node: HsmNode<FakeLink>; attempts: number[] } {
  const attempts: number[] = [];
  const node = new HsmNode<FakeLink>({ id: 'hsm-1', host: '127.0.0.1', port: 1000 }, async () => {
    attempts.push(performance.now());
    throw err;
  }, { user: 'cu', password: 'pw' }, { onConnected: () => undefined }, { reconnectMinMs: 10, reconnectMaxMs: 40, healthIntervalMs: 60_000 });
  return { node, attempts };
}

t.test('an unreachable HSM is retried with exponential backoff, capped', async (t) => {
  const { node, attempts } = failingNode(coded('HSM_ERR_UNREACHABLE'));
  await node.start();
  await new Promise((r) => setTimeout(r, 1000));
  await node.close();
  const gaps = attempts.slice(1).map((a, i) => a - attempts[i]!);
  // Delays 10, 20, 40, then 40 (the cap). Timers never fire early; late is fine.
  t.ok(gaps[0]! >= 9 && gaps[1]! >= 19 && gaps[2]! >= 39, `the first delays double (${gaps.slice(0, 3).map((g) => g.toFixed(0)).join(', ')} ms)`);
  // A fixed 10 ms retry would make ~100 attempts in 1 s; doubling without a cap ~8.
  t.ok(attempts.length >= 12 && attempts.length <= 40, `${attempts.length} attempts in 1 s: backed off, and capped at 40 ms`);
  t.equal(node.status, 'closed');
});

t.test('a refused login is not retried (retrying would lock the account)', async (t) => {
  const { node, attempts } = failingNode(coded('HSM_ERR_BAD_CREDENTIALS'));
  await node.start();
  await new Promise((r) => setTimeout(r, 200));
  t.equal(attempts.length, 1, 'one attempt only');
  t.equal(node.status, 'down');
  node.setCredentials({ user: 'cu', password: 'new' });
  await new Promise((r) => setTimeout(r, 50));
  t.equal(attempts.length, 2, 'new credentials try again, once');
  await node.close();
});

t.test('an HSM whose link is replaced while its sync check runs still returns to rotation', async (t) => {
  const { c, hsms } = await cluster(t, 2);
  const h1 = hsms[0]!;
  let release!: () => void;
  h1.digestGate = new Promise<void>((r) => { release = r; });
  const node = c.node('hsm-1')!;
  node.markDown(coded('HSM_ERR_CONNECTION_CLOSED'));
  for (let i = 0; i < 200 && !h1.digestWaiting; i++) await new Promise((r) => setTimeout(r, 5));
  t.ok(h1.digestWaiting, 'hsm-1 reconnected and its sync check is under way');
  // The link drops and is re-opened while that check still runs.
  node.markDown(coded('HSM_ERR_CONNECTION_CLOSED'));
  for (let i = 0; i < 200 && node.status !== 'up'; i++) await new Promise((r) => setTimeout(r, 5));
  t.equal(node.status, 'up', 'connected again on a new link');
  release();
  await t.resolves(c.waitInRotation('hsm-1', 2000), 'the new link is admitted once the old check ends');
});

const until = async (cond: () => boolean, ms = 2000): Promise<boolean> => {
  for (const end = Date.now() + ms; !cond() && Date.now() < end;) await new Promise((r) => setTimeout(r, 5));
  return cond();
};

t.test('a lone HSM whose peer is down serves uses of keys but takes no change: nothing proves it is current', async (t) => {
  const { c, hsms } = await cluster(t, 2, {}, (h) => { h[0]!.reachable = false; });
  t.ok(c.node('hsm-2')?.available, 'hsm-2 answered alone: in rotation, read-only');
  t.equal(await work(c), 'hsm-2', 'a signature is served (one HSM down must not stop every handshake)');
  const change = (id: string): Promise<string> => c.replicated('generateKey', async (l) => { l.hsm.keys.set(id, 'v'); return id; }, async (o, k, target) => { await target.importMasked(await o.exportMasked(k)); });
  await t.rejects(change('k-lone'), { code: 'HSM_ERR_UNPROVEN_STATE', message: /generateKey refused: hsm-2 cannot prove it holds the cluster's latest state while hsm-1 is unreachable/ });
  t.notOk(hsms[1]!.keys.has('k-lone'), 'the refused change made nothing');
  hsms[0]!.reachable = true;
  await c.waitInRotation('hsm-1', 2000);
  await c.waitInRotation('hsm-2', 2000);
  t.equal(await change('k-both'), 'k-both', 'once hsm-1 answers and agrees, changes are taken again');
  t.ok(hsms[0]!.keys.has('k-both') && hsms[1]!.keys.has('k-both'), 'on both HSMs');
});

t.test('a lone HSM that served read-only while it was behind leaves rotation when its current peer returns', async (t) => {
  const { c, hsms } = await cluster(t, 2, {}, (h) => {
    h[0]!.reachable = false;
    h[0]!.keys.set('k-missed', 'made while hsm-2 was away');
    h[0]!.version = 10;
  });
  const [h1, h2] = hsms as [FakeHsm, FakeHsm];
  t.ok(c.node('hsm-2')?.available, 'hsm-2 serves alone, read-only');
  h1.reachable = true;
  await c.waitInRotation('hsm-1', 2000);
  t.ok(await until(() => h2.keys.has('k-missed')), 'hsm-2 was resynced from hsm-1, the HSM with the newer state');
  await c.waitInRotation('hsm-2', 2000);
  t.pass('both serve again');
});

t.test('an HSM seen behind a peer is never chosen as current, whatever its version, nor serves alone', async (t) => {
  const { c, hsms } = await cluster(t, 2);
  const [h1, h2] = hsms as [FakeHsm, FakeHsm];
  h2.reachable = false;
  c.node('hsm-2')!.markDown(coded('HSM_ERR_CONNECTION_CLOSED'));
  h1.keys.set('k2', 'made while hsm-2 was away');
  // hsm-2 cannot be resynced (a CU-only client) and reports more changes than hsm-1.
  h2.refuseImport = true;
  h2.version = 50;
  h2.reachable = true;
  t.ok(await until(() => (c.node('hsm-2')!.lastError as { code?: string } | undefined)?.code === 'HSM_ERR_PERMISSION_DENIED'), 'hsm-2 is back; its resync was refused');
  t.notOk(c.node('hsm-2')!.available);
  // hsm-1 drops and returns: the two answer with different digests; hsm-2 is known to be behind.
  c.node('hsm-1')!.markDown(coded('HSM_ERR_CONNECTION_CLOSED'));
  await c.waitInRotation('hsm-1', 2000);
  t.notOk(c.node('hsm-2')!.available, 'hsm-2 still out of rotation');
  t.ok(h1.keys.has('k2'), 'hsm-1 kept the key hsm-2 missed (it was not resynced from hsm-2)');
  // hsm-1 goes away; hsm-2 reconnects: alone and behind, it must not serve.
  h1.reachable = false;
  c.node('hsm-1')!.markDown(coded('HSM_ERR_CONNECTION_CLOSED'));
  c.node('hsm-2')!.markDown(coded('HSM_ERR_CONNECTION_CLOSED'));
  t.ok(await until(() => c.node('hsm-2')!.status === 'up'), 'hsm-2 reconnected');
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(c.node('hsm-2')!.available, 'the stale HSM is not put in rotation alone');
  await t.rejects(work(c), { code: 'HSM_ERR_NO_HEALTHY_HSM' });
});

t.test('a change acknowledged while an HSM is being admitted still reaches it', async (t) => {
  const { c, hsms } = await cluster(t, 2);
  const [h1, h2] = hsms as [FakeHsm, FakeHsm];
  let release!: () => void;
  h2.digestGate = new Promise<void>((r) => { release = r; });
  c.node('hsm-2')!.markDown(coded('HSM_ERR_CONNECTION_CLOSED'));
  t.ok(await until(() => h2.digestWaiting), "hsm-2's sync check has read hsm-1's digest and waits for its own");
  // A key is made and acknowledged now: hsm-2 is not in rotation, so it gets no copy.
  await c.replicated('generateKey', async (l) => { l.hsm.keys.set('k-mid', 'v'); return 'k-mid'; }, async (o, id, target) => { await target.importMasked(await o.exportMasked(id)); });
  t.ok(h1.keys.has('k-mid'));
  release();
  await c.waitInRotation('hsm-2', 2000);
  t.ok(await until(() => h2.keys.has('k-mid') && c.node('hsm-2')!.available), 'hsm-2 got the key made during its admission and serves');
  t.equal(h2.digest(), h1.digest());
});
