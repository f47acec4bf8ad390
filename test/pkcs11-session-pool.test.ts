// The session pool alone, over a fake session source: bounds, order, epochs, abort, close.
import t from 'tap';
import { SessionPool } from '../src/engine/pkcs11/session-pool.js';
import type { Session, SessionSource } from '../src/engine/pkcs11/session-pool.js';

class FakeSource implements SessionSource {
  epoch = 0;
  opened = 0;
  retired: Session[] = [];
  failNext: Error | undefined;
  open(): Session {
    if (this.failNext) { const e = this.failNext; this.failNext = undefined; throw e; }
    const h = Buffer.alloc(8);
    h.writeUInt32LE(++this.opened);
    return { handle: h, epoch: this.epoch, dead: false };
  }
  retire(s: Session): void { this.retired.push(s); }
}

t.test('opens sessions lazily, never more than its size', async (t) => {
  const src = new FakeSource();
  const pool = new SessionPool(src, 3);
  const held = await Promise.all([pool.acquire(), pool.acquire(), pool.acquire()]);
  t.equal(src.opened, 3);
  let fourth = false;
  const p = pool.acquire().then((s) => { fourth = true; return s; });
  await new Promise((r) => setImmediate(r));
  t.equal(fourth, false, 'the fourth caller waits');
  t.equal(pool.stats().waiting, 1);
  pool.release(held[0]!);
  const s = await p;
  t.equal(s, held[0], 'gets the released session, no new one');
  t.equal(src.opened, 3);
});

t.test('two callers never hold the same session at once', async (t) => {
  const pool = new SessionPool(new FakeSource(), 4);
  const inUse = new Set<Session>();
  let clash = false;
  await Promise.all(Array.from({ length: 200 }, async (_, i) => {
    const s = await pool.acquire();
    if (inUse.has(s)) clash = true;
    inUse.add(s);
    await new Promise((r) => setTimeout(r, i % 3));
    inUse.delete(s);
    pool.release(s);
  }));
  t.equal(clash, false);
  t.same(pool.stats(), { size: 4, open: 4, idle: 4, busy: 0, waiting: 0 });
});

t.test('waiters are served in arrival order', async (t) => {
  const pool = new SessionPool(new FakeSource(), 1);
  const first = await pool.acquire();
  const order: number[] = [];
  const waits = [1, 2, 3].map((n) => pool.acquire().then((s) => { order.push(n); pool.release(s); }));
  pool.release(first);
  await Promise.all(waits);
  t.same(order, [1, 2, 3]);
});

t.test('sessions of an older epoch are retired, not reused', async (t) => {
  const src = new FakeSource();
  const pool = new SessionPool(src, 2);
  const a = await pool.acquire();
  const b = await pool.acquire();
  pool.release(a);
  src.epoch++;
  pool.release(b);
  t.same(src.retired, [b], 'a busy session of the old epoch is retired on release');
  const c = await pool.acquire();
  t.not(c, a, 'the idle old session is not handed out');
  t.equal(c.epoch, 1);
  t.ok(src.retired.includes(a));
});

t.test('a broken session is retired on release', async (t) => {
  const src = new FakeSource();
  const pool = new SessionPool(src, 1);
  const s = await pool.acquire();
  pool.release(s, true);
  t.same(src.retired, [s]);
  t.not(await pool.acquire(), s);
});

t.test('a failure to open a session rejects that caller only', async (t) => {
  const src = new FakeSource();
  const pool = new SessionPool(src, 2);
  src.failNext = new Error('token gone');
  await t.rejects(pool.acquire(), { message: 'token gone' });
  const s = await pool.acquire();
  t.ok(s, 'the next caller gets a session');
  t.equal(pool.stats().busy, 1);
});

t.test('an aborted waiter leaves the queue and rejects with ENGINE_ERR_ABORTED', async (t) => {
  const pool = new SessionPool(new FakeSource(), 1);
  const held = await pool.acquire();
  const ac = new AbortController();
  const waiting = pool.acquire(ac.signal);
  ac.abort();
  await t.rejects(waiting, { code: 'ENGINE_ERR_ABORTED' });
  t.equal(pool.stats().waiting, 0);
  pool.release(held);
  t.equal(pool.stats().idle, 1, 'the released session is not given to the aborted caller');
});

t.test('an already-aborted signal is refused at once', async (t) => {
  const pool = new SessionPool(new FakeSource(), 1);
  await t.rejects(pool.acquire(AbortSignal.abort()), { code: 'ENGINE_ERR_ABORTED' });
});

t.test('close fails waiters, waits for busy sessions, then retires all', async (t) => {
  const src = new FakeSource();
  const pool = new SessionPool(src, 1);
  const held = await pool.acquire();
  const waiting = pool.acquire();
  let closed = false;
  const closing = pool.close().then(() => { closed = true; });
  await t.rejects(waiting, { code: 'ENGINE_ERR_CLOSED' });
  await new Promise((r) => setImmediate(r));
  t.equal(closed, false, 'still waiting for the busy session');
  pool.release(held);
  await closing;
  t.same(src.retired, [held]);
  await t.rejects(pool.acquire(), { code: 'ENGINE_ERR_CLOSED' });
});
