// The TLS 1.3 record layer: framing a byte stream into records (with the header checks RFC 8446
// §5.1 and TLS.md items 1–5 ask for) and record protection (§5.2–5.4) for all three AEADs.
import t from 'tap';
import crypto from 'node:crypto';
import {
  ContentType, HttpOnTlsPortError, MAX_CIPHERTEXT_13, MAX_PLAINTEXT, RecordDeframer, RecordOpener,
  RecordSealer, plaintextRecords, type RecordFrame,
} from '../src/tls/record.js';
import { TLS13_SUITES, suiteById } from '../src/tls/suites.js';
import { AlertDescription, TlsAlertError, TlsError } from '../src/tls/alert.js';
import { trafficKeys } from '../src/tls/keyschedule.js';

const AES128 = suiteById(0x1301)!;

function alertOf(fn: () => unknown): number | string | undefined {
  try { fn(); } catch (e) {
    if (e instanceof TlsAlertError) return e.alert;
    if (e instanceof TlsError) return e.code;
    return `non-TLS error: ${String(e)}`;
  }
  return undefined;
}

function pair(suite = AES128): { sealer: RecordSealer; opener: RecordOpener; key: Buffer; iv: Buffer } {
  const key = crypto.randomBytes(suite.keyLen);
  const iv = crypto.randomBytes(12);
  return { sealer: new RecordSealer(suite, key, iv), opener: new RecordOpener(suite, key, iv), key, iv };
}

function frames(wire: Buffer): RecordFrame[] {
  const d = new RecordDeframer();
  d.push(wire);
  const out: RecordFrame[] = [];
  for (let r = d.next(); r; r = d.next()) out.push(r);
  return out;
}

// ---- protection ----

for (const suite of TLS13_SUITES) {
  t.test(`${suite.name}: sealed records open to the same type and content`, async (t) => {
    const { sealer, opener } = pair(suite);
    for (const [type, len] of [[ContentType.handshake, 1], [ContentType.application_data, 0], [ContentType.application_data, 1000], [ContentType.alert, 2]] as const) {
      const content = crypto.randomBytes(len);
      const recs = frames(sealer.seal(type, content));
      t.equal(recs.length, 1);
      t.equal(recs[0]!.type, ContentType.application_data, 'outer type is always application_data');
      t.equal(recs[0]!.version, 0x0303, 'legacy_record_version is 0x0303');
      const got = opener.open(recs[0]!);
      t.equal(got.type, type);
      t.ok(got.content.equals(content));
    }
    t.equal(sealer.seq, 4n);
    t.equal(opener.seq, 4n);
  });
}

// RFC 8448 §3: the server's encrypted flight (EE, Certificate, CV, Finished) in one record, seq 0.
const RFC8448_SERVER_FLIGHT = Buffer.from(`
17030302a2d1ff334a56f5bff6594a07cc87b580233f500f45e489e7f33af35edf7869fcf40aa40aa2b8ea73f848a7ca
07612ef9f945cb960b4068905123ea78b111b429ba9191cd05d2a389280f526134aadc7fc78c4b729df828b5ecf7b13b
d9aefb0e57f271585b8ea9bb355c7c79020716cfb9b1183ef3ab20e37d57a6b9d7477609aee6e122a4cf51427325250c
7d0e509289444c9b3a648f1d71035d2ed65b0e3cdd0cbae8bf2d0b227812cbb360987255cc744110c453baa4fcd61092
8d809810e4b7ed1a8fd991f06aa6248204797e36a6a73b70a2559c09ead686945ba246ab66e5edd8044b4c6de3fcf2a8
9441ac66272fd8fb330ef8190579b3684596c960bd596eea520a56a8d650f563aad27409960dca63d3e688611ea5e22f
4415cf9538d51a200c27034272968a264ed6540c84838d89f72c24461aad6d26f59ecaba9acbbb317b66d902f4f292a3
6ac1b639c637ce343117b659622245317b49eeda0c6258f100d7d961ffb138647e92ea330faeea6dfa31c7a84dc3bd7e
1b7a6c7178af36879018e3f252107f243d243dc7339d5684c8b0378bf30244da8c87c843f5e56eb4c5e8280a2b48052c
f93b16499a66db7cca71e4599426f7d461e66f99882bd89fc50800becca62d6c74116dbd2972fda1fa80f85df881edbe
5a37668936b335583b599186dc5c6918a396fa48a181d6b6fa4f9d62d513afbb992f2b992f67f8afe67f76913fa388cb
5630c8ca01e0c65d11c66a1e2ac4c85977b7c7a6999bbf10dc35ae69f5515614636c0b9b68c19ed2e31c0b3b66763038
ebba42f3b38edc0399f3a9f23faa63978c317fc9fa66a73f60f0504de93b5b845e275592c12335ee340bbc4fddd50278
4016e4b3be7ef04dda49f4b440a30cb5d2af939828fd4ae3794e44f94df5a631ede42c1719bfdabf0253fe5175be898e
750edc53370d2b`.replace(/\s+/g, ''), 'hex');

