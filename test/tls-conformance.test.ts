// Conformance probes for the TLS 1.3 server, in the style of tlsfuzzer / BoGo: exact bytes fed
// to a sans-IO ServerConnection, each test asserting the exact alert RFC 8446 §6 names (or the
// exact behaviour). Covers the gaps found auditing the server against issue 5 and TLS.md.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { AlertDescription, TlsAlertError, type AlertName } from '../src/tls/alert.js';
import { prepareCertEntry } from '../src/tls/certselect.js';
import { ServerConnection, type ConnectionEvent } from '../src/tls/connection.js';
import { ExtensionType } from '../src/tls/extensions.js';
import type { HandshakeConfig } from '../src/tls/handshake13.js';
import type { ServerHandshakeConfig } from '../src/tls/hello12.js';
import { HRR_RANDOM } from '../src/tls/messages.js';
import { ContentType, plaintextRecords } from '../src/tls/record.js';
import { SignatureScheme } from '../src/tls/signer.js';
import { EphemeralKey, NamedGroup } from '../src/tls/suites.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';
import {
  ClientWriter, encodeClientHello, exchange, ext, fullHandshake, goodHello, keyUpdateMsg, readServerFlight, record, records, sealRaw,
  type Ext,
} from './helpers/tls13-client.js';

const certs = makeTestCerts(['localhost', '*.example.com']);
t.teardown(() => certs.cleanup());

function config(over: Partial<HandshakeConfig> = {}): HandshakeConfig {
  return {
    certificates: [
      prepareCertEntry({ chain: certs.ec.chain, signer: new SoftSigner(certs.ec.key) }),
      prepareCertEntry({ chain: certs.rsa.chain, signer: new SoftSigner(certs.rsa.key) }),
    ],
    alpnProtocols: ['h2', 'http/1.1'], ticketCount: 0, ticketLifetimeS: 3600, verifyAfterSign: () => true, now: Date.now, ...over,
  };
}

function expectAlert(t: Test, conn: ServerConnection, alert: AlertName): void {
  const err = conn.error;
  t.ok(err instanceof TlsAlertError && !err.received, `the server raised an alert (${err?.message})`);
  t.equal(err instanceof TlsAlertError ? err.alert : -1, AlertDescription[alert], `alert is ${alert}: ${err?.message}`);
}

/** The last 7 bytes the server sent: a whole plaintext alert record when it failed before keys. */
function lastAlertPlain(out: Buffer): number[] {
  return [...out.subarray(-7)];
}

/** A ClientHello that must fail with `alert`, sent in plaintext (the alert goes back in plaintext). */
async function helloFails(t: Test, ch: Buffer, alert: AlertName, cfg: ServerHandshakeConfig = config()): Promise<void> {
  const conn = new ServerConnection(cfg);
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  expectAlert(t, conn, alert);
  t.same(lastAlertPlain(out), [21, 3, 3, 0, 2, 2, AlertDescription[alert]], 'a fatal alert record went out');
}

/** A good hello's extensions with `replace` swapped in by type (or appended) and `omit` removed. */
function helloExts(replace: Ext[] = [], omit: number[] = []): { exts: Ext[]; key: EphemeralKey } {
  const { spec, key } = goodHello();
  const exts = spec.extensions!.filter(([ty]) => !omit.includes(ty) && !replace.some(([r]) => r === ty));
  return { exts: [...exts, ...replace], key };
}

t.test('ClientHello extension bodies: decode_error vs illegal_parameter (RFC 8446 §6)', async (t) => {
  const cases: Array<[string, Ext[], number[], AlertName]> = [
    ['empty supported_versions list → decode_error', [[ExtensionType.supported_versions, Buffer.from([0])]], [], 'decode_error'],
    ['odd-length supported_versions → decode_error', [[ExtensionType.supported_versions, Buffer.from([3, 3, 4, 3])]], [], 'decode_error'],
    ['supported_versions length byte past the body → decode_error', [[ExtensionType.supported_versions, Buffer.from([4, 3, 4])]], [], 'decode_error'],
    ['empty supported_groups → decode_error', [[ExtensionType.supported_groups, Buffer.from([0, 0])]], [], 'decode_error'],
    ['empty psk_key_exchange_modes → decode_error', [[ExtensionType.psk_key_exchange_modes, Buffer.from([0])]], [], 'decode_error'],
    ['empty cookie → decode_error', [[ExtensionType.cookie, Buffer.from([0, 0])]], [], 'decode_error'],
    ['empty ALPN list → decode_error', [[ExtensionType.alpn, Buffer.from([0, 0])]], [], 'decode_error'],
    ['empty SNI host_name → decode_error', [[ExtensionType.server_name, Buffer.from([0, 3, 0, 0, 0])]], [], 'decode_error'],
    ['key_share entry longer than its list → decode_error', [[ExtensionType.key_share, Buffer.from([0, 4, 0, 0x1d, 0, 32])]], [], 'decode_error'],
    ['oid_filters (CertificateRequest only) in a ClientHello → illegal_parameter', [[48, Buffer.from([0, 0])]], [], 'illegal_parameter'],
    ['a cookie in the first ClientHello (we never send one) → illegal_parameter', [[ExtensionType.cookie, Buffer.from([0, 1, 2])]], [], 'illegal_parameter'],
    ['key_share for a group missing from supported_groups → illegal_parameter', [ext.groups([NamedGroup.secp256r1])], [], 'illegal_parameter'],
    ['no key_share → missing_extension', [], [ExtensionType.key_share], 'missing_extension'],
    ['no supported_groups → missing_extension', [], [ExtensionType.supported_groups], 'missing_extension'],
    ['empty PSK binder list → decode_error', [ext.pskModes(), [ExtensionType.pre_shared_key, Buffer.from([0, 7, 0, 1, 0x78, 0, 0, 0, 0, 0, 0])]], [], 'decode_error'],
    ['only a GREASE group, with a GREASE share → handshake_failure', [ext.groups([0x0a0a]), [ExtensionType.key_share, Buffer.from([0, 6, 0x0a, 0x0a, 0, 2, 0x12, 0x34])]], [], 'handshake_failure'],
  ];
  for (const [name, replace, omit, alert] of cases) {
    await t.test(name, (t) => helloFails(t, encodeClientHello({ extensions: helloExts(replace, omit).exts }), alert));
  }
  await t.test('an extension block that overruns the message → decode_error', (t) => {
    const ch = encodeClientHello({ extensions: helloExts().exts });
    ch.writeUInt16BE(ch.readUInt16BE(4 + 2 + 32 + 1 + 2 + 6 + 2) + 1, 4 + 2 + 32 + 1 + 2 + 6 + 2);
    return helloFails(t, ch, 'decode_error');
  });
});

