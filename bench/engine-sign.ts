// Signatures per second through the engine (admission control, DER normalisation, verify-after-
// sign) for P-256 and RSA-2048, next to calling node:crypto directly: the soft backend shows the
// engine's own overhead, the sim backend (embedded cluster of HSM node processes, `unlimited`
// profile) the cost of the HSM round trip.
// Run: node --import=tsx bench/engine-sign.ts [seconds=2] [concurrency=32] [hsms=1]
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Engine, SimBackend, SoftBackend, simClientFrom, type EngineSigner, type KeyAlgorithm } from '../src/engine/index.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';

const seconds = Number(process.argv[2] ?? 2);
const concurrency = Number(process.argv[3] ?? 32);
const hsms = Number(process.argv[4] ?? 1);

async function drive(fn: () => Promise<unknown>): Promise<{ perSec: number; p50: number; p99: number }> {
  const lat: number[] = [];
  const end = performance.now() + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      await fn();
      lat.push(performance.now() - t0);
    }
  }));
  lat.sort((a, b) => a - b);
  return { perSec: lat.length / seconds, p50: lat[Math.floor(lat.length / 2)]!, p99: lat[Math.floor(lat.length * 0.99)]! };
}

function row(name: string, r: { perSec: number; p50: number; p99: number }): void {
  console.log(`${name.padEnd(44)} ${r.perSec.toFixed(0).padStart(8)}/s   p50 ${r.p50.toFixed(2)} ms   p99 ${r.p99.toFixed(2)} ms`);
}

const data = Buffer.alloc(130, 7); // about the size of a TLS 1.3 CertificateVerify content
const cases: Array<[string, KeyAlgorithm, number, 'rsa' | 'ec']> = [['P-256', { type: 'ec', curve: 'P-256' }, 0x0403, 'ec'], ['RSA-2048', { type: 'rsa', bits: 2048 }, 0x0804, 'rsa']];

console.log(`engine-sign: ${seconds}s per row, ${concurrency} in flight, node ${process.version}`);
for (const [name, alg, scheme] of cases) {
  const pair = alg.type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  row(`${name} node:crypto.sign (sync, baseline)`, await drive(async () => sign('sha256', data, pair.privateKey)));
  const soft = new SoftBackend();
  const handle = soft.load(pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 'bench');
  for (const verify of ['none', 'all'] as const) {
    const engine = new Engine({ backends: { soft }, verify, admission: { maxInFlight: 1024 } });
    const signer = await engine.signer(engine.adopt(handle, soft));
    row(`${name} engine soft (verify=${verify})`, await drive(() => signer.sign(scheme, data)));
  }
}

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-bench-engine-'));
const cluster = await startEmbeddedCluster({ dir, hsms, scryptCost: 1024 });
try {
  const { clusterId } = await readManifest(dir);
  const backend = new SimBackend({ client: simClientFrom(cluster.client), clusterId, credentials: cluster.credentials.cu, ownsClient: false });
  for (const [name, alg, scheme, type] of cases) {
    const made = await backend.generateKeyPair({ algorithm: alg, label: `bench-${name}` });
    for (const verify of type === 'rsa' ? (['none', 'rsa'] as const) : (['none'] as const)) {
      const engine = new Engine({ backends: { sim: backend }, verify, admission: { maxInFlight: 1024 } });
      const signer: EngineSigner = await engine.signer(made.ref!);
      row(`${name} engine sim, ${hsms} HSM (verify=${verify})`, await drive(() => signer.sign(scheme, data)));
    }
  }
} finally {
  await cluster.stop();
  rmSync(dir, { recursive: true, force: true });
}