t.test('the RFC 8448 §3 encrypted server flight opens with the trace keys, and sealing reproduces it', async (t) => {
  const secret = Buffer.from('b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38', 'hex');
  const { key, iv } = trafficKeys(AES128, secret);
  const rec = frames(RFC8448_SERVER_FLIGHT)[0]!;
  const inner = new RecordOpener(AES128, key, iv).open(rec);
  t.equal(inner.type, ContentType.handshake);
  t.equal(inner.content.subarray(0, 4).toString('hex'), '08000024', 'starts with EncryptedExtensions');
  t.equal(inner.content.subarray(-36).toString('hex'), '140000209b9b141d906337fbd2cbdce71df4deda4ab42c309572cb7fffee5454b78f0718', 'ends with the server Finished');
  const resealed = new RecordSealer(AES128, key, iv).seal(ContentType.handshake, Buffer.from(inner.content));
  t.ok(resealed.equals(RFC8448_SERVER_FLIGHT), 'byte-identical record');
});

t.test('the nonce is iv XOR the 64-bit sequence number', async (t) => {
  const { sealer, key, iv } = pair();
  sealer.seal(ContentType.application_data, Buffer.from('zero'));
  const rec = sealer.seal(ContentType.application_data, Buffer.from('one'));
  // Decrypt record 1 by hand with nonce = iv ^ 1.
  const nonce = Buffer.from(iv); nonce[11]! ^= 1;
  const body = rec.subarray(5);
  const d = crypto.createDecipheriv('aes-128-gcm', key, nonce, { authTagLength: 16 });
  d.setAAD(rec.subarray(0, 5));
  d.setAuthTag(body.subarray(body.length - 16));
  const inner = Buffer.concat([d.update(body.subarray(0, body.length - 16)), d.final()]);
  t.equal(inner.toString('latin1'), 'one\x17');
});

t.test('records must be opened in order (each sequence number once)', async (t) => {
  const { sealer, opener } = pair();
  const r0 = frames(sealer.seal(ContentType.application_data, Buffer.from('a')))[0]!;
  const r1 = frames(sealer.seal(ContentType.application_data, Buffer.from('b')))[0]!;
  t.equal(alertOf(() => opener.open(r1)), AlertDescription.bad_record_mac, 'reordered record fails');
  const { sealer: s2, opener: o2 } = pair();
  const a = frames(s2.seal(ContentType.application_data, Buffer.from('a')))[0]!;
  o2.open(a);
  t.equal(alertOf(() => o2.open(a)), AlertDescription.bad_record_mac, 'replayed record fails');
  t.ok(r0);
});