t.test('version negotiation', async (t) => {
  await t.test('legacy_version is ignored when supported_versions lists TLS 1.3 (with GREASE and drafts)', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello({ extra: [] });
    spec.extensions = spec.extensions!.map((e) => (e[0] === ExtensionType.supported_versions ? ext.versions([0x0a0a, 0x7f1c, 0x0304, 0x0303]) : e));
    const ch = encodeClientHello({ ...spec, legacyVersion: 0x0301 });
    const c = readServerFlight(ch, key, await exchange(conn, record(ContentType.handshake, ch, 0x0300)));
    t.same([...c.serverHello.extensions.get(ExtensionType.supported_versions)!], [3, 4], 'ServerHello selects 0x0304');
    await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
    t.ok(conn.established, 'first record with legacy_record_version 0x0300 accepted');
  });
  await t.test('TLS_FALLBACK_SCSV from a client without TLS 1.3 → inappropriate_fallback', (t) =>
    helloFails(t, encodeClientHello({ suites: [0xc02b, 0x5600], extensions: helloExts([], [ExtensionType.supported_versions]).exts }), 'inappropriate_fallback'));
  await t.test('TLS_FALLBACK_SCSV is ignored when TLS 1.3 is offered (it is our highest version)', async (t) => {
    const conn = new ServerConnection(config());
    const { spec } = goodHello();
    await exchange(conn, plaintextRecords(ContentType.handshake, encodeClientHello({ ...spec, suites: [0x1301, 0x5600] })));
    t.equal(conn.error, null);
    t.equal(conn.stateName, 'ExpectFinished');
  });
  // TLS 1.2 disabled here: with it enabled such a hello is a TLS 1.2 hello (tls12-*.test.ts).
  for (const legacy of [0x0300, 0x0200]) {
    await t.test(`legacy_version 0x${legacy.toString(16).padStart(4, '0')} (SSL 3.0 or older) → protocol_version even with supported_versions (RFC 8446 D.5)`, (t) =>
      helloFails(t, encodeClientHello({ legacyVersion: legacy, extensions: helloExts().exts }), 'protocol_version'));
  }
  await t.test('nor when TLS 1.2 is enabled too: no TLS 1.3 ServerHello goes out', async (t) => {
    const conn = new ServerConnection(config());
    const out = await exchange(conn, plaintextRecords(ContentType.handshake, encodeClientHello({ legacyVersion: 0x0304, extensions: helloExts([], [ExtensionType.supported_versions]).exts })));
    t.notOk(out.includes(Buffer.from([0, 0x2b, 0, 2, 3, 4])), 'no supported_versions(0x0304) in anything sent');
    t.not(conn.negotiated.suite?.version, 'TLSv1.3');
  });
  await t.test('without supported_versions TLS 1.3 is never chosen → protocol_version', (t) =>
    helloFails(t, encodeClientHello({ legacyVersion: 0x0304, extensions: helloExts([], [ExtensionType.supported_versions]).exts }), 'protocol_version', { ...config(), minVersion: '1.3' }));
});

t.test('ServerHello carries only what the client offered; unknown extensions are ignored', async (t) => {
  const conn = new ServerConnection(config());
  const c = await fullHandshake(conn, { extra: [[0x0a0a, Buffer.alloc(0)], [0xfe0d, Buffer.from('ech?')], [21, Buffer.alloc(100)]] });
  t.same([...c.serverHello.extensions.keys()].sort(), [ExtensionType.supported_versions, ExtensionType.key_share].sort());
  t.same(c.messages[0]!.body, Buffer.from([0, 0]), 'EncryptedExtensions is empty (no SNI, no ALPN offered)');
  t.ok(conn.established);
});

