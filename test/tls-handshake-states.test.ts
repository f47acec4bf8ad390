// State-transition tests for the TLS 1.3 server core: hand-made ClientHellos and records fed
// to a sans-IO ServerConnection, each asserting the exact alert (TLS.md checklist items).
import t, { type Test } from 'tap';
import { createHash, verify as cryptoVerify } from 'node:crypto';
import { AlertDescription, TlsAlertError, type AlertName } from '../src/tls/alert.js';
import { prepareCertEntry } from '../src/tls/certselect.js';
import { ServerConnection, type ConnectionEvent } from '../src/tls/connection.js';
import { ExtensionType } from '../src/tls/extensions.js';
import { certificateVerifyContent } from '../src/tls/handshake13.js';
import type { ServerHandshakeConfig } from '../src/tls/hello12.js';
import { Reader } from '../src/tls/codec.js';
import { HRR_RANDOM } from '../src/tls/messages.js';
import { ContentType, plaintextRecords } from '../src/tls/record.js';
import { SignatureScheme } from '../src/tls/signer.js';
import { NamedGroup } from '../src/tls/suites.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';
import { encodeClientHello, exchange, ext, fullHandshake, goodHello, handshakeSecretsFromServerHello, readServerFlight, record } from './helpers/tls13-client.js';

const certs = makeTestCerts(['localhost', '*.example.com']);
t.teardown(() => certs.cleanup());

function config(over: Partial<ServerHandshakeConfig> = {}, signer?: SoftSigner): ServerHandshakeConfig {
  return {
    certificates: [
      prepareCertEntry({ chain: certs.ec.chain, signer: signer ?? new SoftSigner(certs.ec.key) }),
      prepareCertEntry({ chain: certs.rsa.chain, signer: new SoftSigner(certs.rsa.key) }),
    ],
    alpnProtocols: ['h2', 'http/1.1'], ticketCount: 0, ticketLifetimeS: 3600, verifyAfterSign: () => true, now: Date.now, ...over,
  };
}

function expectAlert(t: Test, conn: ServerConnection, alert: AlertName): void {
  const err = conn.error;
  t.ok(err instanceof TlsAlertError, `connection failed with an alert (${err?.message})`);
  t.equal(err instanceof TlsAlertError ? err.alert : -1, AlertDescription[alert], `alert is ${alert}: ${err?.message}`);
}

/** Sends a hello built from `spec` overrides and expects `alert` as a plaintext fatal alert. */
async function helloFails(t: Test, ch: Buffer, alert: AlertName, cfg = config()): Promise<void> {
  const conn = new ServerConnection(cfg);
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  expectAlert(t, conn, alert);
  t.same([...out.subarray(-7)], [21, 3, 3, 0, 2, 2, AlertDescription[alert]], 'the alert went out in plaintext');
}

t.test('a full handshake completes and the server flight verifies', async (t) => {
  const conn = new ServerConnection(config());
  const c = await fullHandshake(conn);
  t.ok(conn.established);
  t.same(c.messages.map((m) => m.type), [8, 11, 15, 20], 'EE, Certificate, CertificateVerify, Finished');
  t.equal(c.serverHello.suite, 0x1301, 'server preference: AES-128-GCM');
  t.notSame(c.serverHello.random.subarray(24), Buffer.from('444f574e47524401', 'hex'), 'no downgrade sentinel');
});

t.test('CertificateVerify signs the RFC 8446 content over the transcript up to Certificate', async (t) => {
  const conn = new ServerConnection(config());
  const { spec, key } = goodHello();
  const ch = encodeClientHello(spec);
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  const c = readServerFlight(ch, key, out);
  const raw = (m: { type: number; body: Buffer }): Buffer => Buffer.concat([Buffer.from([m.type, 0, m.body.length >> 8, m.body.length & 0xff]), m.body]);
  const shMsg = out.subarray(5, 5 + out.readUInt16BE(3));
  const h = createHash('sha256').update(ch).update(shMsg).update(raw(c.messages[0]!)).update(raw(c.messages[1]!)).digest();
  const cv = new Reader(c.messages[2]!.body);
  t.equal(cv.u16(), SignatureScheme.ecdsa_secp256r1_sha256, 'ECDSA chosen when offered');
  t.ok(cryptoVerify('sha256', certificateVerifyContent(h), certs.ec.key, cv.vec16()), 'signature verifies with the leaf key');
});

t.test('RSA-PSS is used when the client offers no ECDSA scheme', async (t) => {
  const conn = new ServerConnection(config());
  const c = await fullHandshake(conn, { sigAlgs: [SignatureScheme.rsa_pss_rsae_sha384] });
  const cv = new Reader(c.messages[2]!.body);
  t.equal(cv.u16(), SignatureScheme.rsa_pss_rsae_sha384);
  t.equal(cv.vec16().length, 256);
});

