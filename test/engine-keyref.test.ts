// Key references: the documented format, what openssl makes of them, and what they refuse to be.
import t from 'tap';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatKeyRef, keyAlgorithmOf, parseKeyRef, readKeyRef, writeKeyReference, type KeyRef } from '../src/engine/index.js';
import { encodeReferenceBlob, KEYREF_MAGIC } from '../src/engine/keyref.js';
import { openssl } from './helpers/openssl.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-keyref-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

const CLUSTER = 'ab'.repeat(32);
const pubPem = (k: KeyObject): string => k.export({ type: 'spki', format: 'pem' }) as string;
const KEYS = {
  'RSA-2048': generateKeyPairSync('rsa', { modulusLength: 2048 }),
  'RSA-3072': generateKeyPairSync('rsa', { modulusLength: 3072 }),
  'P-256': generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  'P-384': generateKeyPairSync('ec', { namedCurve: 'P-384' }),
};
function refFor(publicKey: KeyObject, label = 'web'): KeyRef {
  return { backend: 'sim', clusterId: CLUSTER, keyId: 'k-0001', label, publicKey };
}

t.test('the test vectors in docs/key-reference.md decode to the documented fields and re-encode byte for byte', async (t) => {
  const doc = await readFile(new URL('../docs/key-reference.md', import.meta.url), 'utf8');
  const pems = [...doc.matchAll(/```pem\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const decoded = [...doc.matchAll(/Decoded \([^)]*\)?[^:]*:\n\n```json\n(.*)\n```/g)].map((m) => m[1]!);
  const pubs = [...doc.matchAll(/```\n(-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----\n)```/g)].map((m) => m[1]!);
  t.equal(pems.length, 2, 'two vectors');
  t.equal(decoded.length, 2);
  for (let i = 0; i < pems.length; i++) {
    const ref = parseKeyRef(pems[i]!, `vector ${i + 1}`);
    // The documented JSON is the payload's bytes as they are, field names and order included.
    t.equal(encodeReferenceBlob(ref).subarray(KEYREF_MAGIC.length + 1).toString('utf8'), decoded[i], `vector ${i + 1}: the payload is the documented JSON`);
    t.same(keyAlgorithmOf(ref.publicKey), i === 0 ? { type: 'ec', curve: 'P-256' } : { type: 'rsa', bits: 2048 }, `vector ${i + 1}: the key the doc names`);
    t.equal(formatKeyRef(ref), pems[i], `vector ${i + 1} re-encodes identically`);
    t.equal(pubPem(ref.publicKey), pubs[i], `vector ${i + 1} public key`);
    const r = await openssl(['pkey', '-pubout'], pems[i]);
    t.equal(r.stdout, pubs[i], `openssl agrees on vector ${i + 1}'s public key`);
  }
});

for (const [name, pair] of Object.entries(KEYS)) {
  t.test(`${name}: openssl prints the real public key from the reference`, async (t) => {
    const file = join(dir, `${name}.ref.pem`);
    await writeKeyReference(refFor(pair.publicKey), file);
    const pkey = await openssl(['pkey', '-in', file, '-pubout']);
    t.equal(pkey.code, 0, pkey.stderr);
    t.equal(pkey.stdout, pubPem(pair.publicKey), 'openssl pkey -pubout = the real public key');
    if (name.startsWith('RSA')) {
      const mod = await openssl(['rsa', '-in', file, '-modulus', '-noout']);
      const n = Buffer.from(pair.publicKey.export({ format: 'jwk' }).n!, 'base64url').toString('hex').toUpperCase();
      t.equal(mod.stdout.trim(), `Modulus=${n}`, 'openssl rsa -modulus = the real modulus');
      const rsaPub = await openssl(['rsa', '-in', file, '-pubout']);
      t.equal(rsaPub.stdout, pubPem(pair.publicKey));
    } else {
      const ec = await openssl(['ec', '-in', file, '-pubout']);
      t.equal(ec.code, 0, ec.stderr);
      t.equal(ec.stdout, pubPem(pair.publicKey), 'openssl ec -pubout = the real public key');
    }
    const back = await readKeyRef(file);
    t.ok(back.publicKey.equals(pair.publicKey), 'parses back to the same public key');
    t.equal(back.keyId, 'k-0001');
  });

  t.test(`${name}: the reference alone cannot sign`, async (t) => {
    const file = join(dir, `${name}.nosign.pem`);
    const pem = await writeKeyReference(refFor(pair.publicKey), file);
    const hash = name === 'P-384' ? 'sha384' : 'sha256';
    const data = Buffer.from('attack at dawn');
    let nodeVerified = false;
    try {
      const sig = sign(hash, data, createPrivateKey(pem));
      nodeVerified = verify(hash, data, pair.publicKey, sig);
    } catch {
      nodeVerified = false;
    }
    t.notOk(nodeVerified, 'node:crypto signing with the reference throws or does not verify');
    await writeFile(join(dir, `${name}.data`), data);
    await writeFile(join(dir, `${name}.pub`), pubPem(pair.publicKey));
    const s = await openssl(['dgst', `-${hash}`, '-sign', file, '-out', join(dir, `${name}.sig`), join(dir, `${name}.data`)]);
    if (s.code === 0) {
      const v = await openssl(['dgst', `-${hash}`, '-verify', join(dir, `${name}.pub`), '-signature', join(dir, `${name}.sig`), join(dir, `${name}.data`)]);
      t.not(v.code, 0, 'openssl signature made with the reference does not verify');
    } else {
      t.pass('openssl refuses to sign with the reference');
    }
  });
}

t.test('a real private key where a reference is expected is refused, naming the file', async (t) => {
  const rsa = KEYS['RSA-2048'].privateKey;
  const ec = KEYS['P-256'].privateKey;
  const cases: Array<[string, string]> = [
    ['pkcs8.pem', rsa.export({ type: 'pkcs8', format: 'pem' }) as string],
    ['pkcs1.pem', rsa.export({ type: 'pkcs1', format: 'pem' }) as string],
    ['sec1.pem', ec.export({ type: 'sec1', format: 'pem' }) as string],
    ['encrypted.pem', rsa.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }) as string],
  ];
  for (const [name, pem] of cases) {
    const file = join(dir, name);
    await writeFile(file, pem);
    await t.rejects(readKeyRef(file), { code: 'ENGINE_ERR_REAL_PRIVATE_KEY', message: new RegExp(`${file}.*real private key.*key import`) }, name);
  }
});

