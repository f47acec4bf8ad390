// The handshake's random pool: every byte handed out once, any size served in full.
import t from 'tap';
import { randomBytesPooled, randomFillPooled } from '../src/tls/random.js';

t.test('pieces are distinct views of fresh bytes, across pool refills', async (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) { // 64 KB of 32-byte pieces: many 4 KiB pools
    const r = randomBytesPooled(32);
    t.equal(r.length, 32);
    seen.add(r.toString('hex'));
  }
  t.equal(seen.size, 2000, 'no piece repeats another');
  const a = randomBytesPooled(16);
  const copy = Buffer.from(a);
  for (let i = 0; i < 1000; i++) randomBytesPooled(16);
  t.same(a, copy, 'a piece handed out is never overwritten by later refills');
});

t.test('sizes beyond the pool are served in full', async (t) => {
  t.equal(randomBytesPooled(5000).length, 5000);
  const buf = Buffer.alloc(300);
  randomFillPooled(buf);
  t.ok(buf.some((b) => b !== 0), 'filled');
});
