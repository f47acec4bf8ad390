// reuseKey against a real CA (Pebble on loopback), the AcmeManager in this process on an embedded
// cluster, http-01 answered on its own port: with reuseKey a renewal certifies the same HSM key,
// which survives the expiry of the certificates it certified before; without it each renewal has
// a fresh key and the previous one is destroyed in the HSM once its certificate has expired.
import t from 'tap';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AcmeManager, certificateDir, readState, startHttpChallengeServer, type CertificateState } from '../src/acme/index.js';
import { parseConfig } from '../src/config/index.js';
import { Engine, SimBackend, simClientFrom } from '../src/engine/index.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { freePorts, startPebble } from './helpers/pebble.js';

t.test('reuseKey keeps the HSM key across renewals; without it the old key is destroyed after expiry', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-acme-reuse-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const data = join(dir, 'data');
  const cluster = await startEmbeddedCluster({ dir: data, hsms: 2, scryptCost: 1024 });
  t.teardown(() => cluster.stop());
  const { clusterId } = await readManifest(data);
  const backend = new SimBackend({ client: simClientFrom(cluster.client), clusterId, credentials: cluster.credentials.cu, ownsClient: false });
  const engine = new Engine({ backends: { sim: backend } });
  t.teardown(() => engine.close());

  const [tlsPort, httpPort] = await freePorts(2) as [number, number];
  const pebble = await startPebble({ tlsPort, httpPort });
  t.teardown(() => pebble.stop());
  const tag = randomBytes(4).toString('hex');
  const reused = `reuse-${tag}.acme.test`;
  const fresh = `fresh-${tag}.acme.test`;
  const config = parseConfig(`
listeners:
  - port: ${tlsPort}
    certificates:
      - acme: { names: [${reused}], challenge: http-01, reuseKey: true }
      - acme: { names: [${fresh}], challenge: http-01, keyType: ec:p384 }
routes: [{ upstream: [http://127.0.0.1:9] }]
hsm: { mode: embedded, dir: ${data} }
acme: { directory: ${pebble.directory}, directoryCa: ${pebble.caFile}, termsOfServiceAgreed: true, httpPort: ${httpPort}, httpAddress: 127.0.0.1 }
`, { baseDir: dir });
  t.equal(config.listeners[0]!.acme![0]!.reuseKey, true);
  t.equal(config.listeners[0]!.acme![1]!.reuseKey, false, 'reuseKey defaults to false');

  let clock = Date.now();
  const acme = new AcmeManager({
    config, engine, backend, log: pino({ level: 'silent' }), onChange: async () => undefined, now: () => clock,
  });
  t.teardown(() => acme.stop());
  const http = await startHttpChallengeServer({ address: '127.0.0.1', port: httpPort, challenges: acme.challenges, redirect: false, httpsPort: tlsPort });
  t.teardown(() => http.close());
  await acme.load();

  const state = async (name: string): Promise<CertificateState> => (await readState(certificateDir(data, name)))!;
  const leaf = async (name: string): Promise<X509Certificate> => {
    const s = await state(name);
    return new X509Certificate(await readFile(join(certificateDir(data, name), s.current!.chainFile)));
  };
  const inHsm = async (keyId: string): Promise<boolean> => (await backend.list()).some((k) => k.keyId === keyId);

  // reuseKey: true. Three issues, one key.
  await acme.renew(reused);
  const r1 = await state(reused);
  const l1 = await leaf(reused);
  await acme.renew(reused);
  const r2 = await state(reused);
  const l2 = await leaf(reused);
  t.not(r2.current!.serial, r1.current!.serial, 'the renewal is a new certificate');
  t.ok(l2.publicKey.equals(l1.publicKey), 'the renewed certificate certifies the same public key');
  t.equal(r2.current!.keyId, r1.current!.keyId, 'the same HSM key');
  // Move past the first certificate's expiry: its chain goes, the key it shares stays.
  clock = Date.parse(r1.current!.notAfter) + 1000;
  await acme.renew(reused);
  const r3 = await state(reused);
  t.equal(r3.current!.keyId, r1.current!.keyId, 'still the same key on the third issue');
  t.ok(await inHsm(r1.current!.keyId), 'a reused key is not destroyed when an earlier certificate of it expires');
  t.ok(existsSync(join(certificateDir(data, reused), r3.current!.keyFile)), 'its key reference stays');
  t.notOk(existsSync(join(certificateDir(data, reused), r1.current!.chainFile)), 'the expired chain is removed');
  t.ok(existsSync(join(certificateDir(data, reused), r3.current!.chainFile)));
  t.ok((await engine.signer(join(certificateDir(data, reused), r3.current!.keyFile))), 'the key still signs');

  // reuseKey: false (default). A fresh key per issue; the old one destroyed once its certificate expired.
  clock = Date.now();
  await acme.renew(fresh);
  const f1 = await state(fresh);
  const k1 = await leaf(fresh);
  // Validity is in whole seconds: let the next certificate end at least a second later.
  await new Promise((r) => setTimeout(r, 1500));
  await acme.renew(fresh);
  const f2 = await state(fresh);
  t.notOk((await leaf(fresh)).publicKey.equals(k1.publicKey), 'without reuseKey the renewed certificate has another public key');
  t.not(f2.current!.keyId, f1.current!.keyId);
  t.ok(await inHsm(f1.current!.keyId), 'the previous key stays while its certificate is valid (connections may use it)');
  t.same(f2.retired.map((r) => r.keyId), [f1.current!.keyId]);
  // Between the two expiries: the first certificate has expired, the second has not.
  const [end1, end2] = [Date.parse(f1.current!.notAfter), Date.parse(f2.current!.notAfter)];
  t.ok(end2 > end1, 'the renewed certificate outlives the first');
  clock = end1 + (end2 - end1) / 2;
  await acme.renew(fresh);
  const f3 = await state(fresh);
  t.notOk(await inHsm(f1.current!.keyId), 'the previous key is destroyed in the HSM after its certificate expired');
  t.notOk(existsSync(join(certificateDir(data, fresh), f1.current!.keyFile)), 'and its key reference removed');
  t.ok(await inHsm(f2.current!.keyId), 'the key of the unexpired retired certificate stays');
  t.same(f3.retired.map((r) => r.keyId), [f2.current!.keyId]);
});
