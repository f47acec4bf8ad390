// The deterministic byte stream bench/stream.ts sends through the proxy in both directions: the
// same N bytes are generated on each end, block by block, so a transfer of any size is checked
// (length and sha256) without either side holding it in memory.
import { createHash } from 'node:crypto';

/** Bytes per generated block. */
export const BLOCK = 256 * 1024;

// One pseudo-random block (xorshift32), so the payload does not compress or repeat in short periods.
const PATTERN = (() => {
  const b = Buffer.allocUnsafe(BLOCK);
  let x = 0x2545f491;
  for (let i = 0; i < BLOCK; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  return b;
})();

/** The first `total` bytes of the stream; each block is a fresh buffer (a consumer may keep it queued). */
export function* streamBlocks(total: number): Generator<Buffer> {
  for (let off = 0, k = 0; off < total; off += BLOCK, k++) {
    const n = Math.min(BLOCK, total - off);
    const b = Buffer.allocUnsafe(n);
    PATTERN.copy(b, 0, 0, n);
    // The block number: a dropped, repeated or reordered block changes the hash.
    if (n >= 8) b.writeBigUInt64LE(BigInt(k), 0);
    yield b;
  }
}

/** sha256 (hex) of the first `total` bytes of the stream. */
export function streamSha256(total: number): string {
  const h = createHash('sha256');
  for (const b of streamBlocks(total)) h.update(b);
  return h.digest('hex');
}
