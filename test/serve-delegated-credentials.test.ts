// `hsmproxy serve` with delegated credentials (RFC 9345), keys in the embedded cluster: NSS
// tstclnt -B gets HTTP answers over a delegated credential while the HSM's sign counter stays
// still, without -B the same client costs one HSM signature; /metrics labels handshakes by
// credential, counts HSM signatures saved and exports the seconds to expiry; SIGHUP with a new
// certificate costs one HSM signature and serves a credential bound to the new certificate; with
// workers: 2 each worker makes its own credential and /metrics adds them up.
// `config check` reports which certificates can delegate and refuses enabled: true on a listener
// none of whose certificates can.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { startDemoUpstream } from '../src/proxy/index.js';
import { Engine, SimBackend, simClientFrom } from '../src/engine/index.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { connectCluster } from '../src/hsm/cluster/membership.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';
import { runCli } from './helpers/cli.js';
import { makeNssDb, skipWithoutNss, tstclnt } from './helpers/nss.js';
import { prepareServeDir, serveYaml, startServe } from './helpers/serve-fixture.js';

const skip = skipWithoutNss();
const d = await prepareServeDir();
t.teardown(() => d.cleanup());
const upstream = await startDemoUpstream();
t.teardown(() => upstream.close());

const DC = 'delegatedCredentials: { enabled: true, validity: 1h }';
/** serveYaml with delegated credentials on the listener. */
function yamlWith(dc: string, certs?: string): string {
  let y = serveYaml(d, upstream.url).replace('    certificates:', `    ${dc}\n    certificates:`);
  if (certs) y = y.replace(/ {4}certificates:\n( {6}- .*\n)+/, `    certificates:\n${certs}`);
  return y;
}

