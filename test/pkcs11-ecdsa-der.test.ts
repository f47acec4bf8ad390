// The raw r||s → DER conversion PKCS#11 ECDSA signatures need, checked against node:crypto.
import t from 'tap';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { ecdsaRawToDer } from '../src/engine/pkcs11/mechanisms.js';

const data = Buffer.from('content signed in a TLS 1.3 CertificateVerify');

for (const [curve, size] of [['P-256', 32], ['P-384', 48]] as const) {
  t.test(`${curve}: converted signatures equal the DER node itself produces`, async (t) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
    const hash = size === 32 ? 'sha256' : 'sha384';
    for (let i = 0; i < 50; i++) {
      const der = sign(hash, data, privateKey);
      const raw = rawFromDer(der, size);
      const converted = ecdsaRawToDer(raw);
      if (!converted.equals(der)) { t.fail(`differs from node's DER: ${converted.toString('hex')}`); return; }
      if (!verify(hash, data, publicKey, converted)) { t.fail('does not verify'); return; }
    }
    t.pass('50 signatures identical to node\'s DER and verified');
  });

  t.test(`${curve}: r or s with leading zero bytes become minimal DER integers that verify`, async (t) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
    const hash = size === 32 ? 'sha256' : 'sha384';
    // About 1 signature in 128 has a zero first byte in r or s: search a bounded number.
    let found = 0;
    for (let i = 0; i < 20_000 && found < 3; i++) {
      const msg = Buffer.from(`m${i}`);
      const raw = sign(hash, msg, { key: privateKey, dsaEncoding: 'ieee-p1363' });
      if (raw[0] !== 0 && raw[size] !== 0) continue;
      found++;
      const der = ecdsaRawToDer(raw);
      t.ok(verify(hash, msg, publicKey, der), 'verifies');
      t.ok(der.length < 2 + 2 * (2 + size + 1), 'shorter than with the zero kept');
    }
    t.ok(found > 0, 'found signatures with leading zeros');
  });
}

t.test('a high first bit gets a 0x00 pad so the integer stays positive', async (t) => {
  const raw = Buffer.concat([Buffer.alloc(32, 0x80), Buffer.alloc(32, 0x01)]);
  const der = ecdsaRawToDer(raw);
  t.same(der.subarray(0, 5), Buffer.from([0x30, 0x45, 0x02, 0x21, 0x00]));
  t.equal(der[37], 0x02);
  t.equal(der[38], 0x20);
});

t.test('an all-zero half encodes as the single byte 0', async (t) => {
  const der = ecdsaRawToDer(Buffer.concat([Buffer.alloc(32), Buffer.alloc(32, 1)]));
  t.same(der.subarray(0, 5), Buffer.from([0x30, 0x25, 0x02, 0x01, 0x00]));
});

t.test('an odd-length token output is refused', async (t) => {
  t.throws(() => ecdsaRawToDer(Buffer.alloc(63)), { code: 'ENGINE_ERR_UNSUPPORTED' });
});

// Reads r and s out of node's DER signature and lays them out as PKCS#11 does: fixed-size r||s.
function rawFromDer(der: Buffer, size: number): Buffer {
  let pos = der[1]! & 0x80 ? 3 : 2;
  const out: Buffer[] = [];
  for (let k = 0; k < 2; k++) {
    const len = der[pos + 1]!;
    const v = der.subarray(pos + 2, pos + 2 + len);
    pos += 2 + len;
    const trimmed = v[0] === 0 ? v.subarray(1) : v;
    out.push(Buffer.concat([Buffer.alloc(size - trimmed.length), trimmed]));
  }
  return Buffer.concat(out);
}