t.test('unknown values are ignored (RFC 8446 §9.3): suites, groups with shares, schemes, versions', async (t) => {
  const { spec, key } = goodHello();
  const exts = spec.extensions!.map((e): Ext => {
    if (e[0] === ExtensionType.supported_groups) return ext.groups([0x7b7c, NamedGroup.x25519, NamedGroup.secp256r1]);
    if (e[0] === ExtensionType.key_share) return ext.keyShares([{ group: 0x7b7c, key: Buffer.alloc(56, 1) }, { group: NamedGroup.x25519, key: key.publicBytes() }]);
    if (e[0] === ExtensionType.signature_algorithms) return ext.sigAlgs([0xfe44, SignatureScheme.ecdsa_secp256r1_sha256]);
    if (e[0] === ExtensionType.supported_versions) return ext.versions([0x0505, 0x0304]);
    return e;
  });
  const conn = new ServerConnection(config());
  const ch = encodeClientHello({ suites: [0xfe00, 0x0a0a, 0x1302], extensions: exts });
  const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
  t.equal(c.serverHello.suite, 0x1302);
  await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
  t.ok(conn.established);
});

t.test('the largest ClientHello the grammar allows is accepted (tlsfuzzer max client hello, OpenSSL\'s 131396-byte limit)', async (t) => {
  const { spec, key } = goodHello();
  const suites = [0x1301, ...Array.from({ length: 32766 }, (_, i) => 0x5700 + i)];
  const used = spec.extensions!.reduce((n, [, body]) => n + 4 + body.length, 0);
  const exts: Ext[] = [...spec.extensions!, [21, Buffer.alloc(65535 - used - 4)]];
  const ch = encodeClientHello({ suites, sessionId: Buffer.alloc(32, 1), extensions: exts });
  t.equal(ch.length - 4, 131396 - 254, 'body: 32767 suites and 65535 bytes of extensions (compression is [0] in TLS 1.3)');
  const conn = new ServerConnection(config());
  const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
  await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
  t.ok(conn.established);
});

t.test('handshake message caps are checked on the 4-byte header, before buffering', async (t) => {
  await t.test('a ClientHello announcing 131397 bytes → illegal_parameter', async (t) => {
    const conn = new ServerConnection(config());
    await exchange(conn, record(ContentType.handshake, Buffer.from([1, 0x02, 0x01, 0x45])));
    expectAlert(t, conn, 'illegal_parameter');
  });
  await t.test('any other message announcing more than 64 KiB → illegal_parameter', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello();
    const ch = encodeClientHello(spec);
    const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
    await exchange(conn, c.sealer.seal(ContentType.handshake, Buffer.from([20, 0x01, 0x00, 0x01])));
    expectAlert(t, conn, 'illegal_parameter');
  });
});

t.test('only GREASE cipher suites → handshake_failure', (t) =>
  helloFails(t, encodeClientHello({ suites: [0x0a0a], extensions: helloExts().exts }), 'handshake_failure'));

t.test('PSK offered with psk_ke only (no psk_dhe_ke) falls back to a full handshake', async (t) => {
  const conn = new ServerConnection(config());
  const { spec } = goodHello({ extra: [ext.pskModes([0]), ext.psk([{ identity: Buffer.from('ticket'), age: 0 }], [Buffer.alloc(32)])] });
  const ev: ConnectionEvent[] = [];
  conn.feed(plaintextRecords(ContentType.handshake, encodeClientHello(spec)));
  ev.push(...conn.takeEvents());
  t.equal(conn.error, null);
  t.ok(ev.some((e) => e.type === 'sign'), 'a certificate signature is requested');
});

// ---- HelloRetryRequest ----

const SID = Buffer.alloc(32, 0x5a);
/** ClientHello1 offers x25519 and P-384 but sends a share only for ffdhe2048, which we lack. */
function hrrBase(): Ext[] {
  return [
    ext.versions(), ext.groups([0x0104, NamedGroup.secp384r1]), ext.sigAlgs([SignatureScheme.ecdsa_secp256r1_sha256]),
    ext.sni('localhost'), ext.alpn(['http/1.1']), [0xeaea, Buffer.from([1])], [21, Buffer.alloc(10)],
    ext.keyShares([{ group: 0x0104, key: Buffer.alloc(256, 3) }]),
  ];
}
const RANDOM = Buffer.alloc(32, 1);

async function retry(ch1Exts = hrrBase()): Promise<{ conn: ServerConnection; ch1: Buffer; out: Buffer; hrr: Buffer }> {
  const conn = new ServerConnection(config());
  const ch1 = encodeClientHello({ random: RANDOM, sessionId: SID, extensions: ch1Exts });
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch1));
  return { conn, ch1, out, hrr: out.subarray(5, 5 + out.readUInt16BE(3)) };
}

