// A proxy on the listener hsmproxy serves with (tls/ TlsServer, key behind the engine on a FakeHsm),
// in front of demo upstreams, for tests that need the offloading listener's own behaviour.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { Engine, SimBackend, writeKeyReference } from '../../src/engine/index.js';
import { certPem, selfSign, signingKey } from '../../src/pki/index.js';
import { offloadListenerFactory, type OffloadListenerOptions } from '../../src/proxy/offload-listener.js';
import { FakeHsm } from './fake-hsm.js';
import { startHarness, type Harness } from './proxy-harness.js';

/** A localhost certificate whose P-256 key lives in a FakeHsm, and the engine that signs with it. */
export interface OffloadKey { engine: Engine; cert: string; key: string; dir: string }

/** Makes the key and certificate once per test file; closed at teardown of `t`. */
export async function offloadKey(t: Test): Promise<OffloadKey> {
  const backend = new SimBackend({ client: new FakeHsm(), clusterId: '7c'.repeat(32), credentials: { user: 'cu1', password: 'secret1' } });
  const engine = new Engine({ backends: { sim: backend } });
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-offload-'));
  t.teardown(async () => {
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const made = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'front' });
  const key = join(dir, 'front.key.pem');
  await writeKeyReference(made, key);
  const cert = join(dir, 'front.pem');
  const signer = await signingKey(await engine.signer(key), engine.webcrypto());
  writeFileSync(cert, certPem(await selfSign(signer, { subject: 'CN=localhost', sans: ['DNS:localhost'], days: 1 })));
  return { engine, cert, key, dir };
}

/**
 * Starts a proxy on the offloading listener: one listener `main` on 127.0.0.1 with `listenerExtra`
 * (YAML flow-mapping fields, e.g. `proxyProtocol: { from: [127.0.0.9] }`), routing to demo upstream up0.
 */
export async function startOffloadFront(
  t: Test, k: OffloadKey, listenerExtra = '', opts: Partial<OffloadListenerOptions> = {}, topExtra = '',
): Promise<Harness> {
  const extra = listenerExtra ? `, ${listenerExtra}` : '';
  return startHarness(t, `
listeners: [{ name: main, address: 127.0.0.1, port: 0, certificates: [{ cert: "${k.cert}", key: "${k.key}" }]${extra} }]
routes: [{ upstream: [ "{{up0}}" ] }]
admin: { address: 127.0.0.1, port: 0 }
${topExtra}`, { proxy: { tlsListenerFactory: offloadListenerFactory({ engine: k.engine, ...opts }) } });
}