t.test('flipping any single byte of a record is bad_record_mac', async (t) => {
  const { sealer, key, iv } = pair();
  const wire = sealer.seal(ContentType.application_data, Buffer.from('attack at dawn, bring snacks'));
  let failures = 0;
  for (let i = 0; i < wire.length; i++) {
    if (i === 0 || i === 3 || i === 4) continue; // type and length are framing, tested separately
    const bad = Buffer.from(wire); bad[i]! ^= 0x01;
    const opener = new RecordOpener(AES128, key, iv);
    const rec: RecordFrame = { type: bad[0]!, version: bad.readUInt16BE(1), fragment: bad.subarray(5) };
    if (alertOf(() => opener.open(rec)) === AlertDescription.bad_record_mac) failures++;
  }
  t.equal(failures, wire.length - 3, 'every tampered byte (version, ciphertext, tag) is caught');
});

t.test('a truncated or tag-only record is bad_record_mac', async (t) => {
  const { opener } = pair();
  for (const n of [0, 1, 16]) {
    t.equal(alertOf(() => opener.open({ type: 23, version: 0x0303, fragment: Buffer.alloc(n) })), AlertDescription.bad_record_mac, `${n} bytes`);
  }
});

t.test('an encrypted record whose outer type is not application_data is unexpected_message', async (t) => {
  const { sealer, opener } = pair();
  const rec = frames(sealer.seal(ContentType.handshake, Buffer.from('hi')))[0]!;
  t.equal(alertOf(() => opener.open({ ...rec, type: ContentType.handshake })), AlertDescription.unexpected_message);
});

t.test('an inner plaintext of only zero padding is unexpected_message', async (t) => {
  const { key, iv, opener } = pair();
  const inner = Buffer.alloc(10); // no content type byte at all
  const header = Buffer.from([23, 3, 3, 0, inner.length + 16]);
  const c = crypto.createCipheriv('aes-128-gcm', key, iv, { authTagLength: 16 });
  c.setAAD(header);
  const ct = Buffer.concat([c.update(inner), c.final(), c.getAuthTag()]);
  t.equal(alertOf(() => opener.open({ type: 23, version: 0x0303, fragment: ct })), AlertDescription.unexpected_message);
});

t.test('an inner plaintext over 2^14+1 bytes is record_overflow', async (t) => {
  const { key, iv, opener } = pair();
  const inner = Buffer.alloc(MAX_PLAINTEXT + 2, 0x41);
  const header = Buffer.alloc(5); header[0] = 23; header.writeUInt16BE(0x0303, 1); header.writeUInt16BE(inner.length + 16, 3);
  const c = crypto.createCipheriv('aes-128-gcm', key, iv, { authTagLength: 16 });
  c.setAAD(header);
  const ct = Buffer.concat([c.update(inner), c.final(), c.getAuthTag()]);
  t.equal(alertOf(() => opener.open({ type: 23, version: 0x0303, fragment: ct })), AlertDescription.record_overflow);
});

t.test('a zero-length handshake or alert inside a protected record is unexpected_message', async (t) => {
  const { sealer, opener } = pair();
  const rec = frames(sealer.seal(ContentType.handshake, Buffer.alloc(0)))[0]!;
  t.equal(alertOf(() => opener.open(rec)), AlertDescription.unexpected_message);
});

t.test('padding is added inside the record and removed on open', async (t) => {
  const { sealer, opener } = pair();
  const wire = sealer.seal(ContentType.application_data, Buffer.from('x'), 100);
  t.equal(wire.length, 5 + 1 + 1 + 100 + 16);
  const got = opener.open(frames(wire)[0]!);
  t.equal(got.content.toString(), 'x');
  t.equal(got.type, ContentType.application_data);
});

