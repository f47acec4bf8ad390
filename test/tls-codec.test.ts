// The byte codec and message codecs: round trips, back-patched lengths, and rejection of
// truncated input and trailing data (TLS.md 13); handshake message reassembly (TLS.md 9-10).
import t from 'tap';
import { AlertDescription, TlsAlertError } from '../src/tls/alert.js';
import { Reader, Writer } from '../src/tls/codec.js';
import { ExtensionType } from '../src/tls/extensions.js';
import { HandshakeJoiner } from '../src/tls/joiner.js';
import {
  HRR_RANDOM, decodeClientHello, decodeKeyUpdate, encodeCertificate, encodeEncryptedExtensions, encodeKeyUpdate,
  encodeNewSessionTicket, encodeServerHello, messageHash,
} from '../src/tls/messages.js';
import { encodeClientHello, ext } from './helpers/tls13-client.js';

const alertOf = (f: () => unknown): number => {
  try { f(); } catch (e) { return e instanceof TlsAlertError ? e.alert : -1; }
  return -2;
};

t.test('Writer back-patches nested u8/u16/u24 length prefixes', async (t) => {
  const w = new Writer(2);
  w.u8(1).lengthPrefixed(3, (a) => a.u16(0xabcd).lengthPrefixed(2, (b) => b.vec8(Buffer.from('hi'))));
  t.same([...w.finish()], [1, 0, 0, 7, 0xab, 0xcd, 0, 3, 2, 0x68, 0x69]);
});

t.test('Writer refuses a body longer than its length prefix can say', async (t) => {
  t.throws(() => new Writer().vec8(Buffer.alloc(256)), RangeError);
});

t.test('Reader reads back what Writer wrote and checks the end', async (t) => {
  const w = new Writer().u8(7).u16(513).u24(70000).u32(0xdeadbeef).vec16(Buffer.from('abc'));
  const r = new Reader(w.finish());
  t.same([r.u8(), r.u16(), r.u24(), r.u32(), r.vec16().toString()], [7, 513, 70000, 0xdeadbeef, 'abc']);
  t.doesNotThrow(() => r.expectEnd());
});

t.test('Reader: truncation and trailing data are decode_error', async (t) => {
  t.equal(alertOf(() => new Reader(Buffer.from([0, 5, 1, 2])).vec16()), AlertDescription.decode_error, 'vector longer than input');
  t.equal(alertOf(() => new Reader(Buffer.from([1])).u16()), AlertDescription.decode_error, 'short integer');
  t.equal(alertOf(() => new Reader(Buffer.from([1, 2])).expectEnd()), AlertDescription.decode_error, 'leftover bytes');
  const outer = new Reader(Buffer.from([0, 2, 9, 9, 7]));
  const sub = outer.sub(2);
  t.equal(sub.remaining, 2, 'sub-reader bounded by its prefix');
  t.equal(alertOf(() => sub.u24()), AlertDescription.decode_error, 'a sub-reader cannot read past its bound');
  t.equal(outer.u8(), 7, 'parent continues after the sub-vector');
});

t.test('ClientHello round trip keeps every offered extension', async (t) => {
  const raw = encodeClientHello({
    sessionId: Buffer.alloc(32, 1), suites: [0x1301, 0x1303],
    extensions: [ext.versions([0x0304, 0x0303]), ext.groups([0x1d, 0x17]), ext.sigAlgs([0x0804]), ext.keyShares([{ group: 0x1d, key: Buffer.alloc(32, 2) }]), ext.sni('Example.COM'), ext.alpn(['h2', 'http/1.1']), ext.pskModes([1]), ext.earlyData(), [0xfafa, Buffer.from([1, 2])]],
  });
  const ch = decodeClientHello(raw);
  t.same(ch.cipherSuites, [0x1301, 0x1303]);
  t.same(ch.sessionId, Buffer.alloc(32, 1));
  t.same(ch.ext.supportedVersions, [0x0304, 0x0303]);
  t.same(ch.ext.supportedGroups, [0x1d, 0x17]);
  t.same(ch.ext.signatureAlgorithms, [0x0804]);
  t.same(ch.ext.keyShares, [{ group: 0x1d, key: Buffer.alloc(32, 2) }]);
  t.equal(ch.ext.serverName, 'example.com', 'SNI lower-cased');
  t.same(ch.ext.alpn, ['h2', 'http/1.1']);
  t.same(ch.ext.pskModes, [1]);
  t.equal(ch.ext.earlyData, true);
  t.ok(ch.ext.raw.has(0xfafa), 'unknown (GREASE) extension kept raw and otherwise ignored');
});

