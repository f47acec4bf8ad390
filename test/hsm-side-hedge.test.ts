// hsm.signing.hedge reaches the running proxy's cluster client: on by default with the configured
// share and floor, off with `enabled: false`; signs through the engine verify either way.
import t from 'tap';
import { createPublicKey, verify } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { openHsmSide } from '../src/app/hsm-side.js';
import { parseConfig } from '../src/config/index.js';

t.setTimeout(150_000);

const config = (dir: string, hedge: string): ReturnType<typeof parseConfig> => parseConfig(`
listeners:
  - port: 8443
    certificates: [{ cert: a.pem, key: a.key }]
routes:
  - upstream: [http://127.0.0.1:8080]
hsm: { mode: embedded, dir: ${join(dir, 'data')}, hsms: 2${hedge ? `, signing: { hedge: ${hedge} }` : ''} }
`, { baseDir: dir });

t.test('the embedded cluster client hedges as configured, and not when disabled', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-side-hedge-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // The listener's files only need to exist for validation: this test opens the HSM side alone.
  await Promise.all(['a.pem', 'a.key'].map((f) => writeFile(join(dir, f), '')));
  const quiet = pino({ level: 'silent' });

  const on = await openHsmSide(config(dir, '{ maxShare: 0.1, minDelayMs: 8 }'), quiet);
  try {
    const stats = on.cluster?.hedgeStats();
    t.equal(stats?.maxShare, 0.1, 'maxShare from the config');
    t.equal(stats?.minDelayMs, 8, 'minDelayMs from the config');
    const key = await on.backend!.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'side-hedge' });
    const data = Buffer.from('through the engine');
    const sig = await on.backend!.sign(key, 'ecdsa-sha256', data);
    t.ok(verify('sha256', data, createPublicKey(key.publicKey.export({ type: 'spki', format: 'pem' })), sig), 'a hedging-capable sign verifies');
    t.equal(on.cluster?.hedgeStats()?.totals.requests, 1, 'the sign went through the hedge race');
  } finally {
    await on.stop();
  }

  const off = await openHsmSide(config(dir, '{ enabled: false }'), quiet);
  try {
    t.equal(off.cluster?.hedgeStats(), undefined, 'enabled: false turns hedging off');
  } finally {
    await off.stop();
  }
});
