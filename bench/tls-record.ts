// Micro-benchmark of the record layer's hot path: seal and open of full 16 KB records per AEAD,
// next to a bare node:crypto AEAD call on the same bytes (the floor we can reach).
// Run: node --import=tsx bench/tls-record.ts   (about 1 s per point)
import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { RecordDeframer, RecordOpener, RecordSealer, MAX_PLAINTEXT, type RecordFrame } from '../src/tls/record.js';
import { TLS13_SUITES } from '../src/tls/suites.js';

const N = 3000;
const content = crypto.randomBytes(MAX_PLAINTEXT);

function time(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return ((performance.now() - t0) * 1000) / N;
}

for (const suite of TLS13_SUITES) {
  const key = crypto.randomBytes(suite.keyLen); const iv = crypto.randomBytes(12);
  const sealer = new RecordSealer(suite, key, iv);
  const wires: Buffer[] = [];
  const sealUs = time(() => { for (let i = 0; i < N; i++) wires.push(sealer.seal(23, content)); });
  const d = new RecordDeframer();
  d.push(Buffer.from([22, 3, 1, 0, 1, 1])); d.next(); // a first record, so the stream is past the ClientHello checks
  const recs: RecordFrame[] = wires.map((w) => { d.push(w); return d.next()!; });
  const opener = new RecordOpener(suite, key, iv);
  const openUs = time(() => { for (const r of recs) opener.open(r); });
  const aead = suite.aead as crypto.CipherGCMTypes;
  const bareUs = time(() => {
    for (let i = 0; i < N; i++) {
      const c = crypto.createCipheriv(aead, key, iv, { authTagLength: 16 });
      c.update(content); c.final(); c.getAuthTag();
    }
  });
  console.log(`${suite.name.padEnd(30)} seal ${sealUs.toFixed(1)} µs/record  open ${openUs.toFixed(1)} µs/record  bare AEAD ${bareUs.toFixed(1)} µs`);
}