t.test('ClientHello decoding rejects malformed vectors', async (t) => {
  const cases: Array<[string, Buffer, keyof typeof AlertDescription]> = [
    ['empty cipher_suites', encodeClientHello({ suites: [] }), 'decode_error'],
    ['odd-length supported_groups', encodeClientHello({ extensions: [[ExtensionType.supported_groups, Buffer.from([0, 3, 0, 0x1d, 0])]] }), 'decode_error'],
    ['empty signature_algorithms', encodeClientHello({ extensions: [ext.sigAlgs([])] }), 'decode_error'],
    ['trailing byte inside server_name', encodeClientHello({ extensions: [[ExtensionType.server_name, Buffer.concat([ext.sni('a.example')[1], Buffer.from([0])])]] }), 'decode_error'],
    ['two host_names', encodeClientHello({ extensions: [[ExtensionType.server_name, Buffer.from([0, 8, 0, 0, 1, 0x61, 0, 0, 1, 0x62])]] }), 'illegal_parameter'],
    ['empty key_exchange', encodeClientHello({ extensions: [ext.keyShares([{ group: 0x1d, key: Buffer.alloc(0) }])] }), 'decode_error'],
    ['PSK binder count differs from identities', encodeClientHello({ extensions: [ext.pskModes(), ext.psk([{ identity: Buffer.from('a'), age: 1 }], [Buffer.alloc(32), Buffer.alloc(32)])] }), 'illegal_parameter'],
    ['early_data with a body', encodeClientHello({ extensions: [[ExtensionType.early_data, Buffer.from([0])]] }), 'decode_error'],
  ];
  for (const [name, raw, alert] of cases) t.equal(alertOf(() => decodeClientHello(raw)), AlertDescription[alert], name);
});

t.test('ClientHello PSK binders offset points at the binders list', async (t) => {
  const raw = encodeClientHello({ extensions: [ext.pskModes(), ext.psk([{ identity: Buffer.from('ticket'), age: 5 }], [Buffer.alloc(32, 9)])] });
  const ch = decodeClientHello(raw);
  t.equal(ch.ext.preSharedKey!.bindersStart, raw.length - 35);
  t.same(ch.ext.preSharedKey!.identities[0], { identity: Buffer.from('ticket'), obfuscatedAge: 5 });
});

t.test('ServerHello and HelloRetryRequest encodings', async (t) => {
  const sh = encodeServerHello({ random: Buffer.alloc(32, 3), sessionId: Buffer.alloc(4, 4), suite: 0x1302, keyShare: { group: 0x1d, key: Buffer.alloc(32, 5) }, selectedIdentity: 0 });
  const r = new Reader(sh);
  t.equal(r.u8(), 2);
  const b = r.sub(3);
  r.expectEnd();
  t.equal(b.u16(), 0x0303, 'legacy_version');
  t.same(b.bytes(32), Buffer.alloc(32, 3));
  t.same(b.vec8(), Buffer.alloc(4, 4), 'session id echoed');
  t.equal(b.u16(), 0x1302);
  t.equal(b.u8(), 0, 'null compression');
  const exts = b.sub(2);
  b.expectEnd();
  const seen: number[] = [];
  while (exts.remaining) { seen.push(exts.u16()); exts.vec16(); }
  t.same(seen, [ExtensionType.supported_versions, ExtensionType.key_share, ExtensionType.pre_shared_key]);
  const hrr = encodeServerHello({ random: HRR_RANDOM, sessionId: Buffer.alloc(0), suite: 0x1301, selectedGroup: 0x17 });
  t.equal(hrr.subarray(-6).toString('hex'), '003300020017', 'HRR key_share carries only selected_group');
});

t.test('EncryptedExtensions, Certificate, NewSessionTicket and KeyUpdate encodings', async (t) => {
  t.equal(encodeEncryptedExtensions({ ackServerName: false }).toString('hex'), '080000020000');
  t.equal(encodeEncryptedExtensions({ ackServerName: true, alpn: 'h2' }).toString('hex'), '0800000f000d' + '00000000' + '001000050003026832');
  t.equal(encodeCertificate([Buffer.from([1, 2])]).toString('hex'), '0b00000b' + '00' + '000007' + '000002' + '0102' + '0000');
  t.equal(encodeNewSessionTicket({ lifetime: 60, ageAdd: 1, nonce: Buffer.from([0]), ticket: Buffer.from([7]) }).toString('hex'), '0400000f' + '0000003c' + '00000001' + '0100' + '000107' + '0000');
  t.equal(encodeKeyUpdate(true).toString('hex'), '1800000101');
  t.equal(decodeKeyUpdate(Buffer.from([0])), false);
  t.equal(alertOf(() => decodeKeyUpdate(Buffer.from([0, 0]))), AlertDescription.decode_error, 'trailing byte');
  t.equal(alertOf(() => decodeKeyUpdate(Buffer.from([3]))), AlertDescription.illegal_parameter);
  t.equal(messageHash(Buffer.alloc(32, 1)).subarray(0, 4).toString('hex'), 'fe000020', 'message_hash header');
});

t.test('HandshakeJoiner reassembles split messages and splits coalesced ones', async (t) => {
  const j = new HandshakeJoiner();
  const m1 = Buffer.from([20, 0, 0, 3, 1, 2, 3]);
  const m2 = Buffer.from([24, 0, 0, 1, 0]);
  const all = Buffer.concat([m1, m2]);
  for (const byte of all.subarray(0, 6)) { j.push(Buffer.from([byte])); t.equal(j.next(), null); }
  j.push(all.subarray(6));
  const a = j.next()!;
  t.same([a.type, [...a.body]], [20, [1, 2, 3]]);
  const b = j.next()!;
  t.same([b.type, [...b.raw]], [24, [...m2]]);
  t.equal(j.next(), null);
  t.equal(j.pending, false);
});

t.test('HandshakeJoiner refuses an oversized message from its header alone', async (t) => {
  const j = new HandshakeJoiner(1024);
  t.equal(alertOf(() => j.push(Buffer.from([1, 0, 4, 1]))), AlertDescription.illegal_parameter, 'illegal_parameter, as OpenSSL and BoringSSL send');
});
