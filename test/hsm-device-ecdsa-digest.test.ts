// ECDSA over a precomputed digest in the simulated HSM (issue 19 §4): every signature verifies
// with node:crypto on P-256 and P-384, for digests shorter, equal to and longer than the order;
// the nonce and its curve point come from OpenSSL, not from a JS double-and-add that branches on
// the nonce's bits.
import t from 'tap';
import crypto from 'node:crypto';
import { ecdsaSignDigest, ecdsaVerifyDigest } from '../src/hsm/device/ecdsa-digest.js';

const CURVES = [['P-256', ['sha256', 'sha384', 'sha512']], ['P-384', ['sha256', 'sha384', 'sha512']]] as const;
const ROUNDS = 100;

for (const [curve, hashes] of CURVES) {
  t.test(`${curve}: signatures over ${hashes.join(', ')} digests of random messages verify with node:crypto`, async (t) => {
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: curve });
    let good = 0;
    let total = 0;
    for (const hash of hashes) {
      for (let i = 0; i < ROUNDS; i++) {
        const msg = crypto.randomBytes(1 + (i % 64));
        const digest = crypto.createHash(hash).update(msg).digest();
        const der = ecdsaSignDigest(privateKey, digest, 'der');
        const raw = ecdsaSignDigest(privateKey, digest, 'raw');
        total += 2;
        if (crypto.verify(hash, msg, publicKey, der)) good++;
        if (crypto.verify(hash, msg, { key: publicKey, dsaEncoding: 'ieee-p1363' }, raw)) good++;
      }
    }
    t.equal(good, total, `all ${total} signatures (DER and raw r||s) verify`);
  });
}

t.test('edge digests (all zero, all ones) sign and verify', async (t) => {
  for (const curve of ['P-256', 'P-384'] as const) {
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: curve });
    for (const digest of [Buffer.alloc(32), Buffer.alloc(48), Buffer.alloc(32, 0xff), Buffer.alloc(64, 0xff)]) {
      const sig = ecdsaSignDigest(privateKey, digest, 'raw');
      t.ok(ecdsaVerifyDigest(publicKey, digest, sig, 'raw'), `${curve}, ${digest.length}-byte ${digest[0] === 0 ? 'zero' : 'all-ones'} digest`);
      t.notOk(ecdsaVerifyDigest(publicKey, Buffer.from(digest).fill(1, 0, 1), sig, 'raw'), 'and not over another digest');
    }
  }
});

t.test('two signatures of one digest use different nonces', async (t) => {
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const digest = crypto.randomBytes(32);
  const rs = new Set(Array.from({ length: 20 }, () => ecdsaSignDigest(privateKey, digest, 'raw').subarray(0, 32).toString('hex')));
  t.equal(rs.size, 20);
});

t.test('the nonce and r come from an OpenSSL key pair of the key\'s curve, one per signature', async (t) => {
  const made: Array<{ curve: string; point: Buffer }> = [];
  const spy = (curve: string): crypto.ECDH => {
    const ecdh = crypto.createECDH(curve);
    const generateKeys = ecdh.generateKeys.bind(ecdh) as () => Buffer;
    Object.assign(ecdh, { generateKeys: () => { const point = generateKeys(); made.push({ curve, point }); return point; } });
    return ecdh;
  };
  const mod = await t.mockImport<typeof import('../src/hsm/device/ecdsa-digest.js')>('../src/hsm/device/ecdsa-digest.js', {
    'node:crypto': { ...crypto, createECDH: spy },
  });
  for (const [curve, openssl, size] of [['P-256', 'prime256v1', 32], ['P-384', 'secp384r1', 48]] as const) {
    made.length = 0;
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: curve });
    const digests = Array.from({ length: 5 }, () => crypto.randomBytes(size));
    const sigs = digests.map((digest) => mod.ecdsaSignDigest(privateKey, digest, 'raw'));
    t.same(made.map((m) => m.curve), Array(5).fill(openssl), `${curve}: one ${openssl} key pair per signature`);
    // r is x(kG) of that key pair (mod n; x < n for all but a 2^-128 fraction of points).
    t.same(sigs.map((s) => s.subarray(0, size).toString('hex')), made.map((m) => m.point.subarray(1, 1 + size).toString('hex')), 'r is its point\'s x');
    t.ok(sigs.every((s, i) => ecdsaVerifyDigest(publicKey, digests[i]!, s, 'raw')), 'and the signatures verify');
  }
});
