// TLS 1.2 key derivation and record protection: the PRF against OpenSSL's TLS1-PRF, the
// RFC 5288 / RFC 7905 nonces and the RFC 5246 AAD, and the separate 'tls12' ticket key.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import { TlsAlertError, AlertDescription } from '../src/tls/alert.js';
import { finishedVerifyData12, keyBlock12, prf12 } from '../src/tls/prf12.js';
import { ContentType, MAX_PLAINTEXT } from '../src/tls/record.js';
import { RecordOpener12, RecordSealer12 } from '../src/tls/record12.js';
import { TLS12_SUITES, suite12ById } from '../src/tls/suites12.js';
import { TicketKeys } from '../src/tls/tickets.js';
import { openTicket12, sealTicket12 } from '../src/tls/tickets12.js';

function opensslPrf(digest: string, secret: Buffer, label: string, seed: Buffer, len: number): Buffer {
  const out = execFileSync('openssl', ['kdf', '-keylen', String(len), '-kdfopt', `digest:${digest}`, '-kdfopt', `hexsecret:${secret.toString('hex')}`,
    '-kdfopt', `hexseed:${Buffer.concat([Buffer.from(label), seed]).toString('hex')}`, 'TLS1-PRF'], { encoding: 'utf8' });
  return Buffer.from(out.trim().replace(/:/g, ''), 'hex');
}

t.test('the PRF matches OpenSSL TLS1-PRF for SHA-256 and SHA-384 at every output length we use', async (t) => {
  const secret = crypto.randomBytes(48);
  const seed = crypto.randomBytes(64);
  for (const [hash, digest] of [['sha256', 'SHA256'], ['sha384', 'SHA384']] as const) {
    for (const len of [12, 48, 80, 100]) {
      t.same(prf12(hash, secret, 'key expansion', seed, len), opensslPrf(digest, secret, 'key expansion', seed, len), `${hash} ${len} bytes`);
    }
  }
});

t.test('Finished verify_data is 12 bytes and depends on the side', async (t) => {
  const ms = crypto.randomBytes(48);
  const h = crypto.randomBytes(32);
  const c = finishedVerifyData12('sha256', ms, 'client', h);
  t.equal(c.length, 12);
  t.notSame(c, finishedVerifyData12('sha256', ms, 'server', h));
  t.same(c, opensslPrf('SHA256', ms, 'client finished', h, 12));
});

t.test('key block: AES-GCM has 4-byte salts, ChaCha20 12-byte IVs, keys of the suite size', async (t) => {
  for (const suite of TLS12_SUITES) {
    const kb = keyBlock12(suite, crypto.randomBytes(48), crypto.randomBytes(32), crypto.randomBytes(32));
    t.equal(kb.client.key.length, suite.keyLen);
    t.equal(kb.server.iv.length, suite.aead === 'chacha20-poly1305' ? 12 : 4, suite.name);
  }
});

function pair(id: number): { seal: RecordSealer12; open: RecordOpener12; key: Buffer; iv: Buffer } {
  const suite = suite12ById(id)!;
  const key = crypto.randomBytes(suite.keyLen);
  const iv = crypto.randomBytes(suite.fixedIvLen);
  return { seal: new RecordSealer12(suite, key, iv), open: new RecordOpener12(suite, key, iv), key, iv };
}

const alertOf = (f: () => unknown): number => { try { f(); return -1; } catch (e) { return e instanceof TlsAlertError ? e.alert : -2; } };

t.test('every suite: records round-trip, keep their real content type, and fragment at 2^14', async (t) => {
  for (const suite of TLS12_SUITES) {
    const { seal, open } = pair(suite.id);
    const big = crypto.randomBytes(MAX_PLAINTEXT + 100);
    const wire = seal.seal(ContentType.application_data, big);
    const first = { type: wire[0]!, version: wire.readUInt16BE(1), fragment: wire.subarray(5, 5 + wire.readUInt16BE(3)) };
    const rest = wire.subarray(5 + first.fragment.length);
    const second = { type: rest[0]!, version: 0x0303, fragment: rest.subarray(5) };
    t.equal(first.type, ContentType.application_data);
    t.same(Buffer.concat([open.open(first).content, open.open(second).content]), big, `${suite.name} round trip over two records`);
    const hs = seal.seal(ContentType.handshake, Buffer.from('finished'));
    t.equal(hs[0], ContentType.handshake, 'outer type is the real type');
    t.same(open.open({ type: hs[0]!, version: 0x0303, fragment: hs.subarray(5) }).content.toString(), 'finished');
  }
});

t.test('AES-GCM: the explicit nonce is the sequence number (never random) and the nonce is salt ‖ explicit', async (t) => {
  const { seal, key, iv } = pair(0xc02b);
  for (let seq = 0; seq < 3; seq++) {
    const rec = seal.seal(ContentType.application_data, Buffer.from('x'));
    const explicit = rec.subarray(5, 13);
    t.equal(explicit.readBigUInt64BE(0), BigInt(seq), `record ${seq} carries explicit nonce ${seq}`);
    const aad = Buffer.alloc(13);
    aad.writeBigUInt64BE(BigInt(seq)); aad[8] = 23; aad.writeUInt16BE(0x0303, 9); aad.writeUInt16BE(1, 11);
    const d = crypto.createDecipheriv('aes-128-gcm', key, Buffer.concat([iv, explicit]));
    d.setAAD(aad);
    d.setAuthTag(rec.subarray(rec.length - 16));
    t.equal(Buffer.concat([d.update(rec.subarray(13, 14)), d.final()]).toString(), 'x', 'an independent RFC 5288 decryption agrees');
  }
});