/** Sum of the samples of `name` whose labels include `labels`. */
function total(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

async function metrics(admin: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
}
const hsmSigns = (m: string) => total(m, 'hsmproxy_hsm_requests_total', { op: 'sign', outcome: 'ok' });

/** A new self-signed certificate with DelegationUsage for the ECDSA key already in the HSM. */
async function reissueDelegating(): Promise<string> {
  const { cu } = JSON.parse(await readFile(join(d.data, 'embedded-credentials.json'), 'utf8')) as { cu: { user: string; password: string } };
  const client = await connectCluster(d.data, { credentials: cu, watch: false });
  const { clusterId } = await readManifest(d.data);
  const engine = new Engine({ backends: { sim: new SimBackend({ client: simClientFrom(client), clusterId, credentials: cu, ownsClient: false }) } });
  try {
    const key = await signingKey(await engine.signer(d.pki.ecdsaKey), engine.webcrypto());
    return certPem(await selfSign(key, { subject: 'CN=localhost reissued', sans: ['DNS:localhost', 'IP:127.0.0.1'], days: 2, delegationUsage: true }));
  } finally {
    await engine.close();
    await client.close();
  }
}

t.test('tstclnt -B through the proxy: delegated, no HSM signature; without -B one; metrics; SIGHUP', { skip }, async (t) => {
  const s = await startServe(d, yamlWith(DC));
  t.teardown(() => s.stop());
  const db = makeNssDb(d.pki.caCert);
  t.teardown(() => db.cleanup());

  let m = await metrics(s.admin);
  t.equal(total(m, 'hsmproxy_delegated_credential_renewals_total', { result: 'ok' }), 2, 'one credential per certificate (ECDSA and RSA both carry DelegationUsage)');
  t.ok(total(m, 'hsmproxy_delegated_credential_expiry_seconds') > 3000, 'seconds to expiry exported');
  const before = hsmSigns(m);
  for (let i = 0; i < 3; i++) {
    const r = await tstclnt(db, s.port, { delegated: true });
    t.ok(r.ok && r.delegated, `-B request ${i + 1} answered over a delegated credential (${r.stderr.slice(-300)})`);
  }
  m = await metrics(s.admin);
  t.equal(hsmSigns(m), before, 'the HSM sign counter did not move');
  t.equal(total(m, 'hsmproxy_tls_handshakes_total', { result: 'ok', credential: 'delegated' }), 3, 'handshakes labelled delegated');
  t.equal(total(m, 'hsmproxy_tls_hsm_signatures_saved_total'), 3, 'HSM signatures saved');

  const r = await tstclnt(db, s.port, { delegated: false });
  t.ok(r.ok && !r.delegated, 'without -B the same client is answered');
  m = await metrics(s.admin);
  t.equal(hsmSigns(m), before + 1, 'with one HSM signature');
  t.equal(total(m, 'hsmproxy_tls_handshakes_total', { result: 'ok', credential: 'certificate' }), 1, 'labelled certificate');

  // SIGHUP with a new certificate: one HSM signature per delegating certificate, a credential bound to the new DER.
  const pem = await reissueDelegating();
  const leafFile = join(d.dir, 'reissued.crt');
  await writeFile(leafFile, pem);
  execFileSync('certutil', ['-A', '-d', `sql:${db.dir}`, '-n', 'reissued', '-t', 'P,,', '-i', leafFile], { stdio: 'ignore' });
  const previous = await readFile(d.pki.ecdsaChain, 'utf8');
  t.teardown(() => writeFile(d.pki.ecdsaChain, previous));
  const signsBefore = hsmSigns(await metrics(s.admin));
  await writeFile(d.pki.ecdsaChain, pem);
  process.kill(s.child.pid!, 'SIGHUP');
  for (const until = Date.now() + 20_000; Date.now() < until;) {
    if (total(await metrics(s.admin), 'hsmproxy_delegated_credential_renewals_total', { result: 'ok' }) >= 4) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  m = await metrics(s.admin);
  t.equal(total(m, 'hsmproxy_delegated_credential_renewals_total', { result: 'ok' }), 4, 'the reload made a fresh credential per certificate');
  t.equal(hsmSigns(m) - signsBefore, 2, 'one HSM signature per certificate');
  const after = await tstclnt(db, s.port, { delegated: true });
  t.ok(after.ok && after.delegated, 'NSS accepts the new credential: it is signed over the new certificate');
  t.match(after.stdout + after.stderr, /reissued/, 'and the new certificate is the one served');
  t.equal(hsmSigns(await metrics(s.admin)), hsmSigns(m), 'no HSM signature for that handshake');
});

t.test('workers: 2 — each worker makes its own credentials (one HSM signature per certificate per worker)', { skip }, async (t) => {
  let y = yamlWith(DC);
  y = y.replace('hsm: {', 'workers: 2\nhsm: {');
  const s = await startServe(d, y);
  t.teardown(() => s.stop());
  const db = makeNssDb(d.pki.caCert);
  t.teardown(() => db.cleanup());
  let m = '';
  for (const until = Date.now() + 30_000; Date.now() < until;) {
    m = await metrics(s.admin);
    if (total(m, 'hsmproxy_delegated_credential_renewals_total', { result: 'ok' }) >= 4) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  t.equal(total(m, 'hsmproxy_delegated_credential_renewals_total', { result: 'ok' }), 4, '2 workers x 2 certificates');
  const before = hsmSigns(m);
  for (let i = 0; i < 4; i++) {
    const r = await tstclnt(db, s.port, { delegated: true });
    t.ok(r.ok && r.delegated, `-B request ${i + 1} over a delegated credential`);
  }
  m = await metrics(s.admin);
  t.equal(hsmSigns(m), before, 'no HSM signature for them, whichever worker took each');
  t.equal(total(m, 'hsmproxy_tls_handshakes_total', { result: 'ok', credential: 'delegated' }), 4, 'the primary adds up the workers');
});

t.test('config check: which certificates can delegate; enabled with none that can is refused', async (t) => {
  const file = join(d.dir, 'check.yaml');
  await writeFile(file, yamlWith(DC));
  const ok = await runCli(['config', 'check', file], { cwd: d.dir });
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /listener main: delegated credentials enabled/);
  t.match(ok.stdout, new RegExp(`${d.pki.ecdsaChain.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: can delegate`));

  // A certificate without DelegationUsage for the same HSM key: openssl reads the public key out of
  // the key reference and a throwaway key signs it (config check compares public keys, not issuers).
  const noDc = join(d.dir, 'no-dc.crt');
  execFileSync('openssl', ['pkey', '-in', d.pki.ecdsaKey, '-pubout', '-out', join(d.dir, 'ecdsa.pub')]);
  execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(d.dir, 'throwaway.key')]);
  execFileSync('openssl', ['x509', '-new', '-subj', '/CN=localhost', '-force_pubkey', join(d.dir, 'ecdsa.pub'), '-key', join(d.dir, 'throwaway.key'),
    '-days', '2', '-out', noDc], { stdio: 'ignore' });
  const only = `      - { cert: ${noDc}, key: ${d.pki.ecdsaKey} }\n`;
  await writeFile(file, yamlWith(DC, only));
  const bad = await runCli(['config', 'check', file], { cwd: d.dir });
  t.equal(bad.code, 1);
  t.match(bad.stderr, /listeners\[0\]\.delegatedCredentials\.enabled: none of the listener's certificates \(.*no-dc\.crt\) carries the DelegationUsage/);
  await writeFile(file, yamlWith('delegatedCredentials: { enabled: false }', only));
  const off = await runCli(['config', 'check', file], { cwd: d.dir });
  t.equal(off.code, 0, off.stderr);
  t.match(off.stdout, /no-dc\.crt: cannot delegate \(no DelegationUsage\)/);
});
