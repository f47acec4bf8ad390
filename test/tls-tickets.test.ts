// Session-ticket keys: tickets open while their key is accepted, and not after; tampering,
// foreign keys and garbage all yield null; workers sharing a secret open each other's tickets.
import t from 'tap';
import { TicketKeys } from '../src/tls/tickets.js';
import { TlsError } from '../src/tls/alert.js';

const HOUR = 3_600_000;

function clock(start = 1_000 * HOUR): { now: () => number; advance: (ms: number) => void } {
  let now = start;
  return { now: () => now, advance: (ms) => { now += ms; } };
}

t.test('a sealed ticket opens to the same contents', async (t) => {
  const keys = new TicketKeys();
  const pt = Buffer.from('resumption secret and friends');
  const ticket = keys.seal(pt);
  t.equal(ticket.length, 16 + 12 + pt.length + 16);
  t.ok(keys.open(ticket)?.equals(pt));
  t.not(ticket.subarray(28, 28 + pt.length).toString(), pt.toString(), 'contents are encrypted');
});

t.test('two seals of the same contents differ (fresh nonce)', async (t) => {
  const keys = new TicketKeys();
  t.not(keys.seal(Buffer.from('x')).toString('hex'), keys.seal(Buffer.from('x')).toString('hex'));
});

t.test('after rotation new tickets use a new key and old tickets still open', async (t) => {
  const c = clock();
  const keys = new TicketKeys({ now: c.now });
  const old = keys.seal(Buffer.from('old'));
  c.advance(HOUR);
  const fresh = keys.seal(Buffer.from('new'));
  t.not(old.subarray(0, 16).toString('hex'), fresh.subarray(0, 16).toString('hex'), 'different key name');
  t.equal(keys.open(old)?.toString(), 'old');
  t.equal(keys.open(fresh)?.toString(), 'new');
});

t.test('a ticket stops opening once its key leaves the accept window', async (t) => {
  const c = clock();
  const keys = new TicketKeys({ now: c.now, rotateEveryMs: HOUR, acceptForMs: 2 * HOUR });
  const ticket = keys.seal(Buffer.from('t'));
  c.advance(2 * HOUR - 1);
  t.equal(keys.open(ticket)?.toString(), 't', 'still open just inside the window');
  c.advance(1);
  t.equal(keys.open(ticket), null, 'expired');
});

t.test('tampering with any part of a ticket makes it not open', async (t) => {
  const keys = new TicketKeys();
  const ticket = keys.seal(Buffer.from('some ticket contents'));
  let rejected = 0;
  for (let i = 0; i < ticket.length; i++) {
    const bad = Buffer.from(ticket); bad[i]! ^= 0x80;
    if (keys.open(bad) === null) rejected++;
  }
  t.equal(rejected, ticket.length);
  t.equal(keys.open(ticket.subarray(0, ticket.length - 1)), null, 'truncated');
  t.equal(keys.open(Buffer.alloc(10)), null, 'too short');
  t.equal(keys.open(Buffer.alloc(0)), null, 'empty');
});

t.test('a ticket from another process (random keys) does not open', async (t) => {
  const a = new TicketKeys(); const b = new TicketKeys();
  t.equal(b.open(a.seal(Buffer.from('x'))), null);
});

t.test('workers sharing a 48-byte secret open each other\'s tickets, across a rotation', async (t) => {
  const secret = Buffer.alloc(48, 7);
  const c = clock();
  const a = new TicketKeys({ secret, now: c.now }); const b = new TicketKeys({ secret, now: c.now });
  const ticket = a.seal(Buffer.from('shared'));
  t.equal(b.open(ticket)?.toString(), 'shared');
  c.advance(HOUR);
  t.equal(b.open(ticket)?.toString(), 'shared', 'previous epoch still accepted');
  c.advance(HOUR);
  t.equal(b.open(ticket), null, 'expired for everyone');
  const other = new TicketKeys({ secret: Buffer.alloc(48, 8), now: c.now });
  t.equal(other.open(a.seal(Buffer.from('x'))), null, 'a different secret does not open it');
});

t.test('bad configuration is refused with a clear error', async (t) => {
  t.throws(() => new TicketKeys({ secret: Buffer.alloc(32) }), TlsError);
  t.throws(() => new TicketKeys({ rotateEveryMs: 0 }), TlsError);
  t.throws(() => new TicketKeys({ rotateEveryMs: 1000, acceptForMs: 500 }), TlsError);
});