t.test('ChaCha20-Poly1305: no explicit nonce, nonce = IV XOR seq (RFC 7905)', async (t) => {
  const { seal, key, iv } = pair(0xcca9);
  seal.seal(ContentType.application_data, Buffer.from('a'));
  const rec = seal.seal(ContentType.application_data, Buffer.from('b'));
  t.equal(rec.readUInt16BE(3), 1 + 16, 'length = plaintext + tag');
  const nonce = Buffer.from(iv);
  nonce[11]! ^= 1;
  const aad = Buffer.alloc(13);
  aad.writeBigUInt64BE(1n); aad[8] = 23; aad.writeUInt16BE(0x0303, 9); aad.writeUInt16BE(1, 11);
  const d = crypto.createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  d.setAAD(aad, { plaintextLength: 1 });
  d.setAuthTag(rec.subarray(rec.length - 16));
  t.equal(Buffer.concat([d.update(rec.subarray(5, 6)), d.final()]).toString(), 'b');
});

t.test('opening: the AAD binds type and sequence (bad_record_mac); the header must say TLS 1.2', async (t) => {
  const { seal, open } = pair(0xc02f);
  const rec = seal.seal(ContentType.application_data, Buffer.from('hello'));
  const frag = rec.subarray(5);
  t.equal(alertOf(() => open.open({ type: ContentType.handshake, version: 0x0303, fragment: frag })), AlertDescription.bad_record_mac, 'type changed');
  const again = pair(0xc02f);
  const r2 = again.seal.seal(ContentType.application_data, Buffer.from('hello'));
  t.equal(alertOf(() => again.open.open({ type: 23, version: 0x0301, fragment: r2.subarray(5) })), AlertDescription.protocol_version, 'a header version other than TLS 1.2 is refused');
  const p = pair(0xc02f);
  p.seal.seal(ContentType.application_data, Buffer.from('skipped'));
  const r3 = p.seal.seal(ContentType.application_data, Buffer.from('second'));
  t.equal(alertOf(() => p.open.open({ type: 23, version: 0x0303, fragment: r3.subarray(5) })), AlertDescription.bad_record_mac, 'replayed/reordered (sequence)');
  t.equal(alertOf(() => pair(0xc02f).open.open({ type: 23, version: 0x0303, fragment: Buffer.alloc(23) })), AlertDescription.bad_record_mac, 'too short');
  t.equal(alertOf(() => pair(0xc02f).open.open({ type: 23, version: 0x0303, fragment: Buffer.alloc(MAX_PLAINTEXT + 25) })), AlertDescription.record_overflow, 'over 2^14 of plaintext');
  t.equal(alertOf(() => pair(0xc02f).open.open({ type: 20, version: 0x0303, fragment: Buffer.alloc(40) })), AlertDescription.unexpected_message, 'CCS after the key change');
});

t.test('TLS 1.2 tickets: sealed under the tls12 purpose, expired and foreign ones do not open', async (t) => {
  const keys = new TicketKeys();
  const state = { suite: 0xc02b, masterSecret: crypto.randomBytes(48), extendedMasterSecret: true, issuedAtMs: Date.now(), lifetimeS: 60, servername: 'localhost' };
  const ticket = sealTicket12(keys, state);
  t.same(openTicket12(keys, ticket, Date.now()), state);
  const legacy = { ...state, extendedMasterSecret: false };
  t.same(openTicket12(keys, sealTicket12(keys, legacy), Date.now()), legacy, 'a session without EMS says so');
  // Tickets sealed before EMS became optional (format 0x12, no flag) are extended ones.
  const { Writer } = await import('../src/tls/codec.js');
  const w = new Writer(96);
  w.u8(0x12).u16(state.suite).vec8(state.masterSecret);
  w.u32(Math.floor(state.issuedAtMs / 2 ** 32)).u32(state.issuedAtMs % 2 ** 32).u32(60).vec16(Buffer.from('localhost'));
  t.same(openTicket12(keys, keys.seal(Buffer.from(w.finish()), 'tls12'), Date.now()), state, 'an old-format ticket opens as an EMS session');
  t.equal(keys.open(ticket), null, 'not a TLS 1.3 ticket');
  t.equal(openTicket12(keys, keys.seal(Buffer.from('a 1.3 ticket body')), Date.now()), null, 'a TLS 1.3 ticket is not a TLS 1.2 one');
  t.equal(openTicket12(keys, ticket, Date.now() + 61_000), null, 'expired');
  t.equal(openTicket12(new TicketKeys(), ticket, Date.now()), null, 'another server');
  const flipped = Buffer.from(ticket);
  flipped[40]! ^= 1;
  t.equal(openTicket12(keys, flipped, Date.now()), null, 'tampered');
});