t.test('malformed references are refused with ENGINE_ERR_MALFORMED_KEYREF naming the file', async (t) => {
  const good = formatKeyRef(refFor(KEYS['P-256'].publicKey));
  const goodRsa = formatKeyRef(refFor(KEYS['RSA-2048'].publicKey));
  const other = formatKeyRef(refFor(KEYS['P-256'].publicKey, 'other-label'));
  const refBlock = (pem: string): string => pem.slice(pem.indexOf('-----BEGIN HSMPROXY'));
  const rsaBody = goodRsa.split('\n').slice(1, -2).join('');
  const cases: Record<string, string> = {
    'not PEM at all': 'hello world\n',
    'empty file': '',
    'a certificate instead': '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
    'broken base64': good.replace(/^M.*$/m, 'M!!!'),
    'truncated DER': `-----BEGIN RSA PRIVATE KEY-----\n${rsaBody.slice(0, 100)}\n-----END RSA PRIVATE KEY-----\n`,
    'EC reference block missing': good.slice(0, good.indexOf('-----BEGIN HSMPROXY')),
    'EC reference block from another reference': good.slice(0, good.indexOf('-----BEGIN HSMPROXY')) + refBlock(other),
    'text after the blocks': good + 'trailing\n',
    'mismatched END label': goodRsa.replace('END RSA PRIVATE KEY', 'END EC PRIVATE KEY'),
  };
  for (const [what, text] of Object.entries(cases)) {
    const file = join(dir, `bad-${what.replace(/\W+/g, '-')}.pem`);
    await writeFile(file, text);
    await t.rejects(readKeyRef(file), { code: 'ENGINE_ERR_MALFORMED_KEYREF', message: new RegExp(`^${file} is not a valid hsmproxy key reference: `) }, what);
  }
  await t.rejects(readKeyRef(join(dir, 'missing.pem')), { code: 'ENGINE_ERR_MALFORMED_KEYREF', message: /missing\.pem.*ENOENT/ }, 'missing file');
});