t.test('content over 2^14 is sealed as several full records that reassemble', async (t) => {
  const { sealer, opener } = pair();
  const content = crypto.randomBytes(MAX_PLAINTEXT * 2 + 5);
  const recs = frames(sealer.seal(ContentType.application_data, content, 10));
  t.equal(recs.length, 3);
  for (const r of recs) t.ok(r.fragment.length <= MAX_PLAINTEXT + 1 + 16, 'each inner plaintext within 2^14+1');
  const joined = Buffer.concat(recs.map((r) => opener.open(r).content));
  t.ok(joined.equals(content));
  t.equal(sealer.seq, 3n);
});

t.test('a key asks for KeyUpdate at its soft limit and refuses to seal past the hard limit', async (t) => {
  const key = crypto.randomBytes(16); const iv = crypto.randomBytes(12);
  const sealer = new RecordSealer(AES128, key, iv, { soft: 2n, hard: 3n });
  sealer.seal(23, Buffer.from('a'));
  t.notOk(sealer.needsKeyUpdate);
  sealer.seal(23, Buffer.from('b'));
  t.ok(sealer.needsKeyUpdate);
  sealer.seal(23, Buffer.from('c'));
  t.equal(alertOf(() => sealer.seal(23, Buffer.from('d'))), 'TLS_ERR_SEQ_EXHAUSTED');
  t.equal(new RecordSealer(AES128, key, iv).needsKeyUpdate, false, 'default limits are far away');
});

t.test('an opener past its hard limit reports TLS_ERR_SEQ_EXHAUSTED, not bad_record_mac', async (t) => {
  const key = crypto.randomBytes(16); const iv = crypto.randomBytes(12);
  const sealer = new RecordSealer(AES128, key, iv);
  const opener = new RecordOpener(AES128, key, iv, { soft: 1n, hard: 2n });
  for (const c of ['a', 'b']) t.equal(opener.open(frames(sealer.seal(23, Buffer.from(c)))[0]!).content.toString(), c);
  t.ok(opener.needsKeyUpdate, 'past the soft limit');
  t.equal(alertOf(() => opener.open(frames(sealer.seal(23, Buffer.from('c')))[0]!)), 'TLS_ERR_SEQ_EXHAUSTED');
});

t.test('a seal that would cross the hard limit seals nothing', async (t) => {
  const key = crypto.randomBytes(16); const iv = crypto.randomBytes(12);
  const sealer = new RecordSealer(AES128, key, iv, { soft: 2n, hard: 2n });
  t.equal(alertOf(() => sealer.seal(23, Buffer.alloc(MAX_PLAINTEXT * 2 + 1))), 'TLS_ERR_SEQ_EXHAUSTED', 'three records do not fit in two');
  t.equal(sealer.seq, 0n, 'no sequence number was used');
});

t.test('TLS 1.2 keys are bounded by the 64-bit sequence number only (RFC 5246 §6.1, RFC 5288)', async (t) => {
  const { RecordSealer12, RecordOpener12 } = await import('../src/tls/record12.js');
  const { suite12ById } = await import('../src/tls/suites12.js');
  for (const id of [0xc02b, 0xc030, 0xcca9]) {
    const suite = suite12ById(id)!;
    const key = crypto.randomBytes(suite.keyLen); const iv = crypto.randomBytes(suite.fixedIvLen);
    for (const p of [new RecordSealer12(suite, key, iv), new RecordOpener12(suite, key, iv)]) {
      t.same(p.limits, { soft: 2n ** 64n - 1n, hard: 2n ** 64n - 1n }, `${suite.name}: no AES-GCM rekey limit, since 1.2 cannot rekey`);
    }
  }
});

t.test('keys of the wrong length are refused at construction', async (t) => {
  t.equal(alertOf(() => new RecordSealer(AES128, Buffer.alloc(32), Buffer.alloc(12))), 'TLS_ERR_BAD_KEY');
  t.equal(alertOf(() => new RecordOpener(AES128, Buffer.alloc(16), Buffer.alloc(8))), 'TLS_ERR_BAD_KEY');
});

