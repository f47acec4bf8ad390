// The TLS 1.3 key schedule, suites and ephemeral keys against RFC 8448 §3 (simple 1-RTT) and
// §4 (resumed 0-RTT) traces, plus the ECDHE share validation RFC 8446 §4.2.8.2 / §7.4 require.
import t from 'tap';
import crypto from 'node:crypto';
import {
  KeySchedule13, Transcript, emptyHash, finishedVerifyData, hkdfExpandLabel, hkdfExtract,
  nextTrafficSecret, resumptionPsk, trafficKeys, deriveSecret,
} from '../src/tls/keyschedule.js';
import { EphemeralKey, NamedGroup, SUPPORTED_GROUPS, TLS13_SUITES, suiteById, groupName } from '../src/tls/suites.js';
import { TlsAlertError, AlertDescription } from '../src/tls/alert.js';

const h = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const hex = (b: Buffer): string => b.toString('hex');
const AES128 = suiteById(0x1301)!;

// RFC 8448 §3 handshake messages (4-byte header included).
const CH = h(`010000c00303cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef
6283024dece7000006130113031302010000910000000b000900000673657276
6572ff01000100000a00140012001d0017001800190100010101020103010400
230000003300260024001d002099381de560e4bd43d23d8e435a7dbafeb3c06e
51c13cae4d5413691e529aaf2c002b0003020304000d0020001e040305030603
020308040805080604010501060102010402050206020202002d00020101001c
00024001`);
const SH = h(`020000560303a6af06a4121860dc5e6e60249cd34c95930c8ac5cb1434dac155
772ed3e2692800130100002e00330024001d0020c9828876112095fe66762bdb
f7c672e156d6cc253b833df1dd69b1b04e751f0f002b00020304`);
const EE = h('080000240022000a00140012001d00170018001901000101010201030104001c0002400100000000');
const CERT = h(`0b0001b9000001b50001b0308201ac30820115a003020102020102300d06092a
864886f70d01010b0500300e310c300a06035504031303727361301e170d3136
303733303031323335395a170d3236303733303031323335395a300e310c300a
0603550403130372736130819f300d06092a864886f70d010101050003818d00
30818902818100b4bb498f8279303d980836399b36c6988c0c68de55e1bdb826
d3901a2461eafd2de49a91d015abbc9a95137ace6c1af19eaa6af98c7ced4312
0998e187a80ee0ccb0524b1b018c3e0b63264d449a6d38e22a5fda4308467480
30530ef0461c8ca9d9efbfae8ea6d1d03e2bd193eff0ab9a8002c47428a6d35a
8d88d79f7f1e3f0203010001a31a301830090603551d1304023000300b060355
1d0f0404030205a0300d06092a864886f70d01010b05000381810085aad2a0e5
b9276b908c65f73a7267170618a54c5f8a7b337d2df7a594365417f2eae8f8a5
8c8f8172f9319cf36b7fd6c55b80f21a03015156726096fd335e5e67f2dbf102
702e608ccae6bec1fc63a42a99be5c3eb7107c3c54e9b9eb2bd5203b1c3b84e0
a8b2f759409ba3eac9d91d402dcc0cc8f8961229ac9187b42b4de10000`);
const CV = h(`0f000084080400805a747c5d88fa9bd2e55ab085a61015b7211f824cd484145a
b3ff52f1fda8477b0b7abc90db78e2d33a5c141a078653fa6bef780c5ea248ee
aaa785c4f394cab6d30bbe8d4859ee511f602957b15411ac027671459e46445c
9ea58c181e818e95b8c3fb0bf3278409d3be152a3da5043e063dda65cdf5aea2
0d53dfacd42f74f3`);
const SFIN = h('140000209b9b141d906337fbd2cbdce71df4deda4ab42c309572cb7fffee5454b78f0718');
const CFIN = h('14000020a8ec436d677634ae525ac1fcebe11a039ec17694fac6e98527b642f2edd5ce61');
const SHARED = h('8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d');
const SERVER_PRIV = h('b1580eeadf6dd589b8ef4f2d5652578cc810e9980191ec8d058308cea216a21e');
const CLIENT_PUB = h('99381de560e4bd43d23d8e435a7dbafeb3c06e51c13cae4d5413691e529aaf2c');