t.test('ClientHello validation alerts', async (t) => {
  const good = goodHello().spec;
  await t.test('a Finished as first message → unexpected_message', (t) =>
    helloFails(t, Buffer.from([20, 0, 0, 32, ...Buffer.alloc(32)]), 'unexpected_message'));
  await t.test('duplicate extension → illegal_parameter', (t) =>
    helloFails(t, encodeClientHello({ ...good, extensions: [...good.extensions!, ext.alpn(['h2']), ext.alpn(['h2'])] }), 'illegal_parameter'));
  await t.test('missing signature_algorithms → missing_extension', (t) =>
    helloFails(t, encodeClientHello(goodHello({ omit: [ExtensionType.signature_algorithms] }).spec), 'missing_extension'));
  // With TLS 1.2 disabled (minVersion 1.3); tls12-*.test.ts cover the 1.2 path.
  await t.test('missing supported_versions (a TLS 1.2 hello) → protocol_version', (t) =>
    helloFails(t, encodeClientHello(goodHello({ omit: [ExtensionType.supported_versions] }).spec), 'protocol_version', config({ minVersion: '1.3' })));
  await t.test('supported_versions without TLS 1.3 → protocol_version', (t) =>
    helloFails(t, encodeClientHello({ extensions: [ext.versions([0x0303]), ...good.extensions!.slice(1)] }), 'protocol_version', config({ minVersion: '1.3' })));
  await t.test('no common group → handshake_failure', (t) =>
    helloFails(t, encodeClientHello({ extensions: [ext.versions(), ext.groups([0x001a]), ext.sigAlgs([0x0403]), ext.keyShares([{ group: 0x001a, key: Buffer.alloc(133, 4) }])] }), 'handshake_failure'));
  await t.test('no common cipher suite → handshake_failure', (t) =>
    helloFails(t, encodeClientHello({ ...good, suites: [0xc02f] }), 'handshake_failure'));
  await t.test('session id longer than 32 bytes → decode_error', (t) =>
    helloFails(t, encodeClientHello({ ...good, sessionId: Buffer.alloc(33, 1) }), 'decode_error'));
  await t.test('compression other than [null] → illegal_parameter', (t) =>
    helloFails(t, encodeClientHello({ ...good, compression: [1, 0] }), 'illegal_parameter'));
  await t.test('trailing bytes after the ClientHello body → decode_error', (t) => {
    const ch = encodeClientHello(good);
    const padded = Buffer.concat([ch, Buffer.from([0])]);
    padded.writeUIntBE(ch.length - 4 + 1, 1, 3);
    return helloFails(t, padded, 'decode_error');
  });
  await t.test('trailing bytes inside key_share → decode_error', (t) => {
    const key = goodHello().key.publicBytes();
    const body = Buffer.concat([Buffer.from([0, 36 + 1, 0, 0x1d, 0, 32]), key, Buffer.from([0])]);
    return helloFails(t, encodeClientHello({ extensions: [ext.versions(), ext.groups([0x1d]), ext.sigAlgs([0x0403]), [ExtensionType.key_share, body]] }), 'decode_error');
  });
  await t.test('duplicate key_share group → illegal_parameter', (t) => {
    const k = goodHello().key.publicBytes();
    return helloFails(t, encodeClientHello({ extensions: [ext.versions(), ext.groups([0x1d]), ext.sigAlgs([0x0403]), ext.keyShares([{ group: 0x1d, key: k }, { group: 0x1d, key: k }])] }), 'illegal_parameter');
  });
  await t.test('x25519 share of the wrong length → illegal_parameter', (t) =>
    helloFails(t, encodeClientHello({ extensions: [ext.versions(), ext.groups([0x1d]), ext.sigAlgs([0x0403]), ext.keyShares([{ group: 0x1d, key: Buffer.alloc(31, 9) }])] }), 'illegal_parameter'));
  await t.test('pre_shared_key not last → illegal_parameter', (t) =>
    helloFails(t, encodeClientHello({ extensions: [ext.pskModes(), ext.psk([{ identity: Buffer.from('x'), age: 0 }], [Buffer.alloc(32)]), ...good.extensions!] }), 'illegal_parameter'));
  await t.test('pre_shared_key without psk_key_exchange_modes → missing_extension', (t) =>
    helloFails(t, encodeClientHello({ extensions: [...good.extensions!, ext.psk([{ identity: Buffer.from('x'), age: 0 }], [Buffer.alloc(32)])] }), 'missing_extension'));
  await t.test('empty ALPN protocol name → decode_error', (t) =>
    helloFails(t, encodeClientHello({ extensions: [...good.extensions!, ext.alpn([''])] }), 'decode_error'));
  await t.test('no ALPN overlap → no_application_protocol', (t) =>
    helloFails(t, encodeClientHello({ extensions: [...good.extensions!, ext.alpn(['spdy/1'])] }), 'no_application_protocol'));
  await t.test('SNI served by no certificate, sni: strict → unrecognized_name', (t) =>
    helloFails(t, encodeClientHello({ extensions: [...good.extensions!, ext.sni('other.test')] }), 'unrecognized_name', config({ sniStrict: true })));
  await t.test('SNI with a trailing dot → illegal_parameter', (t) =>
    helloFails(t, encodeClientHello({ extensions: [...good.extensions!, ext.sni('localhost.')] }), 'illegal_parameter'));
  await t.test('no scheme the keys can produce → handshake_failure', (t) =>
    helloFails(t, encodeClientHello(goodHello({ sigAlgs: [SignatureScheme.rsa_pkcs1_sha256, SignatureScheme.ed25519] }).spec), 'handshake_failure'));
});