/** ClientHello2 = hrrBase with the P-384 share, then `edit` applied to the extension list. */
function secondHello(edit: (e: Ext[]) => Ext[] = (e) => e, over: Parameters<typeof encodeClientHello>[0] = {}): { ch2: Buffer; key: EphemeralKey } {
  const key = EphemeralKey.generate(NamedGroup.secp384r1);
  const exts = hrrBase().map((e) => (e[0] === ExtensionType.key_share ? ext.keyShares([{ group: NamedGroup.secp384r1, key: key.publicBytes() }]) : e));
  return { ch2: encodeClientHello({ random: RANDOM, sessionId: SID, extensions: edit(exts), ...over }), key };
}

t.test('an empty key_share list asks for a HelloRetryRequest naming one of the client\'s groups, without a key', async (t) => {
  const conn = new ServerConnection(config());
  const ch1Exts = hrrBase().map((e) => (e[0] === ExtensionType.key_share ? ext.keyShares([]) : e));
  const ch1 = encodeClientHello({ random: RANDOM, sessionId: SID, extensions: ch1Exts });
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch1));
  const hrr = out.subarray(5, 5 + out.readUInt16BE(3));
  t.same(hrr.subarray(6, 38), HRR_RANDOM);
  t.ok(hrr.includes(Buffer.from([0, 0x33, 0, 2, 0, 0x18])), 'key_share extension of 2 bytes: selected_group secp384r1 only');
  const { ch2, key } = secondHello();
  const prefix = [Buffer.concat([Buffer.from([254, 0, 0, 32]), createHash('sha256').update(ch1).digest()]), hrr];
  const c = readServerFlight(ch2, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch2)), undefined, prefix);
  t.same(c.serverHello.extensions.get(ExtensionType.supported_versions), Buffer.from([3, 4]), 'ServerHello keeps the HRR\'s selected version');
  await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
  t.ok(conn.established);
});

t.test('HelloRetryRequest echoes the session id, is followed by one CCS, and names the group', async (t) => {
  const { out, hrr } = await retry();
  const recs = records(out);
  t.same(recs.map((r) => r.type), [ContentType.handshake, ContentType.change_cipher_spec], 'HRR then the compatibility CCS');
  t.same(hrr.subarray(4 + 2 + 32 + 1, 4 + 2 + 32 + 1 + 32), SID, 'legacy_session_id echoed byte for byte');
  t.ok(hrr.includes(Buffer.from([0, 0x33, 0, 2, 0, 0x18])), 'key_share selects secp384r1');
});

t.test('ClientHello2 may change only key_share, early_data, pre_shared_key and padding (RFC 8446 §4.1.2)', async (t) => {
  const without = (ty: number) => (e: Ext[]): Ext[] => e.filter(([x]) => x !== ty);
  const swap = (n: Ext) => (e: Ext[]): Ext[] => e.map((x) => (x[0] === n[0] ? n : x));
  const cases: Array<[string, ReturnType<typeof secondHello>['ch2']]> = [
    ['changed ALPN', secondHello(swap(ext.alpn(['h2']))).ch2],
    ['dropped SNI', secondHello(without(ExtensionType.server_name)).ch2],
    ['changed supported_groups', secondHello(swap(ext.groups([NamedGroup.secp384r1]))).ch2],
    ['changed supported_versions', secondHello(swap(ext.versions([0x0304, 0x0303]))).ch2],
    ['changed unknown (GREASE) extension body', secondHello(swap([0xeaea, Buffer.from([2])])).ch2],
    ['added unknown extension', secondHello((e) => [[0x1a1a, Buffer.alloc(0)], ...e]).ch2],
    ['added cookie we never sent', secondHello((e) => [[ExtensionType.cookie, Buffer.from([0, 2, 9, 9])], ...e]).ch2],
    ['added pre_shared_key', secondHello((e) => [...e, ext.pskModes(), ext.psk([{ identity: Buffer.from('x'), age: 0 }], [Buffer.alloc(32)])]).ch2],
    ['changed cipher_suites', secondHello(undefined, { suites: [0x1302, 0x1301] }).ch2],
    ['changed legacy_session_id', secondHello(undefined, { sessionId: Buffer.alloc(32, 0x5b) }).ch2],
    ['changed legacy_version', secondHello(undefined, { legacyVersion: 0x0301 }).ch2],
    ['a share for a group other than the one requested', encodeClientHello({ random: RANDOM, sessionId: SID, extensions: hrrBase().map((e) => (e[0] === ExtensionType.key_share ? ext.keyShares([{ group: NamedGroup.x25519, key: EphemeralKey.generate(NamedGroup.x25519).publicBytes() }]) : e)) })],
    ['two shares', secondHello((e) => e.map((x) => (x[0] === ExtensionType.key_share ? ext.keyShares([{ group: 0x0104, key: Buffer.alloc(256, 3) }, { group: NamedGroup.secp384r1, key: EphemeralKey.generate(NamedGroup.secp384r1).publicBytes() }]) : x))).ch2],
  ];
  for (const [name, ch2] of cases) {
    await t.test(`${name} → illegal_parameter`, async (t) => {
      const { conn } = await retry();
      const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch2));
      expectAlert(t, conn, 'illegal_parameter');
      t.same(lastAlertPlain(out), [21, 3, 3, 0, 2, 2, 47]);
    });
  }
  await t.test('a different padding length is allowed and the handshake completes', async (t) => {
    const { conn, ch1, hrr } = await retry();
    const { ch2, key } = secondHello(swap([21, Buffer.alloc(300)]));
    const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch2));
    const prefix = [Buffer.concat([Buffer.from([254, 0, 0, 32]), createHash('sha256').update(ch1).digest()]), hrr];
    const c = readServerFlight(ch2, key, out, undefined, prefix);
    t.same(c.serverHello.sessionId, SID, 'ServerHello echoes the session id too');
    t.notOk(c.sawCcs, 'the compatibility CCS is sent once per connection (it followed the HRR)');
    await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
    t.ok(conn.established);
  });
});

