// Random bytes for the handshake (server random, ticket nonces, age_add) from a pool filled by
// the CSPRNG 4 KiB at a time: one randomFillSync call costs about as much as 4 KiB of output, and a
// handshake asks for six small pieces. Every byte is handed out once.
import { randomFillSync } from 'node:crypto';

const POOL_SIZE = 4096;
let pool = Buffer.allocUnsafe(0);
let offset = 0;

/** `n` fresh random bytes, as a view the caller owns (sizes over 256 bypass the pool). */
export function randomBytesPooled(n: number): Buffer {
  if (n > 256) return randomFillSync(Buffer.allocUnsafe(n));
  if (offset + n > pool.length) {
    // A new pool each time: views handed out earlier stay valid and are never overwritten.
    pool = randomFillSync(Buffer.allocUnsafeSlow(POOL_SIZE));
    offset = 0;
  }
  const out = pool.subarray(offset, offset + n);
  offset += n;
  return out;
}

/** Fills `buf` from the pool. */
export function randomFillPooled(buf: Buffer): void {
  randomBytesPooled(buf.length).copy(buf);
}