t.test('ClientHello followed by part of another message in the same record: plaintext unexpected_message, no ServerHello', async (t) => {
  for (const [what, extra] of [['the start of a message', [20, 0, 0, 32, 1, 2]], ['a complete message', [20, 0, 0, 1, 0]]] as const) {
    const conn = new ServerConnection(config());
    const ch = encodeClientHello(goodHello().spec);
    const out = await exchange(conn, record(ContentType.handshake, Buffer.concat([ch, Buffer.from(extra)])));
    expectAlert(t, conn, 'unexpected_message');
    t.same([...out], [21, 3, 3, 0, 2, 2, AlertDescription.unexpected_message], `${what} after the hello: only the plaintext alert went out`);
  }
});

t.test('an IP literal in SNI counts as no SNI: the default certificate, no acknowledgement', async (t) => {
  for (const ip of ['127.0.0.1', '::1', '2001:db8::17', '[::1]']) {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn, { extra: [ext.sni(ip)] });
    t.ok(conn.established, `handshake with SNI ${ip} completes`);
    t.equal(conn.negotiated.servername, undefined, 'no server name negotiated');
    t.same([...c.messages[0]!.body], [0, 0], 'EE does not acknowledge server_name');
  }
});

t.test('SNI picks the exact name, then a one-label wildcard, and is acknowledged in EE', async (t) => {
  for (const name of ['localhost', 'www.example.com']) {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn, { extra: [ext.sni(name)] });
    t.equal(conn.negotiated.servername, name);
    t.same([...c.messages[0]!.body], [0, 4, 0, 0, 0, 0], `EE carries an empty server_name for ${name}`);
  }
  await helloFails(t, encodeClientHello({ extensions: [...goodHello().spec.extensions!, ext.sni('a.b.example.com')] }), 'unrecognized_name', config({ sniStrict: true }));
  // By default a name no certificate serves gets the first certificate, as nginx's default server.
  const conn = new ServerConnection(config());
  const c = await fullHandshake(conn, { extra: [ext.sni('a.b.example.com')] });
  t.ok(conn.established, 'an unknown name is served');
  t.same(c.messages[1]!.body.subarray(7, 7 + certs.ec.chain[0]!.length), certs.ec.chain[0], 'with the first certificate');
});

t.test('ALPN follows the server preference', async (t) => {
  const conn = new ServerConnection(config());
  await fullHandshake(conn, { extra: [ext.alpn(['http/1.1', 'h2'])] });
  t.equal(conn.negotiated.alpn, 'h2');
});

t.test('middlebox compatibility: session id echoed and one CCS sent', async (t) => {
  const conn = new ServerConnection(config());
  const sid = Buffer.alloc(32, 7);
  const c = await fullHandshake(conn, { sessionId: sid });
  t.same(c.serverHello.sessionId, sid);
  t.ok(c.sawCcs, 'fake CCS after ServerHello');
  const conn2 = new ServerConnection(config());
  const c2 = await fullHandshake(conn2);
  t.notOk(c2.sawCcs, 'no CCS without a session id');
});

async function retryHello(cfg = config()): Promise<{ conn: ServerConnection; ch1: Buffer; hrr: Buffer; spec1: ReturnType<typeof encodeClientHello> }> {
  const conn = new ServerConnection(cfg);
  // Client supports P-384 and x25519 but only sent a share for a group we lack.
  const ch1 = encodeClientHello({ random: Buffer.alloc(32, 1), extensions: [ext.versions(), ext.groups([0x001a, NamedGroup.secp384r1]), ext.sigAlgs([0x0403]), ext.keyShares([{ group: 0x001a, key: Buffer.alloc(133, 4) }])] });
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch1));
  return { conn, ch1, hrr: out.subarray(5, 5 + out.readUInt16BE(3)), spec1: ch1 };
}

t.test('HelloRetryRequest then a correct second ClientHello completes (message_hash transcript)', async (t) => {
  const { conn, ch1, hrr } = await retryHello();
  t.same(hrr.subarray(6, 38), HRR_RANDOM, 'HRR random');
  t.match(hrr.toString('hex'), /00330002 0018/.source.replace(' ', ''), 'key_share selects secp384r1');
  const key = (await import('../src/tls/suites.js')).EphemeralKey.generate(NamedGroup.secp384r1);
  const ch2 = encodeClientHello({ random: Buffer.alloc(32, 1), extensions: [ext.versions(), ext.groups([0x001a, NamedGroup.secp384r1]), ext.sigAlgs([0x0403]), ext.keyShares([{ group: NamedGroup.secp384r1, key: key.publicBytes() }])] });
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch2));
  const prefix = [Buffer.concat([Buffer.from([254, 0, 0, 32]), createHash('sha256').update(ch1).digest()]), hrr];
  const c = readServerFlight(ch2, key, out, undefined, prefix);
  await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
  t.ok(conn.established, 'the server accepted a Finished over message_hash(CH1) || HRR || CH2 || ...');
  t.equal(conn.negotiated.group, NamedGroup.secp384r1);
});

