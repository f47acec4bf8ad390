// Moving a key between clusters without it ever being in the clear, with the CLI: cluster B's RSA
// public key is imported on A, an AES key made on A travels to B under it (rsa-oaep), then an
// extractable P-256 key made on A travels under the AES key (aes-kwp, RFC 5649). B signs with the
// moved key, and the signature verifies with A's public key. Plus the refusals a user meets.
import t from 'tap';
import { createPublicKey, verify } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { cliInProcess, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

const dir = t.testdir();
const a = await startEmbeddedCluster({ dir: join(dir, 'a'), hsms: 1, scryptCost: TEST_SCRYPT_COST });
t.teardown(() => a.stop());
const b = await startEmbeddedCluster({ dir: join(dir, 'b'), hsms: 2, scryptCost: TEST_SCRYPT_COST });
t.teardown(() => b.stop());
const onA = { HSMPROXY_DIR: join(dir, 'a'), HSMPROXY_PIN: `${a.credentials.cu.user}:${a.credentials.cu.password}` };
const onB = { HSMPROXY_DIR: join(dir, 'b'), HSMPROXY_PIN: `${b.credentials.cu.user}:${b.credentials.cu.password}` };
const f = (name: string) => join(dir, name);

async function run(args: string[], vars: Record<string, string>): Promise<Record<string, unknown>> {
  const r = await cliInProcess([...args, '--json'], vars);
  if (r.error) throw r.error;
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

t.test('wrap on cluster A, unwrap on cluster B, sign on B, verify with A\'s public key', async (t) => {
  // A wrapping key both clusters hold: B's RSA pair, its public half imported on A.
  await run(['key', 'generate', '--type', 'rsa:2048', '--label', 'transport'], onB);
  await run(['key', 'export-pub', '--key', 'transport', '--out', f('b-transport.pem')], onB);
  const imported = await run(['key', 'import-pub', '--in', f('b-transport.pem'), '--label', 'b-transport'], onA);
  t.match(imported.key, { class: 'public', type: 'rsa', size: 2048, wrap: true });
  await run(['key', 'generate', '--type', 'aes:256', '--label', 'kek', '--extractable'], onA);
  const wrappedKek = await run(['key', 'wrap', '--key', 'kek', '--wrapping-key', 'b-transport', '--mech', 'rsa-oaep', '--out', f('kek.wrapped')], onA);
  t.equal(wrappedKek.bytes, 256, 'an RSA-2048 OAEP block');
  const kekOnB = await run(['key', 'unwrap', '--in', f('kek.wrapped'), '--unwrapping-key', 'transport', '--mech', 'rsa-oaep', '--label', 'kek'], onB);
  t.match(kekOnB.key, { class: 'secret', type: 'aes', size: 256, extractable: false });

  // The key to move: made extractable on A; its public key is A's record of it.
  await run(['key', 'generate', '--type', 'ec:p256', '--label', 'moved', '--extractable'], onA);
  await run(['key', 'export-pub', '--key', 'moved', '--out', f('a-moved.pem')], onA);
  const wrapped = await run(['key', 'wrap', '--key', 'moved', '--wrapping-key', 'kek', '--mech', 'aes-kwp', '--out', f('moved.wrapped')], onA);
  t.equal(wrapped.mechanism, 'aes-key-wrap-pad');
  const file = await readFile(f('moved.wrapped'));
  t.equal(file.length, wrapped.bytes);
  t.notOk(file.includes(Buffer.from('-----BEGIN')), 'no PEM in the wrapped file');
  const movedOnB = await run(['key', 'unwrap', '--in', f('moved.wrapped'), '--unwrapping-key', 'kek', '--mech', 'aes-kwp', '--label', 'moved', '--out', f('moved.ref.pem')], onB);
  t.match(movedOnB.key, { class: 'private', type: 'ec', curve: 'P-256', extractable: false });

  const msg = f('msg.txt');
  await writeFile(msg, 'signed on cluster B with the key made on cluster A\n');
  const aPub = createPublicKey(await readFile(f('a-moved.pem')));
  for (const hsm of ['hsm-1', 'hsm-2']) {
    // Both HSMs of B hold the key pair (the unwrapped pair is replicated like a generated one).
    await run(['crypto', 'sign', '--key', 'moved', '--in', msg, '--mech', 'ecdsa-sha256', '--out', f(`${hsm}.sig`), '--hsm', hsm], onB);
    t.ok(verify('sha256', await readFile(msg), aPub, await readFile(f(`${hsm}.sig`))), `the signature from B's ${hsm} verifies with A's public key`);
  }
  const refPub = createPublicKey(await readFile(f('moved.ref.pem'))).export({ type: 'spki', format: 'der' });
  t.same(refPub, aPub.export({ type: 'spki', format: 'der' }), 'B\'s key reference carries A\'s public key');
});

t.test('refusals: a non-extractable key, an RSA private key under rsa-oaep, the wrong unwrapping key, bad flags', async (t) => {
  await run(['key', 'generate', '--type', 'ec:p256', '--label', 'stuck'], onA);
  await t.rejects(run(['key', 'wrap', '--key', 'stuck', '--wrapping-key', 'kek', '--mech', 'aes-kwp', '--out', f('stuck.wrapped')], onA),
    { message: /is not extractable, so no HSM will wrap it: only keys made with --extractable can leave the cluster/ });
  await run(['key', 'generate', '--type', 'rsa:2048', '--label', 'big', '--extractable'], onA);
  await t.rejects(run(['key', 'wrap', '--key', 'big', '--wrapping-key', 'b-transport', '--mech', 'rsa-oaep', '--out', f('x.wrapped')], onA),
    { message: /rsa-oaep-wrap carries at most \d+ bytes \(a secret key\); wrap private keys with aes-key-wrap-pad/ });
  await run(['key', 'generate', '--type', 'aes:256', '--label', 'other'], onB);
  await t.rejects(run(['key', 'unwrap', '--in', f('moved.wrapped'), '--unwrapping-key', 'other', '--mech', 'aes-kwp', '--label', 'nope'], onB),
    { message: /moved\.wrapped does not unwrap with other \(aes-kwp\): wrong key, wrong mechanism, or the file was altered/ });
  const altered = await readFile(f('moved.wrapped'));
  altered[10] ^= 1;
  await writeFile(f('altered.wrapped'), altered);
  await t.rejects(run(['key', 'unwrap', '--in', f('altered.wrapped'), '--unwrapping-key', 'kek', '--mech', 'aes-kwp', '--label', 'nope'], onB),
    { message: /does not unwrap/ }, 'an altered file fails the RFC 5649 integrity check');
  await t.rejects(run(['key', 'wrap', '--key', 'moved', '--wrapping-key', 'kek', '--mech', 'des', '--out', f('y')], onA), { message: /--mech must be rsa-oaep or aes-kwp, got "des"/ });
  await t.rejects(run(['key', 'unwrap', '--in', f('kek.wrapped'), '--unwrapping-key', 'transport', '--mech', 'rsa-oaep', '--class', 'public', '--label', 'z'], onB),
    { message: /--class must be private or secret, got "public"/ });
  await t.rejects(run(['key', 'unwrap', '--in', f('kek.wrapped'), '--unwrapping-key', 'transport', '--mech', 'rsa-oaep', '--label', 'z', '--out', f('z.pem')], onB),
    { message: /--out writes a key reference, which names a private key/ });
  await t.rejects(run(['key', 'import-pub', '--in', f('moved.wrapped'), '--label', 'junk'], onA), { message: /not a readable public key/ });
  const keys = (await cliInProcess(['key', 'list', '--json'], onB)).stdout;
  t.notMatch(keys, /"nope"/, 'no key was made by the failed unwraps');
});