// ---- 0-RTT that we decline ----

t.test('declined early data', async (t) => {
  const earlyRecord = (n = 200): Buffer => record(ContentType.application_data, Buffer.alloc(n, 0xee));
  const start = async (extra: Ext[] = [ext.earlyData()]): Promise<{ conn: ServerConnection; c: ReturnType<typeof readServerFlight> }> => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello({ extra });
    const ch = encodeClientHello(spec);
    return { conn, c: readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch))) };
  };
  await t.test('records that do not decrypt are skipped up to the limit, then it is fatal', async (t) => {
    const { conn } = await start();
    const big = earlyRecord(2 ** 14 + 256);
    await exchange(conn, Buffer.concat([big, big, big]));
    t.equal(conn.error, null, '3 × 16640 bytes skipped');
    await exchange(conn, big);
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('without the early_data extension an undecryptable record is bad_record_mac', async (t) => {
    const { conn } = await start([]);
    await exchange(conn, earlyRecord());
    expectAlert(t, conn, 'bad_record_mac');
  });
  await t.test('skipping ends at the first record that decrypts', async (t) => {
    const { conn, c } = await start();
    await exchange(conn, Buffer.concat([earlyRecord(), c.sealer.seal(ContentType.handshake, Buffer.from([20, 0, 0]))]));
    t.equal(conn.error, null, 'partial Finished decrypted');
    await exchange(conn, earlyRecord());
    expectAlert(t, conn, 'bad_record_mac');
  });
  await t.test('after HRR, early data before ClientHello2 is skipped; after it, bad records are fatal', async (t) => {
    const { conn, ch1, hrr } = await retry([...hrrBase(), ext.earlyData()]);
    await exchange(conn, Buffer.concat([earlyRecord(), earlyRecord()]));
    t.equal(conn.error, null, 'early records before ClientHello2 skipped');
    const { ch2, key } = secondHello();
    const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch2));
    const prefix = [Buffer.concat([Buffer.from([254, 0, 0, 32]), createHash('sha256').update(ch1).digest()]), hrr];
    readServerFlight(ch2, key, out, undefined, prefix);
    await exchange(conn, earlyRecord());
    expectAlert(t, conn, 'bad_record_mac');
  });
  await t.test('after HRR, the handshake completes once the skipped early data is behind', async (t) => {
    const { conn, ch1, hrr } = await retry([...hrrBase(), ext.earlyData()]);
    await exchange(conn, earlyRecord());
    const { ch2, key } = secondHello();
    const prefix = [Buffer.concat([Buffer.from([254, 0, 0, 32]), createHash('sha256').update(ch1).digest()]), hrr];
    const c = readServerFlight(ch2, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch2)), undefined, prefix);
    await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
    t.ok(conn.established);
  });
  await t.test('EndOfEarlyData (we never accepted 0-RTT) → unexpected_message', async (t) => {
    const { conn, c } = await start();
    await exchange(conn, c.sealer.seal(ContentType.handshake, Buffer.from([5, 0, 0, 0])));
    expectAlert(t, conn, 'unexpected_message');
  });
});

// ---- record layer ----