t.test('second ClientHello checks', async (t) => {
  const base = { random: Buffer.alloc(32, 1) };
  const share384 = (await import('../src/tls/suites.js')).EphemeralKey.generate(NamedGroup.secp384r1).publicBytes();
  const cases: Array<[string, Buffer, AlertName]> = [
    ['still no usable share (a second HRR is never sent) → illegal_parameter', encodeClientHello({ ...base, extensions: [ext.versions(), ext.groups([0x001a, NamedGroup.secp384r1]), ext.sigAlgs([0x0403]), ext.keyShares([{ group: 0x001a, key: Buffer.alloc(133, 4) }])] }), 'illegal_parameter'],
    ['changed random → illegal_parameter', encodeClientHello({ random: Buffer.alloc(32, 2), extensions: [ext.versions(), ext.groups([0x001a, NamedGroup.secp384r1]), ext.sigAlgs([0x0403]), ext.keyShares([{ group: NamedGroup.secp384r1, key: share384 }])] }), 'illegal_parameter'],
    ['changed signature_algorithms → illegal_parameter', encodeClientHello({ ...base, extensions: [ext.versions(), ext.groups([0x001a, NamedGroup.secp384r1]), ext.sigAlgs([0x0804]), ext.keyShares([{ group: NamedGroup.secp384r1, key: share384 }])] }), 'illegal_parameter'],
    ['added early_data → illegal_parameter', encodeClientHello({ ...base, extensions: [ext.versions(), ext.groups([0x001a, NamedGroup.secp384r1]), ext.sigAlgs([0x0403]), ext.keyShares([{ group: NamedGroup.secp384r1, key: share384 }]), ext.earlyData()] }), 'illegal_parameter'],
    ['missing key_share → missing_extension', encodeClientHello({ ...base, extensions: [ext.versions(), ext.groups([0x001a, NamedGroup.secp384r1]), ext.sigAlgs([0x0403])] }), 'missing_extension'],
  ];
  for (const [name, ch2, alert] of cases) {
    await t.test(name, async (t) => {
      const { conn } = await retryHello();
      await exchange(conn, plaintextRecords(ContentType.handshake, ch2));
      expectAlert(t, conn, alert);
    });
  }
});

t.test('a bad client Finished → decrypt_error', async (t) => {
  const conn = new ServerConnection(config());
  const { spec, key } = goodHello();
  const ch = encodeClientHello(spec);
  const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
  c.finished[c.finished.length - 1]! ^= 1;
  await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
  expectAlert(t, conn, 'decrypt_error');
  t.notOk(conn.established);
});

