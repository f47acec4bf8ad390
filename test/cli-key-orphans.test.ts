// `key import` and `key generate --out` leave no orphan in the HSM: an --out that cannot be
// written is refused before the key is made, a write that fails afterwards deletes the key again
// (and says so), and a label some key already has is refused unless --allow-duplicate-label,
// since every later `--key LABEL` would then fail.
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { oneLineError, runCli } from './helpers/cli.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-key-orphans-'));
const work = await mkdtemp(join(tmpdir(), 'hsmproxy-key-orphans-work-'));
const cluster = await startEmbeddedCluster({ dir, hsms: 1, scryptCost: 1024 });
t.teardown(async () => {
  await cluster.stop();
  await rm(dir, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});
const cu = cluster.credentials.cu;
const env = { HSMPROXY_PIN: `${cu.user}:${cu.password}`, HSMPROXY_DIR: dir };
const f = (name: string): string => join(work, name);
const labelled = async (label: string): Promise<number> => (await cluster.client.findKeys({ label, class: 'private' })).length;

async function softKey(name: string): Promise<string> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  await writeFile(f(name), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  return f(name);
}

t.test('key import refuses an --out it could not write before importing anything', async (t) => {
  const r = await runCli(['key', 'import', '--in', await softKey('a.pem'), '--label', 'legacy-a', '--out', f('no-such-dir/legacy.key.pem')], { env });
  oneLineError(t, r, /cannot write --out .*no-such-dir\/legacy\.key\.pem: directory .* does not exist/);
  t.equal(await labelled('legacy-a'), 0, 'no key was imported');
});

t.test('key import deletes the key again when the reference cannot be written after all, and says so', async (t) => {
  t.ok(existsSync('/dev/full'), 'a file every write to fails (ENOSPC)');
  const r = await runCli(['key', 'import', '--in', await softKey('b.pem'), '--label', 'legacy-b', '--out', '/dev/full', '--force'], { env });
  oneLineError(t, r, /cannot write \/dev\/full.*; the key just made \([0-9a-f]+, "legacy-b"\) was deleted from the HSM again, so nothing changed/);
  t.equal(await labelled('legacy-b'), 0, 'no orphan left');
  const rerun = await runCli(['key', 'import', '--in', f('b.pem'), '--label', 'legacy-b', '--out', f('legacy-b.key.pem')], { env });
  t.equal(rerun.code, 0, `a rerun with a good --out works: ${rerun.stderr}`);
  t.equal(await labelled('legacy-b'), 1, 'one key');
});

t.test('key import refuses a label a key already has, unless --allow-duplicate-label', async (t) => {
  const first = await runCli(['key', 'import', '--in', await softKey('c.pem'), '--label', 'legacy-c', '--out', f('c1.key.pem')], { env });
  t.equal(first.code, 0, first.stderr);
  const again = await runCli(['key', 'import', '--in', await softKey('d.pem'), '--label', 'legacy-c', '--out', f('c2.key.pem')], { env });
  oneLineError(t, again, /a key labelled "legacy-c" exists already .*--allow-duplicate-label/);
  t.equal(await labelled('legacy-c'), 1, 'nothing imported');
  t.notOk(existsSync(f('c2.key.pem')), 'no reference written');
  const allowed = await runCli(['key', 'import', '--in', f('d.pem'), '--label', 'legacy-c', '--out', f('c2.key.pem'), '--allow-duplicate-label'], { env });
  t.equal(allowed.code, 0, allowed.stderr);
  t.equal(await labelled('legacy-c'), 2);
});

t.test('key generate refuses a label a key already has, unless --allow-duplicate-label', async (t) => {
  const first = await runCli(['key', 'generate', '--type', 'ec:p256', '--label', 'web-dup'], { env });
  t.equal(first.code, 0, first.stderr);
  oneLineError(t, await runCli(['key', 'generate', '--type', 'ec:p256', '--label', 'web-dup'], { env }), /a key labelled "web-dup" exists already \([0-9a-f]{32}\)/);
  oneLineError(t, await runCli(['key', 'generate', '--type', 'aes:256', '--label', 'web-dup'], { env }), /exists already/);
  t.equal(await labelled('web-dup'), 1, 'no second key');
  const allowed = await runCli(['key', 'generate', '--type', 'ec:p256', '--label', 'web-dup', '--allow-duplicate-label'], { env });
  t.equal(allowed.code, 0, allowed.stderr);
  t.equal(await labelled('web-dup'), 2);
});

t.test('key generate --out deletes the key again when the reference cannot be written', async (t) => {
  const r = await runCli(['key', 'generate', '--type', 'ec:p256', '--label', 'web-full', '--out', '/dev/full', '--force'], { env });
  oneLineError(t, r, /cannot write \/dev\/full.*was deleted from the HSM again/);
  t.equal(await labelled('web-full'), 0, 'no orphan left');
  oneLineError(t, await runCli(['key', 'generate', '--type', 'ec:p256', '--label', 'web-gone', '--out', f('missing/web.key.pem')], { env }), /cannot write --out .*missing\/web\.key\.pem/);
  t.equal(await labelled('web-gone'), 0, 'refused before generating');
});
