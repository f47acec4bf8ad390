// RFC 8448 §5 (HelloRetryRequest trace) as golden vectors: the message_hash transcript
// (RFC 8446 §4.4.1), the schedule over it, the server flight record and its Finished, and the
// ClientHello decoder and "otherwise identical" check on the trace's two hellos (TLS.md 24).
import t from 'tap';
import crypto from 'node:crypto';
import { TlsAlertError } from '../src/tls/alert.js';
import { checkRetryHello } from '../src/tls/hello13.js';
import { KeySchedule13, Transcript, finishedVerifyData, trafficKeys } from '../src/tls/keyschedule.js';
import { HRR_RANDOM, decodeClientHello } from '../src/tls/messages.js';
import { RecordOpener } from '../src/tls/record.js';
import { NamedGroup, suiteById } from '../src/tls/suites.js';

const h = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const hex = (b: Buffer): string => b.toString('hex');
const AES128 = suiteById(0x1301)!;

// RFC 8448 §5 values, transcribed from the RFC text (4-byte handshake headers included).
const CH1 = h(`010000b00303b0b1c5a5aa37c5919f2ed1d5c6fff7fcb7849716945a2b8cee92
58a346677b6f000006130113031302010000810000000b000900000673657276
6572ff01000100000a00080006001d00170018003300260024001d0020e8e8e3
f3b93a25ed97a14a7dcacb8a272c6288e585c6484d05262fcad062ad1f002b00
03020304000d0020001e04030503060302030804080508060401050106010201
0402050206020202002d00020101001c00024001`);
const HRR = h(`020000ac0303cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e
09e2c8a8339c001301000084003300020017002c0074007271dcd04bb88bc318
9119398a00000000eefafc76c146b823b096f8aacad365dd0030953f4edf6256
36e5f21bb2e23fcc654b1b5b40318d10d137abcbb87574e36e8a1f025f7dfa5d
6e50781b5eda4aa15b0c8be778257d16aa3030e9e7841dd9e4c0342267e8ca0c
af571fb2b7cff0f934b0002b00020304`);
const CH2 = h(`010001fc0303b0b1c5a5aa37c5919f2ed1d5c6fff7fcb7849716945a2b8cee92
58a346677b6f000006130113031302010001cd0000000b000900000673657276
6572ff01000100000a00080006001d001700180033004700450017004104a6da
7392ec591e17abfd535964b99894d13befb221b3def2ebe3830eac8f01518126
77c4d6d2237e85cf01d6910cfb83954e76ba7352830534159897e8065780002b
0003020304000d0020001e040305030603020308040805080604010501060102
010402050206020202002c0074007271dcd04bb88bc3189119398a00000000ee
fafc76c146b823b096f8aacad365dd0030953f4edf625636e5f21bb2e23fcc65
4b1b5b40318d10d137abcbb87574e36e8a1f025f7dfa5d6e50781b5eda4aa15b
0c8be778257d16aa3030e9e7841dd9e4c0342267e8ca0caf571fb2b7cff0f934
b0002d00020101001c00024001001500af${'00'.repeat(175)}`);
const SH = h(`020000770303bb341d847fd789c47c387172dc0c9bf147fccacb5043d86ca4c5
98d3ff571b9800130100004f003300450017004104583e054b7a66672ae020ad
9d2686fcc85b5ad41a134a0f03ee72b893052bd85b4c8de6776f5b04ac07d835
40eab3e3d9c547bc6528c4317d294686093a6cad7d002b00020304`);
const CLIENT_P256_PUB = h(`04a6da7392ec591e17abfd535964b99894d13befb221b3def2ebe3830eac8f01
51812677c4d6d2237e85cf01d6910cfb83954e76ba7352830534159897e8065780`);
const SERVER_P256_PRIV = h('8c510601f9765bfb8ed693449a48989859b5cfa879cb9f5443c41c5ff10634ed');
const SHARED = h('c142ce13ca11b5c2233652e63ad3d97844f1621fbfb9de69d547dc8fedeabeb4');
const HELLO_HASH = h('8aa8e828ec2f8a884fec95a3139de01c15a3daa7ff5bfc3f4bfcc21b438d7bf8');
const C_HS = h('158aa7ab8855073582b41d674b4055cabcc534728f659314861b4e08e2011566');
const S_HS = h('3403e781e2af7b6508da28574f6e95a1abf162de83a97927c37672a4a0cef8a1');
const S_HS_KEY = h('4646bfac1712c426cd78d8a24a8a6f6b');
const S_HS_IV = h('c7d395c08d62f297d13768ea');
const FLIGHT_RECORD = h(`170303029699bee20baf5b7fc727bfab6223928a381e6d0cf9c4da653f9d2a7b
23f7de11cce842d5cf75631763450ffb8b0cc1d238e658af7a12adc86243114a
b14a1da2fae42621ce483fb6242eabfaad52566b02b31d2eddedefeb80e66a99
00d5f973b40c4fdf74719ecf1b68d7f9c3b6ceb903ca13dd1bb8f8187ae33417
e1d152522c5822a1a03ad52c838c55953d610222874cce8e1790b229a2aa0b53
c8d377ee720182951dc6181dc5d90bd1f0105ed1e84aa5f75957c6661897079e
5ea5007449e3197bdc7c9beeedddeafdd844afa5c315ecfe65e576afe9098128
80620ec7048b42d7f5c78d76f299d6d82534bdd8f512febc0ed3814aca470cd8
000d3e1cb9962b052fbb950df683a52c2ba77ed3713b122937a6e5170964e2ab
7969dcd980b3db9b458da7603124d6dc005e4d6e04b4d0c4baf3275db827dbba
0a6db09672171fc057b3851d7e026841e2978fbd2346bbefdd0376bb1108fe9a
cc92189f5650aa5e85d8e8c7b67ac510dba003d3d7e16350bb66d45013efd44c
9b607c0d318c4c7d1a1f5cbc57e20611804e3787d7b4a4b5f08ed8fd70bdaead
e02260b12ab842ef690b4a3ee7911e841b374ecd5ebbbc2a54d047b600336dd7
d0c88b4bc10e58ee6cb656de7247fa20d8e91deb84628608cf80615b62e96c14
91c7ac3755eb6901405d3474fe1ac79d106a0cee56c2577fc88480f96cb6b8c6
81b7b68b53c146093908f350888175bdfb0b1e31ad61e30ba0adfe6d223aa03c
0783b5001a57587c328a9afcfcfb978d1cd4328f7d9d60530e630befd96c0c81
6ee20b0100768ae2a6df51fc68f172740a79af11398ee3be1252491fa9c69347
9e877f94ab7c5f8cad480203e6ab7b87dd71e8a0729113df17f5eee86ce108d1
d72007ec1cd13c85a6c149621e77b7d78d805a30f0be030c315e54`);
const FINISHED_HASH = h('50f63cbf36b0dd049e7a0ba27d6455745ea2aaac54bb167f9950b2b7ce9509da');
const C_AP = h('75ecf4b972525aa0dcd057c9944d4cd5d82671d8843141d7dc2a4ff15a21dc51');
const S_AP = h('5c74f87df04225db0f8209c9de6429e49435fdefa7cad61864874d12f31cfc8d');
const EXPORTER = h('7c06d3ae106a3a374ace4837b3985cac67780a6e2c5c04b58319d584df09d223');