t.test('ChangeCipherSpec rules', async (t) => {
  const ccs = record(ContentType.change_cipher_spec, Buffer.from([1]));
  await t.test('before any ClientHello → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    await exchange(conn, ccs);
    expectAlert(t, conn, 'unexpected_message');
  });
  const afterHello = async (): Promise<{ conn: ServerConnection; c: ReturnType<typeof readServerFlight> }> => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello({ sessionId: Buffer.alloc(32, 3) });
    const ch = encodeClientHello(spec);
    return { conn, c: readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch))) };
  };
  await t.test('one CCS between ClientHello and Finished is ignored', async (t) => {
    const { conn, c } = await afterHello();
    await exchange(conn, Buffer.concat([ccs, c.sealer.seal(ContentType.handshake, c.finished)]));
    t.ok(conn.established);
  });
  await t.test('a second CCS → unexpected_message', async (t) => {
    const { conn } = await afterHello();
    await exchange(conn, ccs);
    t.equal(conn.error, null, 'one is tolerated');
    await exchange(conn, ccs);
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('CCS with payload 0x02 → unexpected_message', async (t) => {
    const { conn } = await afterHello();
    await exchange(conn, record(ContentType.change_cipher_spec, Buffer.from([2])));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('encrypted CCS → unexpected_message', async (t) => {
    const { conn, c } = await afterHello();
    await exchange(conn, c.sealer.seal(ContentType.change_cipher_spec, Buffer.from([1])));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('CCS after the handshake → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    await fullHandshake(conn);
    await exchange(conn, ccs);
    expectAlert(t, conn, 'unexpected_message');
  });
});

t.test('record-level rules', async (t) => {
  await t.test('plaintext application data before the handshake → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    await exchange(conn, record(ContentType.application_data, Buffer.from('hi')));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('unknown record type → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    await exchange(conn, record(0x19, Buffer.from('hi')));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('alert record of 3 bytes → decode_error', async (t) => {
    const conn = new ServerConnection(config());
    await exchange(conn, record(ContentType.alert, Buffer.from([2, 40, 0])));
    expectAlert(t, conn, 'decode_error');
  });
  await t.test('a ClientHello split into 1-byte records is reassembled', async (t) => {
    const conn = new ServerConnection(config());
    const { spec } = goodHello();
    const ch = encodeClientHello(spec);
    const recs = [...ch].map((b) => record(ContentType.handshake, Buffer.from([b])));
    await exchange(conn, Buffer.concat(recs));
    t.equal(conn.error, null);
    t.equal(conn.stateName, 'ExpectFinished');
  });
  await t.test('handshake bytes after the ClientHello in the same record (key change mid-message) → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const ch = encodeClientHello(goodHello().spec);
    await exchange(conn, plaintextRecords(ContentType.handshake, Buffer.concat([ch, Buffer.from([20, 0])])));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('plaintext handshake record after the keys changed → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const ch = encodeClientHello(goodHello().spec);
    await exchange(conn, plaintextRecords(ContentType.handshake, ch));
    await exchange(conn, plaintextRecords(ContentType.handshake, Buffer.from([20, 0, 0, 32, ...Buffer.alloc(32)])));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('a tampered encrypted record → bad_record_mac', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello();
    const ch = encodeClientHello(spec);
    const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
    const rec = c.sealer.seal(ContentType.handshake, c.finished);
    rec[rec.length - 1]! ^= 0x80;
    await exchange(conn, rec);
    expectAlert(t, conn, 'bad_record_mac');
  });
  await t.test('33 consecutive empty application data records → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    for (let i = 0; i < 32; i++) await exchange(conn, c.appSealer.seal(ContentType.application_data, Buffer.alloc(0)));
    t.equal(conn.error, null, '32 are tolerated');
    await exchange(conn, c.appSealer.seal(ContentType.application_data, Buffer.alloc(0)));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('application data is delivered as a data event', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    const ev: ConnectionEvent[] = [];
    await exchange(conn, c.appSealer.seal(ContentType.application_data, Buffer.from('hello')), ev);
    t.same(ev.map((e) => (e.type === 'data' ? e.data.toString() : e.type)), ['hello']);
  });
  await t.test('close_notify is reported and further input ignored', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    const ev: ConnectionEvent[] = [];
    await exchange(conn, Buffer.concat([c.appSealer.seal(ContentType.alert, Buffer.from([1, 0])), c.appSealer.seal(ContentType.application_data, Buffer.from('late'))]), ev);
    t.same(ev.map((e) => e.type), ['close_notify']);
    t.ok(conn.peerClosed);
  });
  await t.test('a received fatal alert ends the connection without an answer', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    const out = await exchange(conn, c.appSealer.seal(ContentType.alert, Buffer.from([2, 40])));
    t.ok(conn.error instanceof TlsAlertError && conn.error.received);
    t.equal(out.length, 0, 'nothing sent back');
  });
});

t.test('KeyUpdate', async (t) => {
  const keyUpdate = (req: number): Buffer => Buffer.from([24, 0, 0, 1, req]);
  await t.test('update_requested makes the server answer and rekey both ways', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    const out = await exchange(conn, c.appSealer.seal(ContentType.handshake, keyUpdate(1)));
    const ans = c.appOpener.open({ type: 23, version: 0x0303, fragment: out.subarray(5) });
    t.same([...ans.content], [24, 0, 0, 1, 0], 'server KeyUpdate(update_not_requested) under the old key');
    conn.writeApplicationData(Buffer.from('after'));
    const { nextTrafficSecret, trafficKeys } = await import('../src/tls/keyschedule.js');
    const { RecordOpener, RecordSealer } = await import('../src/tls/record.js');
    const sk = trafficKeys(c.suite, nextTrafficSecret(c.suite.hash, c.app.server));
    const data = new RecordOpener(c.suite, sk.key, sk.iv).open({ type: 23, version: 0x0303, fragment: conn.takeOutput()!.subarray(5) });
    t.equal(data.content.toString(), 'after', 'new server key in use');
    const ck = trafficKeys(c.suite, nextTrafficSecret(c.suite.hash, c.app.client));
    const ev: ConnectionEvent[] = [];
    await exchange(conn, new RecordSealer(c.suite, ck.key, ck.iv).seal(ContentType.application_data, Buffer.from('new key')), ev);
    t.same(ev.map((e) => (e.type === 'data' ? e.data.toString() : e.type)), ['new key'], 'new client key accepted');
  });
  await t.test('request_update 2 → illegal_parameter', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    await exchange(conn, c.appSealer.seal(ContentType.handshake, keyUpdate(2)));
    expectAlert(t, conn, 'illegal_parameter');
  });
  await t.test('33 KeyUpdates without application data → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    const { nextTrafficSecret, trafficKeys } = await import('../src/tls/keyschedule.js');
    const { RecordSealer } = await import('../src/tls/record.js');
    let secret = c.app.client;
    let sealer = c.appSealer;
    for (let i = 0; i < 33; i++) {
      await exchange(conn, sealer.seal(ContentType.handshake, keyUpdate(0)));
      secret = nextTrafficSecret(c.suite.hash, secret);
      const k = trafficKeys(c.suite, secret);
      sealer = new RecordSealer(c.suite, k.key, k.iv);
      if (i < 31) t.equal(conn.error, null);
    }
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('past the read soft limit the server asks once for a KeyUpdate; the hard limit closes with TLS_ERR_SEQ_EXHAUSTED', async (t) => {
    const conn = new ServerConnection(config({ seqLimits: { soft: 2n, hard: 4n } }));
    const c = await fullHandshake(conn);
    const { nextTrafficSecret, trafficKeys } = await import('../src/tls/keyschedule.js');
    const { RecordOpener } = await import('../src/tls/record.js');
    const send = (s: string): Promise<Buffer> => exchange(conn, c.appSealer.seal(ContentType.application_data, Buffer.from(s)));
    t.equal((await send('1')).length, 0, 'below the soft limit: nothing to say');
    const out = await send('2');
    t.ok(out.length > 0, 'a record went out at the soft limit');
    const ku = c.appOpener.open({ type: 23, version: 0x0303, fragment: out.subarray(5) });
    t.same([ku.type, ...ku.content], [ContentType.handshake, 24, 0, 0, 1, 1], 'KeyUpdate(update_requested) under the old server key');
    t.equal((await send('3')).length, 0, 'asked only once per client key');
    t.equal((await send('4')).length, 0);
    t.equal(conn.error, null, 'the hard limit allows 4 records');
    const closing = await send('5'); // refused before decryption
    t.equal(conn.error?.code, 'TLS_ERR_SEQ_EXHAUSTED', `closed for exhaustion, not bad_record_mac (${conn.error?.message})`);
    const sk = trafficKeys(c.suite, nextTrafficSecret(c.suite.hash, c.app.server));
    const alert = new RecordOpener(c.suite, sk.key, sk.iv).open({ type: 23, version: 0x0303, fragment: closing.subarray(5) });
    t.same([alert.type, ...alert.content], [ContentType.alert, 1, 0], 'close_notify under the new server key');
    t.throws(() => conn.writeApplicationData(Buffer.from('x')), { code: 'TLS_ERR_SEQ_EXHAUSTED' }, 'later writes fail with the same error');
  });
  await t.test('a ClientHello after the handshake → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    await exchange(conn, c.appSealer.seal(ContentType.handshake, encodeClientHello(goodHello().spec)));
    expectAlert(t, conn, 'unexpected_message');
  });
});

t.test('the asynchronous signature', async (t) => {
  await t.test('input arriving while the signature is pending is held, then processed in order', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello({ sessionId: Buffer.alloc(32, 5) });
    const ch = encodeClientHello(spec);
    conn.feed(plaintextRecords(ContentType.handshake, ch));
    const first = conn.takeOutput()!;
    const sign = conn.takeEvents().find((e) => e.type === 'sign');
    t.ok(sign, 'a signature was requested');
    t.equal(conn.wantsInput, false, 'paused');
    conn.feed(record(ContentType.change_cipher_spec, Buffer.from([1])));
    t.equal(conn.error, null, 'held, not processed');
    if (sign?.type !== 'sign') return;
    conn.resumeWithSignature(sign.request.epoch, await sign.request.signer.sign(sign.request.scheme, sign.request.content));
    const c = readServerFlight(ch, key, Buffer.concat([first, conn.takeOutput()!]));
    await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
    t.ok(conn.established);
  });
  await t.test('a signature failure → internal_error; a late answer is dropped', async (t) => {
    const conn = new ServerConnection(config());
    conn.feed(plaintextRecords(ContentType.handshake, encodeClientHello(goodHello().spec)));
    const sign = conn.takeEvents().find((e) => e.type === 'sign');
    if (sign?.type !== 'sign') return t.fail('no sign event');
    conn.takeOutput();
    t.ok(conn.failSignature(sign.request.epoch, 'HSM unavailable'));
    expectAlert(t, conn, 'internal_error');
    t.notOk(conn.resumeWithSignature(sign.request.epoch, Buffer.alloc(64)), 'late signature dropped');
  });
  await t.test('a signer with no compatible key or mechanism → handshake_failure; any other rejection → internal_error', async (t) => {
    const { NoCompatibleKeyError } = await import('../src/tls/signer.js');
    const coded = (code: string): Error => Object.assign(new Error(`coded ${code}`), { code });
    const cases: Array<[unknown, AlertName]> = [
      [new NoCompatibleKeyError('no key for rsa_pss_rsae_sha512'), 'handshake_failure'],
      [coded('ENGINE_ERR_UNSUPPORTED'), 'handshake_failure'],
      [coded('ENGINE_ERR_KEY_NOT_FOUND'), 'handshake_failure'],
      [coded('ENGINE_ERR_BACKEND'), 'internal_error'],
      [new Error('HSM link down'), 'internal_error'],
      ['no signature within 10 ms', 'internal_error'],
    ];
    for (const [err, alert] of cases) {
      const conn = new ServerConnection(config());
      conn.feed(plaintextRecords(ContentType.handshake, encodeClientHello(goodHello().spec)));
      const sign = conn.takeEvents().find((e) => e.type === 'sign');
      if (sign?.type !== 'sign') return t.fail('no sign event');
      conn.takeOutput();
      conn.failSignature(sign.request.epoch, err);
      expectAlert(t, conn, alert);
      const out = conn.takeOutput()!;
      t.equal(out.length, 5 + 2 + 1 + 16, 'one alert record under the handshake key');
    }
  });
  await t.test('a signature that does not verify is never sent (internal_error)', async (t) => {
    const conn = new ServerConnection(config({}, new SoftSigner(certs.ec.key, { fault: 'garbage' })));
    const ch = encodeClientHello(goodHello().spec);
    await exchange(conn, plaintextRecords(ContentType.handshake, ch));
    expectAlert(t, conn, 'internal_error');
  });
  await t.test('an alert under the client handshake key while paused ends the handshake at once', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello();
    const ch = encodeClientHello(spec);
    conn.feed(plaintextRecords(ContentType.handshake, ch));
    const sign = conn.takeEvents().find((e) => e.type === 'sign');
    t.ok(sign, 'paused for the signature');
    const { suite, hs } = handshakeSecretsFromServerHello(ch, key, conn.takeOutput()!);
    const { trafficKeys } = await import('../src/tls/keyschedule.js');
    const { RecordSealer } = await import('../src/tls/record.js');
    const k = trafficKeys(suite, hs.client);
    conn.feed(new RecordSealer(suite, k.key, k.iv).seal(ContentType.alert, Buffer.from([2, 48])));
    t.ok(conn.error instanceof TlsAlertError && conn.error.received && conn.error.alert === AlertDescription.unknown_ca, `peer's unknown_ca acted on (${conn.error?.message})`);
    t.ok(conn.takeEvents().some((e) => e.type === 'fatal'), 'a fatal event, so the driver aborts the sign');
    if (sign?.type === 'sign') t.notOk(conn.resumeWithSignature(sign.request.epoch, Buffer.alloc(64)), 'the late signature is dropped');
  });
  await t.test('other encrypted input while paused is decrypted in order, held, then processed', async (t) => {
    const conn = new ServerConnection(config());
    const { spec, key } = goodHello({ sessionId: Buffer.alloc(32, 7) });
    const ch = encodeClientHello(spec);
    conn.feed(plaintextRecords(ContentType.handshake, ch));
    const sign = conn.takeEvents().find((e) => e.type === 'sign');
    if (sign?.type !== 'sign') return t.fail('no sign event');
    const first = conn.takeOutput()!;
    conn.feed(record(ContentType.change_cipher_spec, Buffer.from([1])));
    // An early (premature) client Finished: held, and refused only once the state sees it.
    const { suite, hs } = handshakeSecretsFromServerHello(ch, key, first);
    const { trafficKeys } = await import('../src/tls/keyschedule.js');
    const { RecordSealer } = await import('../src/tls/record.js');
    const k = trafficKeys(suite, hs.client);
    conn.feed(new RecordSealer(suite, k.key, k.iv).seal(ContentType.handshake, Buffer.from([20, 0, 0, 32, ...Buffer.alloc(32)])));
    t.equal(conn.error, null, 'held while paused');
    conn.resumeWithSignature(sign.request.epoch, await sign.request.signer.sign(sign.request.scheme, sign.request.content));
    expectAlert(t, conn, 'decrypt_error');
  });
  await t.test('a plaintext alert while paused ends the handshake at once', async (t) => {
    const conn = new ServerConnection(config());
    conn.feed(plaintextRecords(ContentType.handshake, encodeClientHello(goodHello().spec)));
    conn.feed(record(ContentType.alert, Buffer.from([2, 48])));
    t.ok(conn.error instanceof TlsAlertError && conn.error.received, 'peer alert seen while paused');
  });
});

