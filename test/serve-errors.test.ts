// `hsmproxy serve` refuses to start on a bad config or key with one line that names the field
// or file and what to do, a non-zero exit, and no stack trace; HSM processes are not left behind.
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine, SimBackend, readKeyRef, simClientFrom, writeKeyReference, type SimKeyRef } from '../src/engine/index.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { runCli } from './helpers/cli.js';
import { pids, prepareServeDir, serveYaml } from './helpers/serve-fixture.js';

const d = await prepareServeDir();
t.teardown(() => d.cleanup());
const f = (name: string) => join(d.dir, name);
const base = serveYaml(d, 'http://127.0.0.1:9');

// A reference to a key deleted from the cluster, and one naming another cluster.
{
  const cluster = await startEmbeddedCluster({ dir: d.data, scryptCost: 1024 });
  try {
    const { clusterId } = await readManifest(d.data);
    const backend = new SimBackend({ client: simClientFrom(cluster.client), clusterId, credentials: cluster.credentials.cu, ownsClient: false });
    const engine = new Engine({ backends: { sim: backend } });
    const doomed = await backend.generateKeyPair({ algorithm: { type: 'rsa', bits: 2048 }, label: 'doomed' });
    await writeKeyReference(doomed, f('deleted.key.pem'));
    await backend.delete(doomed);
    await engine.close();
  } finally {
    await cluster.stop();
  }
  const ref = (await readKeyRef(d.pki.rsaKey)) as SimKeyRef;
  await writeKeyReference({ ...ref, clusterId: 'ab'.repeat(32) }, f('foreign.key.pem'));
  await writeFile(f('real.pem'), generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
  await writeFile(f('garbage.pem'), 'hello\n');
}

const CASES: Array<[string, string, RegExp]> = [
  ['an unknown key in the config', `${base}bogus: 1\n`, /hsmproxy\.yaml: bogus: unknown key \(expected one of: listeners/],
  ['a missing key file', base.replace(d.pki.rsaKey, f('nope.key.pem')), /listeners\[0\]\.certificates\[1\]\.key: file not found: .*nope\.key\.pem/],
  ['a real private key where a reference is expected', base.replace(d.pki.rsaKey, f('real.pem')), /certificates\[1\]\.key: .*real\.pem holds a real private key, not a key reference; import it/],
  ['a reference to a deleted key', base.replace(d.pki.rsaKey, f('deleted.key.pem')), /certificates\[1\]\.key: key \S+ \("doomed"\) named by .*deleted\.key\.pem was not found/],
  ['a reference from another cluster', base.replace(d.pki.rsaKey, f('foreign.key.pem')), /certificates\[1\]\.key: .*foreign\.key\.pem refers to a key in cluster abab.*point --dir \(serve: hsm\.dir or hsm\.manifest\) at the cluster that holds the key/],
  ['a key that does not match its certificate', base.replace(d.pki.rsaKey, d.pki.caKey), /certificates\[1\]: the key .*dev-ca\.key\.pem does not match the certificate .*localhost-rsa\.chain\.pem/],
  ['with workers, a key a worker cannot load', `${base.replace(d.pki.rsaKey, f('deleted.key.pem'))}workers: 2\n`, /worker \d did not start: listener "main": listeners\[main\]\.certificates\[1\]\.key: key \S+ \("doomed"\) named by .*deleted\.key\.pem was not found/],
  ['a certificate file that holds no certificate', base.replace(d.pki.rsaChain, f('garbage.pem')), /certificates\[1\]\.cert: .*garbage\.pem holds no PEM certificate/],
];

for (const [what, yaml, pattern] of CASES) {
  t.test(`${what}: one line naming it, exit 1`, async (t) => {
    const file = f('hsmproxy.yaml');
    await writeFile(file, yaml);
    const r = await runCli(['serve', '--config', file], { timeoutMs: 30_000 });
    t.equal(r.code, 1, 'exit 1');
    t.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
    t.match(r.stderr, pattern);
    t.same(await pids(d.data), [], 'no HSM process left running');
  });
}

t.test('the config file itself is left as written', async (t) => {
  t.match(await readFile(f('hsmproxy.yaml'), 'utf8'), /garbage\.pem/);
});
