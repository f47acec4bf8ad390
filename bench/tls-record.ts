// Micro-benchmark of the record layer's hot path: seal and open of full 16 KB records per AEAD,
// next to a bare node:crypto AEAD call on the same bytes (the floor we can reach). Reports CPU
// time per record (process.cpuUsage), which a busy machine disturbs less than wall time.
// Run: node --import=tsx bench/tls-record.ts
import crypto from 'node:crypto';
import { RecordDeframer, RecordOpener, RecordSealer, MAX_PLAINTEXT, type RecordFrame } from '../src/tls/record.js';
import { TLS13_SUITES } from '../src/tls/suites.js';

const BATCH = 100;
const ROUNDS = 30;
const content = crypto.randomBytes(MAX_PLAINTEXT);

/** CPU µs per call of `fn`, which does BATCH calls; best of ROUNDS batches (least disturbed). */
function cpuPerCall(fn: () => void): number {
  let best = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    const c0 = process.cpuUsage();
    fn();
    const c = process.cpuUsage(c0);
    best = Math.min(best, (c.user + c.system) / BATCH);
  }
  return best;
}

for (const suite of TLS13_SUITES) {
  const key = crypto.randomBytes(suite.keyLen); const iv = crypto.randomBytes(12);
  const sealer = new RecordSealer(suite, key, iv);
  const sealUs = cpuPerCall(() => { for (let i = 0; i < BATCH; i++) sealer.seal(23, content); });
  // Open needs records in sequence order: seal a fresh stream per round, outside the timing.
  const deframer = new RecordDeframer();
  deframer.push(Buffer.from([22, 3, 1, 0, 1, 1])); deframer.next(); // past the first-record checks
  let best = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    const s = new RecordSealer(suite, key, iv); const o = new RecordOpener(suite, key, iv);
    const recs: RecordFrame[] = [];
    for (let i = 0; i < BATCH; i++) { deframer.push(s.seal(23, content)); recs.push(deframer.next()!); }
    const c0 = process.cpuUsage();
    for (const rec of recs) o.open(rec);
    const c = process.cpuUsage(c0);
    best = Math.min(best, (c.user + c.system) / BATCH);
  }
  const aead = suite.aead as crypto.CipherGCMTypes;
  const bareUs = cpuPerCall(() => {
    for (let i = 0; i < BATCH; i++) {
      const c = crypto.createCipheriv(aead, key, iv, { authTagLength: 16 });
      c.update(content); c.final(); c.getAuthTag();
    }
  });
  console.log(`${suite.name.padEnd(30)} seal ${sealUs.toFixed(1)} µs/record  open ${best.toFixed(1)} µs/record  bare AEAD ${bareUs.toFixed(1)} µs  (CPU, 16 KB records)`);
}