t.test('record layer after the handshake', async (t) => {
  const established = async (): Promise<{ conn: ServerConnection; c: Awaited<ReturnType<typeof fullHandshake>> }> => {
    const conn = new ServerConnection(config());
    return { conn, c: await fullHandshake(conn) };
  };
  const dataOf = (ev: ConnectionEvent[]): string[] => ev.map((e) => (e.type === 'data' ? e.data.toString() : e.type));

  await t.test('legacy_record_version is ignored (RFC 8446 §5.1): a 0x0301 record is accepted', async (t) => {
    const { conn, c } = await established();
    const ev: ConnectionEvent[] = [];
    await exchange(conn, sealRaw(c.suite, c.app.client, 0n, Buffer.from('hi\x17'), { version: 0x0301 }), ev);
    t.same(dataOf(ev), ['hi']);
  });
  await t.test('a record version outside 0x03xx → protocol_version', async (t) => {
    const { conn, c } = await established();
    await exchange(conn, sealRaw(c.suite, c.app.client, 0n, Buffer.from('hi\x17'), { version: 0x0403 }));
    expectAlert(t, conn, 'protocol_version');
  });
  await t.test('padding is stripped: the largest padded record is accepted', async (t) => {
    const { conn, c } = await established();
    const ev: ConnectionEvent[] = [];
    const inner = Buffer.concat([Buffer.from('x'), Buffer.from([23]), Buffer.alloc(2 ** 14 - 1)]);
    await exchange(conn, sealRaw(c.suite, c.app.client, 0n, inner), ev);
    t.same(dataOf(ev), ['x']);
  });
  await t.test('an inner plaintext one byte over 2^14+1 → record_overflow', async (t) => {
    const { conn, c } = await established();
    const inner = Buffer.concat([Buffer.from('x'), Buffer.from([23]), Buffer.alloc(2 ** 14)]);
    await exchange(conn, sealRaw(c.suite, c.app.client, 0n, inner));
    expectAlert(t, conn, 'record_overflow');
  });
  await t.test('a padding-only record (no content type) → unexpected_message', async (t) => {
    const { conn, c } = await established();
    await exchange(conn, sealRaw(c.suite, c.app.client, 0n, Buffer.alloc(40)));
    expectAlert(t, conn, 'unexpected_message');
  });
  for (const type of [0, 24, 0x19, 0xff]) {
    await t.test(`an encrypted record of inner type ${type} → unexpected_message`, async (t) => {
      const { conn, c } = await established();
      await exchange(conn, sealRaw(c.suite, c.app.client, 0n, Buffer.from([1, 2, type])));
      expectAlert(t, conn, 'unexpected_message');
    });
  }
  await t.test('an encrypted record with outer type handshake → unexpected_message', async (t) => {
    const { conn, c } = await established();
    await exchange(conn, sealRaw(c.suite, c.app.client, 0n, Buffer.from('hi\x17'), { type: ContentType.handshake }));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('a plaintext alert once encryption started → unexpected_message', async (t) => {
    const { conn } = await established();
    await exchange(conn, record(ContentType.alert, Buffer.from([1, 0])));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('empty application data records are counted, and data in between resets the count', async (t) => {
    const { conn, c } = await established();
    const empty = (): Buffer => c.appSealer.seal(ContentType.application_data, Buffer.alloc(0));
    for (let i = 0; i < 32; i++) await exchange(conn, empty());
    await exchange(conn, c.appSealer.seal(ContentType.application_data, Buffer.from('x')));
    for (let i = 0; i < 32; i++) await exchange(conn, empty());
    t.equal(conn.error, null);
    t.equal(conn.counters.emptyRecords, 32);
  });
  await t.test('a handshake message fragment followed by application data → unexpected_message', async (t) => {
    const { conn, c } = await established();
    await exchange(conn, Buffer.concat([c.appSealer.seal(ContentType.handshake, Buffer.from([24, 0])), c.appSealer.seal(ContentType.application_data, Buffer.from('x'))]));
    expectAlert(t, conn, 'unexpected_message');
  });
});

t.test('record layer during the handshake', async (t) => {
  const ccs = record(ContentType.change_cipher_spec, Buffer.from([1]));
  await t.test('ClientHello and two CCS in one TCP packet: the whole flight, then unexpected_message (tlsfuzzer, CVE-2020-25648)', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello({ sessionId: SID });
    const ch = encodeClientHello(spec);
    const out = await exchange(conn, Buffer.concat([plaintextRecords(ContentType.handshake, ch), ccs, ccs]));
    expectAlert(t, conn, 'unexpected_message');
    const alertRec = out.subarray(out.length - 5 - 2 - 1 - 16);
    const c = readServerFlight(ch, key, out.subarray(0, out.length - alertRec.length));
    t.same(c.messages.map((m) => m.type), [8, 11, 15, 20], 'SH..Finished went out first');
    const k = (await import('../src/tls/keyschedule.js')).trafficKeys(c.suite, c.app.server);
    const opener = new (await import('../src/tls/record.js')).RecordOpener(c.suite, k.key, k.iv);
    const alert = opener.open({ type: alertRec[0]!, version: 0x0303, fragment: alertRec.subarray(5) });
    t.same([alert.type, ...alert.content], [ContentType.alert, 2, 10], 'then an encrypted unexpected_message');
  });
  await t.test('a second CCS just before the client Finished → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello({ sessionId: SID });
    const ch = encodeClientHello(spec);
    const c = readServerFlight(ch, key, await exchange(conn, Buffer.concat([plaintextRecords(ContentType.handshake, ch), ccs])));
    await exchange(conn, Buffer.concat([ccs, c.sealer.seal(ContentType.handshake, c.finished)]));
    expectAlert(t, conn, 'unexpected_message');
    t.notOk(conn.established);
  });
  await t.test('one CCS after the HelloRetryRequest, none later: the handshake completes', async (t) => {
    const { conn, ch1, hrr } = await retry();
    const { ch2, key } = secondHello();
    const prefix = [Buffer.concat([Buffer.from([254, 0, 0, 32]), createHash('sha256').update(ch1).digest()]), hrr];
    const c = readServerFlight(ch2, key, await exchange(conn, Buffer.concat([ccs, plaintextRecords(ContentType.handshake, ch2)])), undefined, prefix);
    await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
    t.ok(conn.established);
  });
  await t.test('a CCS between two fragments of the ClientHello → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const ch = encodeClientHello(goodHello({ sessionId: SID }).spec);
    await exchange(conn, Buffer.concat([record(ContentType.handshake, ch.subarray(0, 50)), record(ContentType.change_cipher_spec, Buffer.from([1])), record(ContentType.handshake, ch.subarray(50))]));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('a ClientHello header split across records is reassembled', async (t) => {
    const conn = new ServerConnection(config());
    const ch = encodeClientHello(goodHello().spec);
    await exchange(conn, Buffer.concat([record(ContentType.handshake, ch.subarray(0, 2)), record(ContentType.handshake, ch.subarray(2))]));
    t.equal(conn.stateName, 'ExpectFinished');
  });
  await t.test('encrypted empty application data before the client Finished → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello();
    const ch = encodeClientHello(spec);
    const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
    await exchange(conn, c.sealer.seal(ContentType.application_data, Buffer.alloc(0)));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('a padded client Finished is accepted', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello();
    const ch = encodeClientHello(spec);
    const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
    await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished, 500));
    t.ok(conn.established);
  });
  await t.test('a Finished of the wrong length → decode_error', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello();
    const ch = encodeClientHello(spec);
    const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
    await exchange(conn, c.sealer.seal(ContentType.handshake, Buffer.concat([Buffer.from([20, 0, 0, 33]), c.finished.subarray(4), Buffer.from([0])])));
    expectAlert(t, conn, 'decode_error');
  });
  await t.test('an encrypted fatal alert from the client ends the handshake with no answer', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello();
    const ch = encodeClientHello(spec);
    const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
    const out = await exchange(conn, c.sealer.seal(ContentType.alert, Buffer.from([2, AlertDescription.bad_certificate])));
    t.ok(conn.error instanceof TlsAlertError && conn.error.received && conn.error.alert === AlertDescription.bad_certificate);
    t.equal(out.length, 0);
  });
});