t.test('a reference with an unknown format version or unknown field is refused', async (t) => {
  const pub = KEYS['P-256'].publicKey;
  const pem = formatKeyRef(refFor(pub));
  const blobB64 = pem.slice(pem.indexOf('-----BEGIN HSMPROXY')).split('\n').slice(1, -2).join('');
  const blob = Buffer.from(blobB64, 'base64');
  const v2 = Buffer.from(blob);
  v2[8] = 2;
  // Rebuild the EC block with a matching binding, so only the version is wrong.
  const { createHash } = await import('node:crypto');
  const rebuild = (b: Buffer): string => {
    const der = createPrivateKey(pem).export({ type: 'sec1', format: 'der' });
    const scalarAt = der.indexOf(Buffer.from('HSMPXREF'));
    const binding = Buffer.concat([Buffer.from('HSMPXREF'), b.subarray(8, 9), createHash('sha512').update(b).digest().subarray(0, 23)]);
    binding.copy(der, scalarAt);
    const block = (label: string, d: Buffer): string => `-----BEGIN ${label}-----\n${d.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
    return block('EC PRIVATE KEY', der) + block('HSMPROXY KEY REFERENCE', b);
  };
  t.throws(() => parseKeyRef(rebuild(v2), 'v2.pem'), { code: 'ENGINE_ERR_MALFORMED_KEYREF', message: /version 2 is not supported/ });
  const extra = Buffer.concat([blob.subarray(0, 9), Buffer.from(JSON.stringify({ backend: 'sim', cluster: CLUSTER, keyId: 'k', label: 'l', secret: 'x' }))]);
  t.throws(() => parseKeyRef(rebuild(extra), 'extra.pem'), { code: 'ENGINE_ERR_MALFORMED_KEYREF', message: /unexpected field "secret"/ });
  t.ok(createPublicKey(pem).equals(pub), 'sanity: the original still loads');
});

t.test('writing a reference never overwrites an existing file unless asked', async (t) => {
  const file = join(dir, 'exists.pem');
  await writeFile(file, 'keep me');
  await t.rejects(writeKeyReference(refFor(KEYS['P-256'].publicKey), file), { code: 'ENGINE_ERR_FILE', message: /already exists/ });
  t.equal(await readFile(file, 'utf8'), 'keep me');
  await writeKeyReference(refFor(KEYS['P-256'].publicKey), file, { overwrite: true });
  t.equal((await readKeyRef(file)).label, 'web');
});

t.test('looksLikeKeyRef tells references (even damaged ones) from real keys and other text', async (t) => {
  const { looksLikeKeyRef } = await import('../src/engine/index.js');
  const pem = formatKeyRef(refFor(KEYS['P-256'].publicKey));
  t.ok(looksLikeKeyRef(pem));
  t.ok(looksLikeKeyRef(pem.slice(0, pem.indexOf('-----BEGIN HSMPROXY'))), 'an EC reference that lost its reference block');
  t.notOk(looksLikeKeyRef(KEYS['P-256'].privateKey.export({ type: 'pkcs8', format: 'pem' }) as string), 'a real key');
  t.notOk(looksLikeKeyRef('garbage\n'), 'garbage');
});