t.test('offered early data is skipped, then the handshake continues', async (t) => {
  const conn = new ServerConnection(config());
  const { spec, key } = goodHello({ extra: [ext.earlyData()] });
  const ch = encodeClientHello(spec);
  const c = readServerFlight(ch, key, await exchange(conn, plaintextRecords(ContentType.handshake, ch)));
  t.notOk(c.messages[0]!.body.includes(Buffer.from([0, 42])), 'EE does not accept early_data');
  const early = record(ContentType.application_data, Buffer.alloc(300, 0xee));
  await exchange(conn, Buffer.concat([early, early, c.sealer.seal(ContentType.handshake, c.finished)]));
  t.ok(conn.established);
  t.equal(conn.counters.earlyDataSkipped, 600);
});

t.test('PSK resumption', async (t) => {
  const { TicketKeys } = await import('../src/tls/tickets.js');
  const { KeySchedule13, finishedVerifyData, resumptionPsk } = await import('../src/tls/keyschedule.js');
  const ticketKeys = new TicketKeys();
  const cfg = config({ ticketKeys, ticketCount: 2 });
  const first = await fullHandshake(new ServerConnection(cfg), { extra: [ext.pskModes([1])] });
  // Two NewSessionTickets arrive under the server application key.
  const body = first.appOpener.open({ type: 23, version: 0x0303, fragment: first.afterFinished.subarray(5, 5 + first.afterFinished.readUInt16BE(3)) }).content;
  const nsts: Array<{ ageAdd: number; nonce: Buffer; ticket: Buffer }> = [];
  for (const r = new Reader(body); r.remaining;) {
    t.equal(r.u8(), 4, 'NewSessionTicket');
    const m = r.sub(3);
    t.equal(m.u32(), 3600, 'the configured lifetime');
    nsts.push({ ageAdd: m.u32(), nonce: Buffer.from(m.vec8()), ticket: Buffer.from(m.vec16()) });
    t.equal(m.vec16().length, 0, 'no early_data extension');
    m.expectEnd();
  }
  t.equal(nsts.length, 2, 'two tickets by default');
  first.transcript.update(first.finished);
  const rms = first.schedule.resumptionMasterSecret(first.transcript.digest());
  const nst = nsts[0]!;
  const psk = resumptionPsk('sha256', rms, nst.nonce);

  const resumeHello = (binderFix: (b: Buffer) => void): { ch: Buffer; key: ReturnType<typeof goodHello>['key'] } => {
    const { spec, key } = goodHello({ extra: [ext.pskModes([1]), ext.psk([{ identity: nst.ticket, age: (nst.ageAdd + 50) >>> 0 }], [Buffer.alloc(32)])] });
    const ch = encodeClientHello(spec);
    const truncated = ch.subarray(0, ch.length - 35);
    const binder = finishedVerifyData('sha256', new KeySchedule13(first.suite, psk).binderKey('res'), createHash('sha256').update(truncated).digest());
    binderFix(binder);
    binder.copy(ch, ch.length - 32);
    return { ch, key };
  };

  await t.test('no NewSessionTicket for a client that offers no psk_key_exchange_modes, or only psk_ke (RFC 8446 §4.2.9)', async (t) => {
    for (const [what, extra] of [['no modes', []], ['psk_ke only', [ext.pskModes([0])]]] as const) {
      const c = await fullHandshake(new ServerConnection(cfg), { extra: [...extra] });
      t.equal(c.afterFinished.length, 0, `${what}: nothing after the client Finished`);
    }
    const both = await fullHandshake(new ServerConnection(cfg), { extra: [ext.pskModes([0, 1])] });
    t.ok(both.afterFinished.length > 0, 'psk_ke and psk_dhe_ke: tickets');
  });
  await t.test('a valid ticket resumes without Certificate or signature', async (t) => {
    const conn = new ServerConnection(cfg);
    const { ch, key } = resumeHello(() => undefined);
    const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
    const c = readServerFlight(ch, key, out, psk);
    t.same(c.messages.map((m) => m.type), [8, 20], 'EE and Finished only');
    await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
    t.ok(conn.established);
    t.ok(conn.negotiated.resumed);
  });
  await t.test('a bad binder → decrypt_error', async (t) => {
    const conn = new ServerConnection(cfg);
    const { ch } = resumeHello((b) => { b[0]! ^= 1; });
    await exchange(conn, plaintextRecords(ContentType.handshake, ch));
    expectAlert(t, conn, 'decrypt_error');
  });
  await t.test('an unknown ticket falls back to a full handshake', async (t) => {
    const conn = new ServerConnection(config({ ticketKeys: new TicketKeys() }));
    const { ch } = resumeHello(() => undefined);
    const ev: ConnectionEvent[] = [];
    conn.feed(plaintextRecords(ContentType.handshake, ch));
    ev.push(...conn.takeEvents());
    t.ok(ev.some((e) => e.type === 'sign'), 'a signature is needed: not resumed');
    t.notOk(conn.negotiated.resumed);
  });
});