// ---- post-handshake ----

t.test('post-handshake messages a server must refuse → unexpected_message', async (t) => {
  const msgs: Array<[string, Buffer]> = [
    ['ServerHello', Buffer.from([2, 0, 0, 0])],
    ['NewSessionTicket', Buffer.from([4, 0, 0, 0])],
    ['EndOfEarlyData', Buffer.from([5, 0, 0, 0])],
    ['Certificate', Buffer.from([11, 0, 0, 4, 0, 0, 0, 0])],
    ['CertificateVerify', Buffer.from([15, 0, 0, 4, 4, 3, 0, 0])],
    ['Finished', Buffer.concat([Buffer.from([20, 0, 0, 32]), Buffer.alloc(32)])],
    ['an unknown type (99)', Buffer.from([99, 0, 0, 0])],
  ];
  for (const [name, m] of msgs) {
    await t.test(name, async (t) => {
      const conn = new ServerConnection(config());
      const c = await fullHandshake(conn);
      const out = await exchange(conn, c.appSealer.seal(ContentType.handshake, m));
      expectAlert(t, conn, 'unexpected_message');
      const alert = c.appOpener.open({ type: 23, version: 0x0303, fragment: out.subarray(5) });
      t.same([alert.type, ...alert.content], [ContentType.alert, 2, 10], 'encrypted fatal unexpected_message');
    });
  }
});