t.test('the transcribed vectors have the lengths the RFC prints', async (t) => {
  t.same([CH1.length, HRR.length, CH2.length, SH.length, FLIGHT_RECORD.length], [180, 176, 512, 123, 667]);
});

/** CH1 collapsed to message_hash, then HRR, CH2 and SH (RFC 8446 §4.4.1). */
function helloTranscript(): Transcript {
  const tr = new Transcript('sha256');
  tr.update(CH1);
  tr.replaceWithMessageHash();
  tr.update(HRR);
  tr.update(CH2);
  tr.update(SH);
  return tr;
}

t.test('message_hash(CH1) ‖ HRR ‖ CH2 ‖ SH hashes to the trace value', async (t) => {
  t.equal(hex(helloTranscript().digest()), hex(HELLO_HASH));
});

t.test('the P-256 shared secret, handshake secrets and keys match the trace', async (t) => {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.setPrivateKey(SERVER_P256_PRIV);
  t.equal(hex(ecdh.computeSecret(CLIENT_P256_PUB)), hex(SHARED));
  const hs = new KeySchedule13(AES128).handshakeSecrets(SHARED, HELLO_HASH);
  t.equal(hex(hs.client), hex(C_HS));
  t.equal(hex(hs.server), hex(S_HS));
  const k = trafficKeys(AES128, hs.server);
  t.equal(hex(k.key), hex(S_HS_KEY));
  t.equal(hex(k.iv), hex(S_HS_IV));
});

t.test('the server flight opens, its Finished verifies, and the application secrets match', async (t) => {
  const opener = new RecordOpener(AES128, S_HS_KEY, S_HS_IV);
  const inner = opener.open({ type: FLIGHT_RECORD[0]!, version: FLIGHT_RECORD.readUInt16BE(1), fragment: FLIGHT_RECORD.subarray(5) });
  t.equal(inner.type, 22, 'handshake');
  t.equal(inner.content.length, 645);
  const tr = helloTranscript();
  const msgs: Buffer[] = [];
  for (let at = 0; at < inner.content.length;) {
    const len = 4 + inner.content.readUIntBE(at + 1, 3);
    msgs.push(inner.content.subarray(at, at + len));
    at += len;
  }
  t.same(msgs.map((m) => m[0]), [8, 11, 15, 20], 'EE, Certificate, CertificateVerify, Finished');
  for (const m of msgs.slice(0, 3)) tr.update(m);
  t.equal(hex(msgs[3]!.subarray(4)), hex(finishedVerifyData('sha256', S_HS, tr.digest())), 'server Finished over the HRR transcript');
  tr.update(msgs[3]!);
  t.equal(hex(tr.digest()), hex(FINISHED_HASH));
  const ks = new KeySchedule13(AES128);
  ks.handshakeSecrets(SHARED, HELLO_HASH);
  const app = ks.applicationSecrets(FINISHED_HASH);
  t.equal(hex(app.client), hex(C_AP));
  t.equal(hex(app.server), hex(S_AP));
  t.equal(hex(app.exporter), hex(EXPORTER));
});

t.test('the trace hellos decode, and CH2 answers the HRR (P-256) except for the cookie we never send', async (t) => {
  const ch1 = decodeClientHello(CH1);
  const ch2 = decodeClientHello(CH2);
  t.same(HRR.subarray(6, 38), HRR_RANDOM, 'the trace HRR carries the RFC random');
  t.same(ch2.ext.keyShares!.map((k) => k.group), [NamedGroup.secp256r1]);
  // The trace's HRR sent a cookie, which CH2 echoes; our HRR never does, so we refuse the change.
  let err: unknown;
  try { checkRetryHello(ch1, ch2, NamedGroup.secp256r1); } catch (e) { err = e; }
  t.ok(err instanceof TlsAlertError && err.alert === 47 && /added extension 44/.test(err.message), String(err));
  // Without the cookie (and with the trace's new padding), CH2 is an acceptable retry.
  ch2.ext.raw.delete(44);
  t.doesNotThrow(() => checkRetryHello(ch1, ch2, NamedGroup.secp256r1));
});