t.test('plaintextRecords frames at 2^14 with version 0x0303', async (t) => {
  const content = crypto.randomBytes(MAX_PLAINTEXT + 1);
  const recs = frames(plaintextRecords(ContentType.handshake, content));
  t.same(recs.map((r) => [r.type, r.version, r.fragment.length]), [[22, 0x0303, MAX_PLAINTEXT], [22, 0x0303, 1]]);
  t.ok(Buffer.concat(recs.map((r) => r.fragment)).equals(content));
});

// ---- deframing ----

const hs = (body: Buffer, version = 0x0301): Buffer => {
  const h = Buffer.alloc(5); h[0] = 22; h.writeUInt16BE(version, 1); h.writeUInt16BE(body.length, 3);
  return Buffer.concat([h, body]);
};

t.test('records arriving one byte at a time reassemble', async (t) => {
  const a = crypto.randomBytes(300); const b = crypto.randomBytes(MAX_PLAINTEXT);
  const wire = Buffer.concat([hs(a), hs(b, 0x0303)]);
  const d = new RecordDeframer();
  const got: RecordFrame[] = [];
  for (let i = 0; i < wire.length; i++) {
    d.push(wire.subarray(i, i + 1));
    for (let r = d.next(); r; r = d.next()) got.push(r);
  }
  t.equal(got.length, 2);
  t.ok(got[0]!.fragment.equals(a));
  t.equal(got[0]!.version, 0x0301);
  t.ok(got[1]!.fragment.equals(b));
  t.equal(d.bufferedBytes, 0);
});

t.test('a header split across chunks is reassembled', async (t) => {
  const body = Buffer.from('hello');
  const wire = hs(body);
  const d = new RecordDeframer();
  d.push(wire.subarray(0, 3));
  t.equal(d.next(), null);
  t.equal(d.bufferedBytes, 3);
  d.push(wire.subarray(3));
  t.ok(d.next()!.fragment.equals(body));
});

t.test('many records in one chunk come out in order', async (t) => {
  const bodies = Array.from({ length: 50 }, (_, i) => Buffer.alloc(i + 1, i));
  const d = new RecordDeframer();
  d.push(Buffer.concat(bodies.map((b) => hs(b))));
  for (const b of bodies) t.ok(d.next()!.fragment.equals(b));
  t.equal(d.next(), null);
});

t.test('a header announcing an oversize record is refused before its body is buffered', async (t) => {
  const h = Buffer.from([23, 3, 3, 0, 0]); h.writeUInt16BE(MAX_CIPHERTEXT_13 + 1, 3);
  const d = new RecordDeframer();
  d.push(hs(Buffer.from('ch'))); // a first record
  t.equal(alertOf(() => d.push(h)), AlertDescription.record_overflow);
  t.ok(d.bufferedBytes <= 2, 'no body bytes held');
  t.equal(alertOf(() => d.push(Buffer.alloc(10))), AlertDescription.record_overflow, 'stays failed');
});

t.test('a plaintext (non-application_data) record over 2^14 is record_overflow', async (t) => {
  const h = Buffer.from([22, 3, 1, 0, 0]); h.writeUInt16BE(MAX_PLAINTEXT + 1, 3);
  t.equal(alertOf(() => new RecordDeframer().push(h)), AlertDescription.record_overflow);
  const ok = Buffer.from([23, 3, 3, 0, 0]); ok.writeUInt16BE(MAX_CIPHERTEXT_13, 3);
  const d = new RecordDeframer();
  d.push(hs(Buffer.from('x')));
  t.equal(alertOf(() => d.push(ok)), undefined, 'application_data may be 2^14+256');
  t.ok(new RecordDeframer({ maxCiphertext: 2 ** 14 + 2048, plaintextLimit: false }), 'TLS 1.2 limits are configurable');
});

t.test('an unknown content type is unexpected_message', async (t) => {
  for (const type of [0, 19, 24, 0x7f]) {
    const d = new RecordDeframer();
    t.equal(alertOf(() => d.push(Buffer.from([type, 3, 3, 0, 1, 0]))), AlertDescription.unexpected_message, `type ${type}`);
  }
});

