// Session-ticket keys: tickets open while their key is accepted, and not after; tampering,
// foreign keys and garbage all yield null; workers that install the keys one process exports
// open each other's tickets; every epoch's key is independent randomness (issue 19 §3), so what
// leaks in one epoch opens no ticket of a later one.
import t from 'tap';
import crypto from 'node:crypto';
import { TicketKeys, type SharedTicketKey } from '../src/tls/tickets.js';
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

t.test('workers that install the keys the primary exports open each other\'s tickets, across a rotation', async (t) => {
  const c = clock();
  const primary = new TicketKeys({ now: c.now });
  const a = new TicketKeys({ now: c.now }); const b = new TicketKeys({ now: c.now });
  const share = () => { const keys = primary.export(); a.install(keys); b.install(keys); };
  share();
  const ticket = a.seal(Buffer.from('shared'));
  t.equal(b.open(ticket)?.toString(), 'shared');
  c.advance(primary.msUntilNextShare());
  share(); // what the primary sends a minute before the epoch turns
  c.advance(HOUR);
  const fresh = b.seal(Buffer.from('fresh'));
  t.not(fresh.subarray(0, 16).toString('hex'), ticket.subarray(0, 16).toString('hex'), 'the new epoch seals under its own key');
  t.equal(a.open(fresh)?.toString(), 'fresh', 'the new epoch\'s key reached both before the epoch began');
  t.equal(b.open(ticket)?.toString(), 'shared', 'previous epoch still accepted');
  c.advance(HOUR);
  t.equal(b.open(ticket), null, 'expired for everyone');
  t.equal(new TicketKeys({ now: c.now }).open(a.seal(Buffer.from('x'))), null, 'a process that installed nothing does not open it');
});

t.test('the next epoch\'s key exists only shortly before its epoch begins', async (t) => {
  const c = clock();
  const primary = new TicketKeys({ now: c.now, rotateEveryMs: HOUR, shareAheadMs: 60_000 });
  const epochs = () => primary.export().map((k) => k.epoch);
  const now = Math.floor(c.now() / HOUR);
  t.same(epochs(), [now], 'at the start of an epoch: its own key only');
  t.equal(primary.msUntilNextShare(), HOUR - 60_000);
  c.advance(HOUR - 60_000);
  t.same(epochs(), [now, now + 1], 'a minute before the next epoch: its key too');
  t.equal(primary.msUntilNextShare(), HOUR, 'and the one after is due an epoch later');
});

// AES-256-GCM open of a ticket (name ‖ nonce ‖ ciphertext ‖ tag, name as AAD) under a candidate key.
function opensUnder(ticket: Buffer, key: Buffer): boolean {
  try {
    const d = crypto.createDecipheriv('aes-256-gcm', key, ticket.subarray(16, 28));
    d.setAAD(ticket.subarray(0, 16));
    d.setAuthTag(ticket.subarray(ticket.length - 16));
    d.update(ticket.subarray(28, ticket.length - 16));
    d.final();
    return true;
  } catch {
    return false;
  }
}

// Every key one could compute from leaked key material: the bytes themselves, and HKDF of them
// the way epoch keys were once derived from a long-lived secret, for a range of epochs and purposes.
function candidatesFrom(leaked: SharedTicketKey[], epochs: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (const k of leaked) {
    for (const ikm of [Buffer.from(k.key, 'hex'), Buffer.concat([Buffer.from(k.name, 'hex'), Buffer.from(k.key, 'hex')])]) {
      out.push(ikm.subarray(0, 32));
      for (const e of epochs) {
        const info = Buffer.alloc(8); info.writeBigUInt64BE(BigInt(e));
        out.push(Buffer.from(crypto.hkdfSync('sha256', ikm, Buffer.from('hsmproxy ticket keys v1'), info, 48)).subarray(16));
        out.push(Buffer.from(crypto.hkdfSync('sha256', ikm, Buffer.alloc(0), info, 32)));
      }
    }
  }
  return out;
}