t.test('KeyUpdate', async (t) => {
  await t.test('a KeyUpdate with a trailing byte, or with no body → decode_error', async (t) => {
    for (const m of [Buffer.from([24, 0, 0, 2, 0, 0]), Buffer.from([24, 0, 0, 0])]) {
      const conn = new ServerConnection(config());
      const c = await fullHandshake(conn);
      await exchange(conn, c.appSealer.seal(ContentType.handshake, m));
      expectAlert(t, conn, 'decode_error');
    }
  });
  await t.test('a KeyUpdate instead of the client Finished → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello();
    const ch = encodeClientHello(spec);
    const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
    await exchange(conn, c.sealer.seal(ContentType.handshake, keyUpdateMsg(1)));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('request_update 3 → illegal_parameter', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    await exchange(conn, c.appSealer.seal(ContentType.handshake, keyUpdateMsg(3)));
    expectAlert(t, conn, 'illegal_parameter');
  });
  await t.test('a KeyUpdate split over two records is accepted (it still ends on a record boundary)', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    const w = new ClientWriter(c.suite, c.app.client);
    const parts = [w.seal(ContentType.handshake, keyUpdateMsg(0).subarray(0, 2)), w.seal(ContentType.handshake, keyUpdateMsg(0).subarray(2))];
    w.roll();
    const ev: ConnectionEvent[] = [];
    await exchange(conn, Buffer.concat([...parts, w.seal(ContentType.application_data, Buffer.from('new key'))]), ev);
    t.equal(conn.error, null);
    t.same(ev.map((e) => (e.type === 'data' ? e.data.toString() : e.type)), ['new key']);
  });
  await t.test('a KeyUpdate followed by part of another message in the same record → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    await exchange(conn, c.appSealer.seal(ContentType.handshake, Buffer.concat([keyUpdateMsg(0), Buffer.from([24, 0])])));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('every update_requested KeyUpdate in a burst is answered, each under the key then current (tlsfuzzer)', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    const w = new ClientWriter(c.suite, c.app.client);
    const burst: Buffer[] = [];
    for (let i = 0; i < 3; i++) { burst.push(w.seal(ContentType.handshake, keyUpdateMsg(1))); w.roll(); }
    burst.push(w.seal(ContentType.application_data, Buffer.from('after')));
    const ev: ConnectionEvent[] = [];
    const out = await exchange(conn, Buffer.concat(burst), ev);
    t.equal(conn.error, null);
    t.same(ev.map((e) => (e.type === 'data' ? e.data.toString() : e.type)), ['after'], 'data under the third new key');
    const { nextTrafficSecret, trafficKeys } = await import('../src/tls/keyschedule.js');
    const { RecordOpener } = await import('../src/tls/record.js');
    let secret = c.app.server;
    const answers = records(out).map((r) => {
      const k = trafficKeys(c.suite, secret);
      secret = nextTrafficSecret(c.suite.hash, secret);
      return [...new RecordOpener(c.suite, k.key, k.iv).open({ type: r.type, version: 0x0303, fragment: r.fragment }).content];
    });
    t.same(answers, [[24, 0, 0, 1, 0], [24, 0, 0, 1, 0], [24, 0, 0, 1, 0]], 'three KeyUpdate(update_not_requested), keys rolling');
    t.equal(conn.counters.keyUpdatesReceived, 3);
    t.equal(conn.counters.keyUpdatesSent, 3);
  });
  await t.test('32 update_requested KeyUpdates in a row get 32 answers and the connection stays up (tlsfuzzer)', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    const w = new ClientWriter(c.suite, c.app.client);
    const burst: Buffer[] = [];
    for (let i = 0; i < 32; i++) { burst.push(w.seal(ContentType.handshake, keyUpdateMsg(1))); w.roll(); }
    burst.push(w.seal(ContentType.application_data, Buffer.from('GET /')));
    const ev: ConnectionEvent[] = [];
    const out = await exchange(conn, Buffer.concat(burst), ev);
    t.equal(conn.error, null);
    t.equal(records(out).length, 32);
    t.same(ev.map((e) => (e.type === 'data' ? e.data.toString() : e.type)), ['GET /']);
  });
  await t.test('application data between KeyUpdates resets the flood counter', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    const w = new ClientWriter(c.suite, c.app.client);
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 30; i++) { await exchange(conn, w.seal(ContentType.handshake, keyUpdateMsg(0))); w.roll(); }
      await exchange(conn, w.seal(ContentType.application_data, Buffer.from('x')));
    }
    t.equal(conn.error, null, '60 KeyUpdates in two runs of 30');
  });
  await t.test('after our close_notify, a requested KeyUpdate updates the read key but is not answered', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    conn.close();
    conn.takeOutput();
    const w = new ClientWriter(c.suite, c.app.client);
    const first = w.seal(ContentType.handshake, keyUpdateMsg(1));
    w.roll();
    const ev: ConnectionEvent[] = [];
    const out = await exchange(conn, Buffer.concat([first, w.seal(ContentType.application_data, Buffer.from('tail'))]), ev);
    t.equal(conn.error, null);
    t.equal(out.length, 0, 'nothing is sent after close_notify');
    t.same(ev.map((e) => (e.type === 'data' ? e.data.toString() : e.type)), ['tail'], 'half-close: the peer can still send');
  });
  await t.test('a server-initiated KeyUpdate asking the peer to update is sent under the old key', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    conn.keyUpdate(true);
    const out = conn.takeOutput()!;
    t.same([...c.appOpener.open({ type: 23, version: 0x0303, fragment: out.subarray(5) }).content], [24, 0, 0, 1, 1]);
    t.equal(conn.counters.keyUpdatesSent, 1);
  });
});

t.test('alerts', async (t) => {
  await t.test('an unknown alert description at warning level ends the connection (TLS 1.3 §6)', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    const out = await exchange(conn, c.appSealer.seal(ContentType.alert, Buffer.from([1, 255])));
    t.ok(conn.error instanceof TlsAlertError && conn.error.received);
    t.equal(out.length, 0, 'no answer to a received alert');
  });
  await t.test('close_notify: the rest of the stream is ignored, even garbage', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    await exchange(conn, Buffer.concat([c.appSealer.seal(ContentType.alert, Buffer.from([1, 0])), Buffer.from([0xde, 0xad, 0xbe, 0xef, 0, 0])]));
    t.equal(conn.error, null);
    t.ok(conn.peerClosed);
  });
  await t.test('close_notify during the handshake is reported and the handshake never completes', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello();
    const ch = encodeClientHello(spec);
    const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
    const ev: ConnectionEvent[] = [];
    await exchange(conn, Buffer.concat([c.sealer.seal(ContentType.alert, Buffer.from([1, 0])), c.sealer.seal(ContentType.handshake, c.finished)]), ev);
    t.same(ev.map((e) => e.type), ['close_notify']);
    t.notOk(conn.established);
  });
});