t.test('HKDF-Extract of zero salt and zero IKM is the RFC 8448 early secret', async (t) => {
  t.equal(hex(hkdfExtract('sha256', Buffer.alloc(32), Buffer.alloc(32))), '33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a');
  t.equal(hex(hkdfExtract('sha256', Buffer.alloc(0), Buffer.alloc(32))), '33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a', 'empty salt means HashLen zeros');
});

t.test('Derive-Secret(early, "derived", "") uses the empty-string hash', async (t) => {
  t.equal(hex(emptyHash('sha256')), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  const early = hkdfExtract('sha256', Buffer.alloc(32), Buffer.alloc(32));
  t.equal(hex(deriveSecret('sha256', early, 'derived', emptyHash('sha256'))), '6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba');
});

t.test('the transcript of ClientHello..ServerHello hashes to the RFC 8448 value', async (t) => {
  const tr = new Transcript('sha256');
  tr.update(CH);
  tr.update(SH);
  t.equal(hex(tr.digest()), '860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8');
  t.equal(hex(tr.digest()), '860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8', 'digest() does not finalise');
  tr.update(EE);
  t.not(hex(tr.digest()), '860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8', 'still accepts messages');
});

t.test('the final transcript hash (finish) is the running one, counts messages, and closes the transcript', async (t) => {
  const tr = new Transcript('sha256');
  t.equal(tr.appended, 0);
  tr.update(CH);
  tr.update(SH);
  t.equal(tr.appended, 2, 'two messages');
  t.equal(hex(tr.finish()), '860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8');
  t.throws(() => tr.digest(), /after finish/);
  t.throws(() => tr.update(EE), /after finish/);
  t.throws(() => tr.finish(), /twice/);
});

t.test('a full 1-RTT key schedule reproduces every RFC 8448 §3 secret, key and Finished', async (t) => {
  const tr = new Transcript('sha256');
  const ks = new KeySchedule13(AES128);
  tr.update(CH); tr.update(SH);
  const hs = ks.handshakeSecrets(SHARED, tr.digest());
  t.equal(hex(hs.client), 'b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21');
  t.equal(hex(hs.server), 'b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38');
  const sk = trafficKeys(AES128, hs.server);
  t.equal(hex(sk.key), '3fce516009c21727d0f2e4e86ee403bc');
  t.equal(hex(sk.iv), '5d313eb2671276ee13000b30');
  const ck = trafficKeys(AES128, hs.client);
  t.equal(hex(ck.key), 'dbfaa693d1762c5b666af5d950258d01');
  t.equal(hex(ck.iv), '5bd3c71b836e0b76bb73265f');

  tr.update(EE); tr.update(CERT); tr.update(CV);
  t.equal(hex(finishedVerifyData('sha256', hs.server, tr.digest())), hex(SFIN.subarray(4)), 'server Finished');
  tr.update(SFIN);
  t.equal(hex(finishedVerifyData('sha256', hs.client, tr.digest())), hex(CFIN.subarray(4)), 'client Finished');

  const ap = ks.applicationSecrets(tr.digest());
  t.equal(hex(ap.client), '9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5');
  t.equal(hex(ap.server), 'a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643');
  t.equal(hex(ap.exporter), 'fe22f881176eda18eb8f44529e6792c50c9a3f89452f68d8ae311b4309d3cf50');
  t.equal(hex(trafficKeys(AES128, ap.server).key), '9f02283b6c9c07efc26bb9f2ac92e356');
  t.equal(hex(trafficKeys(AES128, ap.server).iv), 'cf782b88dd83549aadf1e984');
  t.equal(hex(trafficKeys(AES128, ap.client).key), '17422dda596ed5d9acd890e3c63f5051');
  t.equal(hex(trafficKeys(AES128, ap.client).iv), '5b78923dee08579033e523d9');

  tr.update(CFIN);
  const rms = ks.resumptionMasterSecret(tr.digest());
  t.equal(hex(rms), '7df235f2031d2a051287d02b0241b0bfdaf86cc856231f2d5aba46c434ec196c');
  t.equal(hex(resumptionPsk('sha256', rms, Buffer.of(0, 0))), '4ecd0eb6ec3b4d87f5d6028f922ca4c5851a277fd41311c9e62d2c9492e1c4f3');
});

t.test('a resumed handshake reproduces the RFC 8448 §4 binder and handshake secrets', async (t) => {
  const psk = h('4ecd0eb6ec3b4d87f5d6028f922ca4c5851a277fd41311c9e62d2c9492e1c4f3');
  const ks = new KeySchedule13(AES128, psk);
  const binderKey = ks.binderKey('res');
  t.equal(hex(binderKey), '69fe131a3bbad5d63c64eebcc30e395b9d8107726a13d074e389dbc8a4e47256');
  t.equal(hex(hkdfExpandLabel('sha256', binderKey, 'finished', Buffer.alloc(0), 32)), '5588673e72cb59c87d220caffe94f2dea9a3b1609f7d50e90a48227db9ed7eaa');
  const binderHash = h('63224b2e4573f2d3454ca84b9d009a04f6be9e05711a8396473aefa01e924a14');
  t.equal(hex(finishedVerifyData('sha256', binderKey, binderHash)), '3add4fb2d8fdf822a0ca3cf7678ef5e88dae990141c5924d57bb6fa31b9e5f9d');
  t.not(hex(ks.binderKey('ext')), hex(binderKey), 'external binders use a different label');
  const hs = ks.handshakeSecrets(h('f44194756ff9ec9d25180635d66ea6824c6ab3bf179977be37f723570e7ccb2e'), h('f736cb34fe25e701551bee6fd24c1cc7102a7daf9405cb15d97aafe16f757d03'));
  t.equal(hex(hs.client), '2faac08f851d35fea3604fcb4de82dc62c9b164a70974d0462e27f1ab278700f');
  t.equal(hex(hs.server), 'fe927ae271312e8bf0275b581c54eef020450dc4ecffaa05a1a35d27518e7803');
});

t.test('stages out of order are refused', async (t) => {
  const ks = new KeySchedule13(AES128);
  t.throws(() => ks.applicationSecrets(Buffer.alloc(32)));
  t.throws(() => ks.resumptionMasterSecret(Buffer.alloc(32)));
});

t.test('KeyUpdate derives a different secret of the same length with "traffic upd"', async (t) => {
  const s = h('a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643');
  const n = nextTrafficSecret('sha256', s);
  t.equal(n.length, 32);
  t.equal(hex(n), hex(hkdfExpandLabel('sha256', s, 'traffic upd', Buffer.alloc(0), 32)));
  t.not(hex(n), hex(s));
});

t.test('SHA-384 suites produce 48-byte secrets and 32-byte keys', async (t) => {
  const s = suiteById(0x1302)!;
  const ks = new KeySchedule13(s);
  const hs = ks.handshakeSecrets(Buffer.alloc(32, 1), crypto.createHash('sha384').update('x').digest());
  t.equal(hs.client.length, 48);
  const k = trafficKeys(s, hs.server);
  t.equal(k.key.length, 32);
  t.equal(k.iv.length, 12);
  t.equal(emptyHash('sha384').length, 48);
});

t.test('after HelloRetryRequest the transcript starts with message_hash(Hash(CH1))', async (t) => {
  const tr = new Transcript('sha256');
  tr.update(CH);
  tr.replaceWithMessageHash();
  tr.update(SH);
  const ch1Hash = crypto.createHash('sha256').update(CH).digest();
  const expected = crypto.createHash('sha256').update(Buffer.of(0xfe, 0, 0, 32)).update(ch1Hash).update(SH).digest();
  t.equal(hex(tr.digest()), hex(expected));
});

t.test('suites are listed in server preference order and looked up by id', async (t) => {
  t.same(TLS13_SUITES.map((s) => s.name), ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']);
  t.equal(suiteById(0x1303)?.aead, 'chacha20-poly1305');
  t.equal(suiteById(0x1304), undefined, 'CCM is not offered');
  t.same(SUPPORTED_GROUPS, [0x001d, 0x0017, 0x001e, 0x0018, 0x0019]);
  t.equal(groupName(0x0017), 'secp256r1');
  t.equal(groupName(0x001a), '');
});

// ---- ephemeral keys ----

function alertOf(fn: () => unknown): number | undefined {
  try { fn(); } catch (e) { return e instanceof TlsAlertError ? e.alert : -1; }
  return undefined;
}

const PEER_CURVE: Record<number, string> = { [NamedGroup.secp256r1]: 'prime256v1', [NamedGroup.secp384r1]: 'secp384r1', [NamedGroup.secp521r1]: 'secp521r1' };

for (const group of SUPPORTED_GROUPS) {
  t.test(`${groupName(group)}: both sides derive the same secret from each other's wire shares`, async (t) => {
    const ours = EphemeralKey.generate(group);
    const pub = ours.publicBytes();
    let peerPub: Buffer; let peerShared: Buffer;
    if (group === NamedGroup.x25519 || group === NamedGroup.x448) {
      const x = group === NamedGroup.x25519;
      t.equal(pub.length, x ? 32 : 56);
      const peer = x ? crypto.generateKeyPairSync('x25519') : crypto.generateKeyPairSync('x448');
      peerPub = peer.publicKey.export({ format: 'der', type: 'spki' }).subarray(x ? -32 : -56);
      const spki = x ? '302a300506032b656e032100' : '3042300506032b656f033900';
      const ourKey = crypto.createPublicKey({ key: Buffer.concat([h(spki), pub]), format: 'der', type: 'spki' });
      peerShared = crypto.diffieHellman({ privateKey: peer.privateKey, publicKey: ourKey });
    } else {
      const ecdh = crypto.createECDH(PEER_CURVE[group]!);
      peerPub = ecdh.generateKeys();
      t.equal(pub[0], 0x04);
      t.equal(pub.length, peerPub.length);
      peerShared = ecdh.computeSecret(pub);
    }
    t.equal(hex(ours.deriveShared(peerPub)), hex(peerShared));
  });

  t.test(`${groupName(group)}: keys from the pool (made on the thread pool) derive the peer's secret too`, async (t) => {
    EphemeralKey.prewarm([group]);
    for (let i = 0; i < 500 && EphemeralKey.pooled(group) === 0; i++) await new Promise((r) => setTimeout(r, 10));
    t.ok(EphemeralKey.pooled(group) > 0, 'the pool has keys');
    const before = EphemeralKey.pooled(group);
    const ours = EphemeralKey.generate(group);
    t.ok(EphemeralKey.pooled(group) < before, 'the key came from the pool');
    const pub = ours.publicBytes();
    if (group === NamedGroup.x25519 || group === NamedGroup.x448) {
      const x = group === NamedGroup.x25519;
      const peer = x ? crypto.generateKeyPairSync('x25519') : crypto.generateKeyPairSync('x448');
      const peerPub = peer.publicKey.export({ format: 'der', type: 'spki' }).subarray(x ? -32 : -56);
      const spki = x ? '302a300506032b656e032100' : '3042300506032b656f033900';
      const ourKey = crypto.createPublicKey({ key: Buffer.concat([h(spki), pub]), format: 'der', type: 'spki' });
      t.equal(hex(ours.deriveShared(peerPub)), hex(crypto.diffieHellman({ privateKey: peer.privateKey, publicKey: ourKey })));
    } else {
      const ecdh = crypto.createECDH(PEER_CURVE[group]!);
      const peerPub = ecdh.generateKeys();
      t.equal(hex(ours.deriveShared(peerPub)), hex(ecdh.computeSecret(pub)));
    }
  });

  t.test(`${groupName(group)}: every handshake gets a fresh key, used once`, async (t) => {
    const a = EphemeralKey.generate(group); const b = EphemeralKey.generate(group);
    t.not(hex(a.publicBytes()), hex(b.publicBytes()));
    a.deriveShared(b.publicBytes());
    t.equal(alertOf(() => a.deriveShared(b.publicBytes())), AlertDescription.internal_error, 'a second use is refused');
  });

  t.test(`${groupName(group)}: a share of the wrong length is illegal_parameter`, async (t) => {
    const len = EphemeralKey.generate(group).publicBytes().length;
    for (const n of [0, 1, len - 1, len + 1]) t.equal(alertOf(() => EphemeralKey.generate(group).deriveShared(Buffer.alloc(n, 4))), AlertDescription.illegal_parameter, `${n} bytes`);
  });
}

t.test('NIST shares must be uncompressed (0x04 prefix)', async (t) => {
  const good = EphemeralKey.generate(NamedGroup.secp256r1).publicBytes();
  for (const prefix of [0x02, 0x03, 0x00, 0x05]) {
    const bad = Buffer.from(good); bad[0] = prefix;
    t.equal(alertOf(() => EphemeralKey.generate(NamedGroup.secp256r1).deriveShared(bad)), AlertDescription.illegal_parameter, `prefix 0x0${prefix}`);
  }
});

t.test('an off-curve point is illegal_parameter, never a node:crypto exception', async (t) => {
  for (const group of [NamedGroup.secp256r1, NamedGroup.secp384r1]) {
    const good = EphemeralKey.generate(group).publicBytes();
    const bad = Buffer.from(good); bad[bad.length - 1]! ^= 1; // flips Y: (X, Y') is not on the curve
    t.equal(alertOf(() => EphemeralKey.generate(group).deriveShared(bad)), AlertDescription.illegal_parameter, groupName(group));
    const zero = Buffer.alloc(good.length); zero[0] = 4;
    t.equal(alertOf(() => EphemeralKey.generate(group).deriveShared(zero)), AlertDescription.illegal_parameter, `${groupName(group)} (0,0)`);
  }
});

// OpenSSL 3 already refuses an all-zero X25519 output; suites.ts checks it too, so the rule holds
// whatever the crypto build (RFC 8446 §7.4.2).
t.test('an x25519 low-order point (all-zero shared secret) is refused', async (t) => {
  // u = 0 and u = 1 are small-order points: X25519 with them is all zeros.
  t.equal(alertOf(() => EphemeralKey.generate(NamedGroup.x25519).deriveShared(Buffer.alloc(32))), AlertDescription.illegal_parameter, 'u = 0');
  const one = Buffer.alloc(32); one[0] = 1;
  t.equal(alertOf(() => EphemeralKey.generate(NamedGroup.x25519).deriveShared(one)), AlertDescription.illegal_parameter, 'u = 1');
  // A point of order 8 (from the list in RFC 7748 implementations' test suites).
  const order8 = h('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800');
  t.equal(alertOf(() => EphemeralKey.generate(NamedGroup.x25519).deriveShared(order8)), AlertDescription.illegal_parameter, 'order-8 point');
});

t.test('an unknown group is refused', async (t) => {
  t.equal(alertOf(() => EphemeralKey.generate(0x001a)), AlertDescription.illegal_parameter);
});

t.test('the RFC 8448 x25519 keys agree on the trace shared secret', async (t) => {
  const serverPriv = crypto.createPrivateKey({ key: Buffer.concat([h('302e020100300506032b656e04220420'), SERVER_PRIV]), format: 'der', type: 'pkcs8' });
  const clientPub = crypto.createPublicKey({ key: Buffer.concat([h('302a300506032b656e032100'), CLIENT_PUB]), format: 'der', type: 'spki' });
  t.equal(hex(crypto.diffieHellman({ privateKey: serverPriv, publicKey: clientPub })), hex(SHARED));
});

t.test('HKDF-Expand-Label agrees with node:crypto HKDF for outputs shorter and longer than one block', async (t) => {
  const ikm = Buffer.from('input keying material'); const salt = Buffer.from('salt');
  const ctx = Buffer.from('context');
  for (const [hash, len] of [['sha256', 12], ['sha256', 32], ['sha256', 80], ['sha384', 48], ['sha384', 100]] as const) {
    const prk = hkdfExtract(hash, salt, ikm);
    const info = Buffer.concat([Buffer.from([len >> 8, len & 0xff, 6 + 4]), Buffer.from('tls13 test'), Buffer.from([ctx.length]), ctx]);
    const expected = Buffer.from(crypto.hkdfSync(hash, ikm, salt, info, len));
    t.equal(hex(hkdfExpandLabel(hash, prk, 'test', ctx, len)), hex(expected), `${hash}, ${len} bytes`);
  }
});

t.test('prewarming fills the key pools without blocking, and pooled keys are still single-use and distinct', async (t) => {
  EphemeralKey.prewarm();
  await new Promise((r) => setTimeout(r, 200)); // let the thread pool deliver some keys
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) seen.add(EphemeralKey.generate(NamedGroup.x25519).publicBytes().toString('hex'));
  t.equal(seen.size, 200, 'no key handed out twice');
});