t.test('a record version outside the 0x03xx family is refused', async (t) => {
  t.equal(alertOf(() => new RecordDeframer().push(Buffer.from([22, 0x10, 0x03, 0, 1, 0]))), AlertDescription.protocol_version);
});

t.test('zero-length handshake and alert records are unexpected_message; empty application_data passes', async (t) => {
  t.equal(alertOf(() => new RecordDeframer().push(Buffer.from([22, 3, 1, 0, 0]))), AlertDescription.unexpected_message);
  t.equal(alertOf(() => new RecordDeframer().push(Buffer.from([21, 3, 3, 0, 0]))), AlertDescription.unexpected_message);
  const d = new RecordDeframer();
  d.push(hs(Buffer.from('x')));
  d.push(Buffer.from([23, 3, 3, 0, 0]));
  d.next();
  t.equal(d.next()!.fragment.length, 0);
});

t.test('an SSLv2-format first record is refused (whole or split)', async (t) => {
  const v2 = Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15]);
  t.equal(alertOf(() => new RecordDeframer().push(v2)), AlertDescription.protocol_version);
  t.equal(alertOf(() => new RecordDeframer().push(v2.subarray(0, 1))), AlertDescription.protocol_version, 'detected from the first byte');
});

t.test('plain HTTP on the TLS port is recognised as such', async (t) => {
  for (const req of ['GET / HTTP/1.1\r\n', 'POST /x HTTP/1.1\r\n', 'HEAD / HTTP/1.0\r\n', 'PRI * HTTP/2.0\r\n']) {
    const d = new RecordDeframer();
    let err: unknown;
    try { d.push(Buffer.from(req)); } catch (e) { err = e; }
    t.ok(err instanceof HttpOnTlsPortError, req.trim());
    t.equal((err as TlsError).code, 'TLS_ERR_HTTP_ON_TLS_PORT');
  }
  const split = new RecordDeframer();
  split.push(Buffer.from('GE'));
  t.equal(alertOf(() => split.push(Buffer.from('T / HTTP/1.1\r\n'))), 'TLS_ERR_HTTP_ON_TLS_PORT', 'split across chunks');
});

t.test('bufferedBytes never exceeds one record plus what the caller has not taken', async (t) => {
  const d = new RecordDeframer();
  d.push(hs(Buffer.from('x')));
  d.next();
  const big = Buffer.alloc(5 + MAX_CIPHERTEXT_13); big[0] = 23; big[1] = 3; big[2] = 3; big.writeUInt16BE(MAX_CIPHERTEXT_13, 3);
  d.push(big.subarray(0, 1000));
  t.equal(d.bufferedBytes, 995, 'partial body held');
  d.push(big.subarray(1000));
  t.equal(d.bufferedBytes, MAX_CIPHERTEXT_13);
  d.next();
  t.equal(d.bufferedBytes, 0);
});

t.test('random byte streams only ever produce TLS alerts (deframer fuzz)', async (t) => {
  let seed = 12345;
  const rnd = (): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; };
  let nonTls = 0;
  for (let i = 0; i < 2000; i++) {
    const len = rnd() % 200;
    const buf = Buffer.alloc(len);
    for (let j = 0; j < len; j++) buf[j] = rnd() & 0xff;
    if (i % 2 === 0 && len > 5) { buf[0] = 20 + (rnd() % 4); buf[1] = 3; } // plausible headers half the time
    const d = new RecordDeframer();
    try {
      let pos = 0;
      while (pos < len) { const n = 1 + (rnd() % 17); d.push(buf.subarray(pos, pos + n)); pos += n; while (d.next()); }
    } catch (e) {
      if (!(e instanceof TlsError)) nonTls++;
    }
  }
  t.equal(nonTls, 0);
});