t.test('epoch keys are independent: epoch 1\'s key gives no way to open a ticket of epoch 2', async (t) => {
  const c = clock();
  const keys = new TicketKeys({ now: c.now });
  const first = keys.seal(Buffer.from('epoch 1'));
  const epoch1 = keys.export().filter((k) => k.name === first.subarray(0, 16).toString('hex'));
  t.equal(epoch1.length, 1, 'captured epoch 1\'s key');
  t.ok(opensUnder(first, Buffer.from(epoch1[0]!.key, 'hex')), 'the capture is the real key: it opens epoch 1\'s ticket');
  c.advance(HOUR);
  const second = keys.seal(Buffer.from('epoch 2'));
  const e = Math.floor(c.now() / HOUR);
  const tried = candidatesFrom(epoch1, [e - 2, e - 1, e, e + 1]);
  t.equal(tried.filter((k) => opensUnder(second, k)).length, 0, `none of ${tried.length} keys computed from epoch 1's material opens it`);
  const attacker = new TicketKeys({ now: c.now });
  attacker.install(epoch1);
  t.equal(attacker.open(second), null, 'nor does a TicketKeys given epoch 1\'s key');
  t.equal(attacker.open(first)?.toString(), 'epoch 1', 'which opens epoch 1\'s tickets only');
});

t.test('what a worker held in one epoch opens no ticket sealed two epochs later', async (t) => {
  const c = clock();
  const primary = new TicketKeys({ now: c.now });
  const worker = new TicketKeys({ now: c.now });
  worker.install(primary.export());
  c.advance(primary.msUntilNextShare());
  const leaked = primary.export(); // everything a worker is ever given in epoch 1, next epoch's key included
  worker.install(leaked);
  for (let i = 0; i < 2; i++) {
    c.advance(HOUR);
    worker.install(primary.export());
  }
  const later = worker.seal(Buffer.from('later'));
  const attacker = new TicketKeys({ now: c.now });
  attacker.install(leaked);
  t.equal(attacker.open(later), null);
  const e = Math.floor(c.now() / HOUR);
  t.equal(candidatesFrom(leaked, [e - 3, e - 2, e - 1, e, e + 1]).filter((k) => opensUnder(later, k)).length, 0, 'no key computed from the leak opens it');
});

t.test('tickets of the current and the previous epoch resume, older ones do not', async (t) => {
  const c = clock();
  const primary = new TicketKeys({ now: c.now });
  const a = new TicketKeys({ now: c.now }); const b = new TicketKeys({ now: c.now });
  const tickets: Buffer[] = [];
  for (let epoch = 0; epoch < 3; epoch++) {
    for (const w of [a, b]) w.install(primary.export());
    tickets.push(a.seal(Buffer.from(`epoch ${epoch}`)));
    c.advance(HOUR);
  }
  c.advance(-1); // still in the epoch of the last ticket
  t.same(tickets.map((x) => b.open(x)?.toString() ?? null), [null, 'epoch 1', 'epoch 2']);
});

t.test('a key made here stands in until the shared one arrives, and both keep opening', async (t) => {
  const c = clock();
  const primary = new TicketKeys({ now: c.now });
  const a = new TicketKeys({ now: c.now }); const b = new TicketKeys({ now: c.now });
  const local = a.seal(Buffer.from('local')); // a has no shared key yet (IPC late)
  for (const w of [a, b]) w.install(primary.export());
  const shared = a.seal(Buffer.from('shared'));
  t.equal(b.open(shared)?.toString(), 'shared', 'once installed, the shared key seals');
  t.equal(a.open(local)?.toString(), 'local', 'the stand-in key still opens what it sealed');
  t.equal(b.open(local), null, 'only where it was made');
});

t.test('bad configuration is refused with a clear error', async (t) => {
  t.throws(() => new TicketKeys({ rotateEveryMs: 0 }), TlsError);
  t.throws(() => new TicketKeys({ rotateEveryMs: 1000, acceptForMs: 500 }), TlsError);
  t.throws(() => new TicketKeys({ rotateEveryMs: 1000, shareAheadMs: 1000 }), TlsError);
  const keys = new TicketKeys();
  t.throws(() => keys.install([{ epoch: 1, name: 'ab', key: '00'.repeat(32) }]), { code: 'TLS_ERR_TICKET_CONFIG' });
  t.throws(() => keys.install([{ epoch: 1.5, name: '00'.repeat(16), key: '00'.repeat(32) }]), { code: 'TLS_ERR_TICKET_CONFIG' });
});