t.test('alerts and closing', async (t) => {
  await t.test('an unknown alert level → illegal_parameter', async (t) => {
    const conn = new ServerConnection(config());
    await exchange(conn, record(ContentType.alert, Buffer.from([3, 0])));
    expectAlert(t, conn, 'illegal_parameter');
  });
  await t.test('a warning alert other than close_notify/user_canceled ends the connection', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    await exchange(conn, c.appSealer.seal(ContentType.alert, Buffer.from([1, AlertDescription.bad_certificate])));
    t.ok(conn.error instanceof TlsAlertError && conn.error.received && conn.error.alert === AlertDescription.bad_certificate);
  });
  await t.test('user_canceled warnings are counted: the fifth is fatal', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    for (let i = 0; i < 4; i++) await exchange(conn, c.appSealer.seal(ContentType.alert, Buffer.from([1, AlertDescription.user_canceled])));
    t.equal(conn.error, null);
    await exchange(conn, c.appSealer.seal(ContentType.alert, Buffer.from([1, AlertDescription.user_canceled])));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('after a fatal error, writes fail fast with the original error', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    await exchange(conn, c.appSealer.seal(ContentType.application_data, Buffer.alloc(0)).fill(0, 5));
    const original = conn.error;
    t.ok(original);
    let thrown: unknown;
    try { conn.writeApplicationData(Buffer.from('x')); } catch (e) { thrown = e; }
    t.equal(thrown, original, 'the very same error object');
  });
  await t.test('half-close: after the peer close_notify we can still send, then close_notify', async (t) => {
    const conn = new ServerConnection(config());
    const c = await fullHandshake(conn);
    await exchange(conn, c.appSealer.seal(ContentType.alert, Buffer.from([1, 0])));
    t.ok(conn.peerClosed);
    conn.writeApplicationData(Buffer.from('last words'));
    conn.close();
    const out = conn.takeOutput()!;
    const first = c.appOpener.open({ type: 23, version: 0x0303, fragment: out.subarray(5, 5 + out.readUInt16BE(3)) });
    t.equal(first.content.toString(), 'last words');
    const rest = out.subarray(5 + out.readUInt16BE(3));
    const alert = c.appOpener.open({ type: 23, version: 0x0303, fragment: rest.subarray(5) });
    t.same([alert.type, ...alert.content], [ContentType.alert, 1, 0], 'close_notify');
    t.throws(() => conn.writeApplicationData(Buffer.from('more')), { code: 'TLS_ERR_WRITE_AFTER_CLOSE' });
  });
});
