// TLS 1.2 state machine over the sans-IO ServerConnection with a scripted client: the full and
// abbreviated handshakes, version choice, suite/certificate/scheme choice, and every refusal
// issue 9 lists, each with the alert a client would see.
import t, { type Test } from 'tap';
import { prepareCertEntry } from '../src/tls/certselect.js';
import { ServerConnection } from '../src/tls/connection.js';
import { AlertDescription, TlsAlertError, type AlertName } from '../src/tls/alert.js';
import type { ServerHandshakeConfig } from '../src/tls/hello12.js';
import { ContentType, plaintextRecords } from '../src/tls/record.js';
import { SignatureScheme } from '../src/tls/signer.js';
import { NamedGroup } from '../src/tls/suites.js';
import { TicketKeys } from '../src/tls/tickets.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';
import { exchange, ext, fullHandshake, records } from './helpers/tls13-client.js';
import {
  ALL_SUITES_12, CCS, Pkcs1SoftSigner, Suite12, clientFlight12, clientFlightBytes, ext12, full12, hello12,
  parseFlight12, skeVerifies, start12,
} from './helpers/tls12-client.js';

const certs = makeTestCerts(['localhost', '*.example.com']);
t.teardown(() => certs.cleanup());

function config(over: Partial<ServerHandshakeConfig> = {}): ServerHandshakeConfig {
  return {
    certificates: [
      prepareCertEntry({ chain: certs.ec.chain, signer: new SoftSigner(certs.ec.key) }),
      prepareCertEntry({ chain: certs.rsa.chain, signer: new Pkcs1SoftSigner(certs.rsa.key) }),
    ],
    alpnProtocols: ['h2', 'http/1.1'], ticketCount: 2, ticketLifetimeS: 3600, ticketKeys: new TicketKeys(),
    verifyAfterSign: () => true, now: Date.now, ...over,
  };
}

function expectAlert(t: Test, conn: ServerConnection, alert: AlertName): void {
  const err = conn.error;
  t.ok(err instanceof TlsAlertError && !err.received, `the server raised an alert (${err?.message})`);
  t.equal(err instanceof TlsAlertError ? err.alert : -1, AlertDescription[alert], `alert is ${alert}: ${err?.message}`);
}

/** A ClientHello that must fail with `alert`, answered by a plaintext fatal alert. */
async function helloFails(t: Test, ch: Buffer, alert: AlertName, cfg = config()): Promise<void> {
  const conn = new ServerConnection(cfg);
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  expectAlert(t, conn, alert);
  t.same([...out.subarray(-7)], [21, 3, 3, 0, 2, 2, AlertDescription[alert]], 'a fatal alert record went out');
}

const SENTINEL = Buffer.from('444f574e47524401', 'hex');
const withP384 = config();
withP384.certificates = [...withP384.certificates, prepareCertEntry({ chain: certs.ec384.chain, signer: new SoftSigner(certs.ec384.key) })];

t.test('full handshake: every suite × group completes, the SKE signature and both Finished verify, data flows', async (t) => {
  for (const suite of ALL_SUITES_12) {
    for (const group of [NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1]) {
      // supported_groups also limits the ECDSA certificate's curve in TLS 1.2: X25519 needs P-256 beside it.
      const conn = new ServerConnection(withP384);
      const { f, c } = await full12(conn, { suites: [suite], groups: group === NamedGroup.x25519 ? [group, NamedGroup.secp256r1] : [group] });
      t.equal(f.suite.id, suite);
      t.equal(f.ske?.group, group);
      t.ok(skeVerifies(f), `SKE signature verifies (${f.suite.name}, group ${group})`);
      t.ok(conn.established, 'established after the client Finished');
      t.equal(conn.negotiated.suite?.version, 'TLSv1.2');
      conn.writeApplicationData(Buffer.from('from server'));
      const rec = records(conn.takeOutput()!)[0]!;
      t.equal(c.opener.open({ type: rec.type, version: 0x0303, fragment: rec.fragment }).content.toString(), 'from server');
      conn.feed(c.sealer.seal(ContentType.application_data, Buffer.from('from client')));
      const data = conn.takeEvents().find((e) => e.type === 'data');
      t.equal(data?.type === 'data' ? data.data.toString() : '', 'from client');
    }
  }
});

t.test('ServerHello: EMS, empty renegotiation_info, point formats, SNI ack, ALPN; empty session id; the flight order', async (t) => {
  const conn = new ServerConnection(config());
  const { f } = await start12(conn, { extra: [ext.sni('localhost'), ext.alpn(['http/1.1'])], sessionId: Buffer.alloc(32, 7) });
  t.same(f.transcript.slice(1).map((m) => m[0]), [2, 11, 12, 14], 'ServerHello, Certificate, ServerKeyExchange, ServerHelloDone');
  t.same(f.extensions.get(23), Buffer.alloc(0), 'extended_master_secret');
  t.same(f.extensions.get(0xff01), Buffer.from([0]), 'renegotiation_info with an empty renegotiated_connection');
  t.same(f.extensions.get(11), Buffer.from([1, 0]), 'ec_point_formats [uncompressed]');
  t.same(f.extensions.get(0), Buffer.alloc(0), 'server_name acknowledged');
  t.same(f.extensions.get(16), Buffer.from([0, 9, 8, ...Buffer.from('http/1.1')]), 'ALPN');
  t.notOk(f.extensions.has(35), 'no session_ticket: the client did not ask');
  t.equal(f.sessionId.length, 0, 'no session-id cache: empty session id on a full handshake');
  t.equal(conn.negotiated.alpn, 'http/1.1');
});

t.test('extensions the client did not send are not in the ServerHello', async (t) => {
  const conn = new ServerConnection(config());
  const { f } = await start12(conn, { omit: [0xff01, 11] });
  t.notOk(f.extensions.has(0xff01));
  t.notOk(f.extensions.has(11));
  const scsv = await start12(new ServerConnection(config()), { omit: [0xff01], suites: [Suite12.ECDSA_AES128, 0x00ff] });
  t.same(scsv.f.extensions.get(0xff01), Buffer.from([0]), 'TLS_EMPTY_RENEGOTIATION_INFO_SCSV is acknowledged with the extension');
});

t.test('downgrade sentinel: set when TLS 1.3 is enabled, absent when maxVersion is 1.2', async (t) => {
  const on = await start12(new ServerConnection(config()));
  t.same(on.f.serverRandom.subarray(24), SENTINEL);
  const off = await start12(new ServerConnection(config({ maxVersion: '1.2' })));
  t.notSame(off.f.serverRandom.subarray(24), SENTINEL);
});

t.test('version negotiation', async (t) => {
  await t.test('supported_versions with 1.3 and 1.2 → TLS 1.3 by default', async (t) => {
    const conn = new ServerConnection(config());
    await fullHandshake(conn, { extra: [ext12.ems()] });
    t.equal(conn.negotiated.suite?.version, 'TLSv1.3');
  });
  await t.test('… and TLS 1.2 with maxVersion 1.2', async (t) => {
    const conn = new ServerConnection(config({ maxVersion: '1.2' }));
    const { f } = await start12(conn, { extra: [ext.versions([0x0304, 0x0303])] });
    t.equal(f.suite.version, 'TLSv1.2');
    t.notSame(f.serverRandom.subarray(24), SENTINEL);
  });
  await t.test('supported_versions [1.2] → TLS 1.2', async (t) => {
    const { f } = await start12(new ServerConnection(config()), { extra: [ext.versions([0x0303])] });
    t.equal(f.suite.version, 'TLSv1.2');
  });
  await t.test('TLS 1.1 (legacy_version 0x0302) → protocol_version', (t) => helloFails(t, hello12({ legacyVersion: 0x0302 }), 'protocol_version'));
  await t.test('TLS 1.0 → protocol_version', (t) => helloFails(t, hello12({ legacyVersion: 0x0301 }), 'protocol_version'));
  await t.test('SSL 3.0 → protocol_version', (t) => helloFails(t, hello12({ legacyVersion: 0x0300 }), 'protocol_version'));
  await t.test('supported_versions [1.1, 1.0] → protocol_version', (t) => helloFails(t, hello12({ extra: [ext.versions([0x0302, 0x0301])] }), 'protocol_version'));
  await t.test('minVersion 1.3 refuses a TLS 1.2 hello → protocol_version', (t) => helloFails(t, hello12(), 'protocol_version', config({ minVersion: '1.3' })));
  await t.test('TLS_FALLBACK_SCSV in a 1.2 hello while 1.3 is enabled → inappropriate_fallback', (t) =>
    helloFails(t, hello12({ suites: [Suite12.ECDSA_AES128, 0x5600] }), 'inappropriate_fallback'));
  await t.test('TLS_FALLBACK_SCSV from a TLS 1.1 client → inappropriate_fallback, not protocol_version', (t) =>
    helloFails(t, hello12({ legacyVersion: 0x0302, suites: [0xc013, 0x5600] }), 'inappropriate_fallback'));
  await t.test('TLS_FALLBACK_SCSV is fine when 1.2 is our highest version', async (t) => {
    const conn = new ServerConnection(config({ maxVersion: '1.2' }));
    await full12(conn, { suites: [Suite12.ECDSA_AES128, 0x5600] });
    t.ok(conn.established);
  });
});

t.test('ClientHello refusals', async (t) => {
  await t.test('CBC-only suites → handshake_failure', (t) => helloFails(t, hello12({ suites: [0xc009, 0xc013, 0xc014, 0x002f, 0x0035] }), 'handshake_failure'));
  await t.test('RSA key exchange only → handshake_failure', (t) => helloFails(t, hello12({ suites: [0x009c, 0x009d, 0x003c] }), 'handshake_failure'));
  await t.test('no signature_algorithms (implicit SHA-1) → handshake_failure', (t) => helloFails(t, hello12({ omit: [13] }), 'handshake_failure'));
  await t.test('no extended_master_secret → handshake_failure', (t) => helloFails(t, hello12({ omit: [23] }), 'handshake_failure'));
  await t.test('non-empty renegotiation_info in an initial handshake → handshake_failure', (t) =>
    helloFails(t, hello12({ omit: [0xff01], extra: [ext12.reneg(Buffer.alloc(12, 1))] }), 'handshake_failure'));
  await t.test('no null compression → illegal_parameter', (t) => helloFails(t, hello12({ compression: [1] }), 'illegal_parameter'));
  await t.test('ec_point_formats without uncompressed → illegal_parameter', (t) =>
    helloFails(t, hello12({ omit: [11], extra: [ext12.pointFormats([1, 2])] }), 'illegal_parameter'));
  await t.test('no supported_groups → handshake_failure', (t) => helloFails(t, hello12({ omit: [10] }), 'handshake_failure'));
  await t.test('only unknown groups → handshake_failure', (t) => helloFails(t, hello12({ groups: [0x001a, 0x0100] }), 'handshake_failure'));
  await t.test('signature_algorithms with only SHA-1 schemes → handshake_failure', (t) => helloFails(t, hello12({ sigAlgs: [0x0201, 0x0203] }), 'handshake_failure'));
  await t.test('a session id over 32 bytes → decode_error', (t) => helloFails(t, hello12({ sessionId: Buffer.alloc(33) }), 'decode_error'));
  await t.test('unknown SNI, sni: strict → unrecognized_name', (t) =>
    helloFails(t, hello12({ extra: [ext.sni('other.test')] }), 'unrecognized_name', config({ sniStrict: true })));
});

t.test('suite and certificate preference', async (t) => {
  const pick = async (suites: number[], sigAlgs?: number[]): Promise<number> => (await start12(new ServerConnection(config()), { suites, ...(sigAlgs ? { sigAlgs } : {}) })).f.suite.id;
  t.equal(await pick([Suite12.RSA_AES128, Suite12.ECDSA_AES128]), Suite12.ECDSA_AES128, 'ECDSA before RSA whatever the client order');
  t.equal(await pick([Suite12.ECDSA_CHACHA, Suite12.ECDSA_AES256, Suite12.ECDSA_AES128].reverse()), Suite12.ECDSA_AES128, 'AES-GCM first');
  t.equal(await pick([Suite12.ECDSA_CHACHA, Suite12.ECDSA_AES128]), Suite12.ECDSA_CHACHA, 'ChaCha20 when the client lists it first');
  t.equal(await pick([0x1303, 0x1301, Suite12.ECDSA_AES128, Suite12.ECDSA_CHACHA]), Suite12.ECDSA_CHACHA, 'a TLS 1.3 ChaCha20 suite listed first counts too');
  t.equal(await pick([...ALL_SUITES_12], [SignatureScheme.rsa_pss_rsae_sha256]), Suite12.RSA_AES128, 'RSA when the client cannot verify ECDSA');
  t.equal(await pick([Suite12.RSA_AES256, Suite12.RSA_CHACHA]), Suite12.RSA_AES256, 'RSA-only suites use the RSA certificate');
  const byGroups = async (groups: number[]): Promise<number> => (await start12(new ServerConnection(config()), { groups })).f.suite.id;
  t.equal(await byGroups([NamedGroup.x25519]), Suite12.RSA_AES128, 'X25519 alone: the P-256 certificate is out (RFC 8422 §5.1), RSA it is');
  t.equal(await byGroups([NamedGroup.x25519, NamedGroup.secp256r1]), Suite12.ECDSA_AES128, 'with P-256 listed the ECDSA certificate is usable');
  await helloFails(t, hello12({ suites: [Suite12.ECDSA_AES128], groups: [NamedGroup.x25519] }), 'handshake_failure');
});

t.test('ServerKeyExchange scheme: from the client list, what the key can do, and it verifies', async (t) => {
  for (const scheme of [SignatureScheme.rsa_pkcs1_sha256, SignatureScheme.rsa_pkcs1_sha384, SignatureScheme.rsa_pkcs1_sha512,
    SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512]) {
    const { f } = await start12(new ServerConnection(config()), { suites: [Suite12.RSA_AES128], sigAlgs: [scheme] });
    t.equal(f.ske?.scheme, scheme);
    t.ok(skeVerifies(f), `scheme 0x${scheme.toString(16)} verifies`);
  }
  const ec = await start12(new ServerConnection(config()), { suites: [Suite12.ECDSA_AES128], sigAlgs: [SignatureScheme.ecdsa_secp256r1_sha256] });
  t.ok(skeVerifies(ec.f), 'ecdsa_secp256r1_sha256 verifies');
  // RFC 8422 §5.1.1: in TLS 1.2 the hash is the client's pick, whatever the curve (OpenSSL does the same).
  for (const scheme of [SignatureScheme.ecdsa_secp384r1_sha384, SignatureScheme.ecdsa_secp521r1_sha512]) {
    const p256 = await start12(new ServerConnection(config()), { suites: [Suite12.ECDSA_AES128], sigAlgs: [scheme] });
    t.equal(p256.f.ske?.scheme, scheme, `a P-256 key signs with 0x${scheme.toString(16)} in TLS 1.2`);
    t.ok(skeVerifies(p256.f), `0x${scheme.toString(16)} verifies`);
  }
  await helloFails(t, hello12({ suites: [Suite12.ECDSA_AES128], sigAlgs: [SignatureScheme.ed25519] }), 'handshake_failure');
  const p384 = config({ certificates: [prepareCertEntry({ chain: certs.ec384.chain, signer: new SoftSigner(certs.ec384.key) })] });
  const r = await start12(new ServerConnection(p384), { sigAlgs: [SignatureScheme.ecdsa_secp384r1_sha384] });
  t.ok(skeVerifies(r.f), 'a P-384 key signs with ecdsa_secp384r1_sha384');
});

t.test('a signature that does not verify is never sent: internal_error', async (t) => {
  const signer = new SoftSigner(certs.ec.key, { fault: 'garbage' });
  const conn = new ServerConnection(config({ certificates: [prepareCertEntry({ chain: certs.ec.chain, signer })] }));
  await exchange(conn, plaintextRecords(ContentType.handshake, hello12()));
  expectAlert(t, conn, 'internal_error');
});

t.test('ChangeCipherSpec and Finished ordering', async (t) => {
  await t.test('CCS before ClientKeyExchange (CVE-2014-0224) → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    await start12(conn);
    await exchange(conn, CCS);
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('CCS in the same read as the ClientHello is held until the flight and then refused', async (t) => {
    const conn = new ServerConnection(config());
    await exchange(conn, Buffer.concat([plaintextRecords(ContentType.handshake, hello12()), CCS]));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('client Finished before its CCS → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const { f } = await start12(conn);
    const c = clientFlight12(f);
    await exchange(conn, Buffer.concat([plaintextRecords(ContentType.handshake, c.cke), plaintextRecords(ContentType.handshake, c.finished)]));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('an encrypted Finished without the CCS → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const { f } = await start12(conn);
    const c = clientFlight12(f);
    await exchange(conn, Buffer.concat([plaintextRecords(ContentType.handshake, c.cke), c.sealer.seal(ContentType.handshake, c.finished)]));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('bad Finished → decrypt_error', async (t) => {
    const conn = new ServerConnection(config());
    const { f } = await start12(conn);
    const c = clientFlight12(f);
    c.finished[10]! ^= 1;
    await exchange(conn, clientFlightBytes(c));
    expectAlert(t, conn, 'decrypt_error');
    t.notOk(conn.established);
  });
  await t.test('two CCS records → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const { f } = await start12(conn);
    const c = clientFlight12(f);
    await exchange(conn, Buffer.concat([plaintextRecords(ContentType.handshake, c.cke), CCS, CCS]));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('a CCS whose payload is not 0x01 → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const { f } = await start12(conn);
    const c = clientFlight12(f);
    await exchange(conn, Buffer.concat([plaintextRecords(ContentType.handshake, c.cke), Buffer.from([20, 3, 3, 0, 1, 2])]));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('a CCS while a handshake message is half received → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const { f } = await start12(conn);
    const c = clientFlight12(f);
    await exchange(conn, Buffer.concat([plaintextRecords(ContentType.handshake, c.cke.subarray(0, 10)), CCS]));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('application data before the Finished → unexpected_message', async (t) => {
    const conn = new ServerConnection(config());
    const { f } = await start12(conn);
    const c = clientFlight12(f);
    await exchange(conn, Buffer.concat([plaintextRecords(ContentType.handshake, c.cke), CCS, c.sealer.seal(ContentType.application_data, Buffer.from('early'))]));
    expectAlert(t, conn, 'unexpected_message');
  });
  await t.test('a tampered encrypted Finished → bad_record_mac', async (t) => {
    const conn = new ServerConnection(config());
    const { f } = await start12(conn);
    const c = clientFlight12(f);
    const bytes = clientFlightBytes(c);
    bytes[bytes.length - 1]! ^= 1;
    await exchange(conn, bytes);
    expectAlert(t, conn, 'bad_record_mac');
  });
});

t.test('ClientKeyExchange validation', async (t) => {
  const sendCke = async (point: Buffer, group?: number, trailing = Buffer.alloc(0)): Promise<ServerConnection> => {
    const conn = new ServerConnection(config());
    await start12(conn, group ? { groups: [group, NamedGroup.secp256r1] } : {});
    const body = Buffer.concat([Buffer.from([point.length]), point, trailing]);
    await exchange(conn, plaintextRecords(ContentType.handshake, Buffer.concat([Buffer.from([16, 0, 0, body.length]), body])));
    return conn;
  };
  expectAlert(t, await sendCke(Buffer.alloc(31, 9)), 'illegal_parameter');
  expectAlert(t, await sendCke(Buffer.alloc(32, 0)), 'illegal_parameter');
  const offCurve = Buffer.alloc(65, 1);
  offCurve[0] = 4;
  expectAlert(t, await sendCke(offCurve, NamedGroup.secp256r1), 'illegal_parameter');
  const compressed = Buffer.alloc(33, 1);
  compressed[0] = 2;
  expectAlert(t, await sendCke(compressed, NamedGroup.secp256r1), 'illegal_parameter');
  expectAlert(t, await sendCke(Buffer.alloc(32, 9), undefined, Buffer.from([0])), 'decode_error');
  const conn = new ServerConnection(config());
  await start12(conn);
  await exchange(conn, plaintextRecords(ContentType.handshake, Buffer.from([11, 0, 0, 3, 0, 0, 0])));
  expectAlert(t, conn, 'unexpected_message');
});

t.test('a duplicate extension in a TLS 1.2 hello → illegal_parameter', (t) =>
  helloFails(t, hello12({ extra: [ext12.ems()] }), 'illegal_parameter'));

t.test('renegotiation: the first ClientHello gets a no_renegotiation warning, the second is fatal', async (t) => {
  const conn = new ServerConnection(config());
  const { c } = await full12(conn);
  const reneg = c.sealer.seal(ContentType.handshake, hello12());
  const out = await exchange(conn, reneg);
  const rec = records(out)[0]!;
  t.equal(rec.type, ContentType.alert);
  t.same([...c.opener.open({ type: rec.type, version: 0x0303, fragment: rec.fragment }).content], [1, AlertDescription.no_renegotiation], 'warning no_renegotiation');
  t.equal(conn.error, null, 'the connection carries on');
  conn.writeApplicationData(Buffer.from('still here'));
  const data = records(conn.takeOutput()!)[0]!;
  t.equal(c.opener.open({ type: data.type, version: 0x0303, fragment: data.fragment }).content.toString(), 'still here');
  await exchange(conn, c.sealer.seal(ContentType.handshake, hello12()));
  expectAlert(t, conn, 'unexpected_message');
});

t.test('other post-handshake messages and a CCS after the handshake are unexpected_message', async (t) => {
  const a = new ServerConnection(config());
  const ca = await full12(a);
  await exchange(a, ca.c.sealer.seal(ContentType.handshake, Buffer.from([24, 0, 0, 1, 0])));
  expectAlert(t, a, 'unexpected_message');
  const b = new ServerConnection(config());
  await full12(b);
  await exchange(b, CCS);
  expectAlert(t, b, 'unexpected_message');
});

t.test('keyUpdate() on a TLS 1.2 connection is refused with a clear error', async (t) => {
  const conn = new ServerConnection(config());
  await full12(conn);
  t.throws(() => conn.keyUpdate(false), /TLS 1.2 has no KeyUpdate/);
  t.equal(conn.error, null, 'the connection is unharmed');
});

t.test('warning alerts in TLS 1.2 are tolerated up to a limit', async (t) => {
  const conn = new ServerConnection(config());
  const { c } = await full12(conn);
  for (let i = 0; i < 4; i++) await exchange(conn, c.sealer.seal(ContentType.alert, Buffer.from([1, 100])));
  t.equal(conn.error, null, 'four warnings pass');
  await exchange(conn, c.sealer.seal(ContentType.alert, Buffer.from([1, 100])));
  expectAlert(t, conn, 'unexpected_message');
});

t.test('RFC 5077 tickets', async (t) => {
  const keys = new TicketKeys();
  const cfg = config({ ticketKeys: keys });
  await t.test('an empty session_ticket gets a NewSessionTicket before the server CCS, and the ticket resumes without a signature', async (t) => {
    const conn = new ServerConnection(cfg);
    const { f, c: c1, ticket } = await full12(conn, { ticket: Buffer.alloc(0), extra: [ext.sni('localhost')] });
    t.same(f.extensions.get(35), Buffer.alloc(0), 'session_ticket acknowledged in ServerHello');
    t.ok(ticket && ticket.length > 32, 'a ticket arrived');
    const again = new ServerConnection(cfg);
    const sessionId = Buffer.alloc(32, 0xab);
    const ch = hello12({ ticket: ticket!, sessionId, extra: [ext.sni('localhost')] });
    const out = conn.takeOutput() ?? Buffer.alloc(0);
    t.equal(out.length, 0);
    again.feed(plaintextRecords(ContentType.handshake, ch));
    t.notOk(again.takeEvents().some((e) => e.type === 'sign'), 'no signature requested');
    const r = parseFlight12(ch, again.takeOutput()!);
    t.ok(r.resumed, 'abbreviated handshake: ServerHello, CCS, Finished');
    t.same(r.sessionId, sessionId, 'the client session id is echoed (RFC 5077 §3.4)');
    t.same(r.transcript.slice(1).map((m) => m[0]), [2]);
    t.equal(r.suite.id, f.suite.id);
    const c = clientFlight12(r, c1.master);
    await exchange(again, Buffer.concat([CCS, c.sealer.seal(ContentType.handshake, c.finished)]));
    t.ok(again.established);
    t.equal(again.negotiated.resumed, true);
  });
  await t.test('a ticket for another server name, or garbage, means a full handshake', async (t) => {
    const first = await full12(new ServerConnection(cfg), { ticket: Buffer.alloc(0), extra: [ext.sni('localhost')] });
    const other = await start12(new ServerConnection(cfg), { ticket: first.ticket!, extra: [ext.sni('a.example.com')] });
    t.notOk(other.f.resumed);
    const junk = await start12(new ServerConnection(cfg), { ticket: Buffer.alloc(100, 1) });
    t.notOk(junk.f.resumed);
  });
  await t.test('a TLS 1.3 ticket does not resume TLS 1.2, and a TLS 1.2 ticket is no TLS 1.3 PSK', async (t) => {
    const conn13 = new ServerConnection(cfg);
    const c13 = await fullHandshake(conn13, { extra: [ext.pskModes([1])] });
    const nst = records(c13.afterFinished).map((r) => c13.appOpener.open({ type: r.type, version: 0x0303, fragment: r.fragment }).content)[0]!;
    const body = nst.subarray(4);
    const ticket13 = body.subarray(4 + 4 + 1 + body[8]! + 2, 4 + 4 + 1 + body[8]! + 2 + body.readUInt16BE(4 + 4 + 1 + body[8]!));
    t.ok(keys.open(ticket13), 'the 1.3 ticket is a real one');
    t.equal(keys.open(ticket13, 'tls12'), null, 'it does not open under the TLS 1.2 purpose');
    const r = await start12(new ServerConnection(cfg), { ticket: ticket13 });
    t.notOk(r.f.resumed, 'full handshake');
    const first = await full12(new ServerConnection(cfg), { ticket: Buffer.alloc(0) });
    t.equal(keys.open(first.ticket!), null, 'a TLS 1.2 ticket does not open as a TLS 1.3 one');
  });
  await t.test('a ticket whose suite the client no longer offers means a full handshake', async (t) => {
    const first = await full12(new ServerConnection(cfg), { ticket: Buffer.alloc(0), suites: [Suite12.ECDSA_AES256] });
    const r = await start12(new ServerConnection(cfg), { ticket: first.ticket!, suites: [Suite12.ECDSA_AES128] });
    t.notOk(r.f.resumed);
  });
  await t.test('no ticket when tickets are off', async (t) => {
    const { f, ticket } = await full12(new ServerConnection(config({ ticketKeys: undefined })), { ticket: Buffer.alloc(0) });
    t.notOk(f.extensions.has(35));
    t.equal(ticket, undefined);
  });
  await t.test('an expired ticket means a full handshake', async (t) => {
    let now = Date.now();
    const clockCfg = config({ ticketKeys: keys, ticketLifetimeS: 10, now: () => now });
    const first = await full12(new ServerConnection(clockCfg), { ticket: Buffer.alloc(0) });
    now += 11_000;
    const r = await start12(new ServerConnection(clockCfg), { ticket: first.ticket! });
    t.notOk(r.f.resumed);
  });
  await t.test('the lifetime hint never outlives the ticket keys, and a ticket resumes until it ends', async (t) => {
    let now = Math.ceil(Date.now() / 3_600_000) * 3_600_000 + 1000;
    const hourly = new TicketKeys({ now: () => now }); // rotates hourly, opens for two hours
    const weekCfg = config({ ticketKeys: hourly, ticketLifetimeS: 7 * 24 * 3600, now: () => now });
    const first = await full12(new ServerConnection(weekCfg), { ticket: Buffer.alloc(0) });
    t.ok(first.lifetime! <= 7199 && first.lifetime! >= 3600, `hint ${first.lifetime} s fits the key's accept window`);
    now += first.lifetime! * 1000 - 1000;
    const r = await start12(new ServerConnection(weekCfg), { ticket: first.ticket! });
    t.ok(r.f.resumed, 'resumed within the advertised lifetime');
  });
});

t.test('a write past an exhausted TLS 1.2 key fails the connection once, and later writes fail fast', async (t) => {
  // The server Finished takes sequence number 0, so two records of application data fit under 3.
  const conn = new ServerConnection(config({ seqLimits: { soft: 3n, hard: 3n } }));
  await full12(conn);
  conn.writeApplicationData(Buffer.from('a'));
  conn.writeApplicationData(Buffer.from('b'));
  t.equal(conn.takeOutput()!.length, 2 * (5 + 8 + 1 + 16), 'two records');
  let first: unknown;
  try { conn.writeApplicationData(Buffer.from('c')); } catch (e) { first = e; }
  t.equal((first as { code?: string } | undefined)?.code, 'TLS_ERR_SEQ_EXHAUSTED');
  t.equal(conn.error, first, 'the connection is dead with that error');
  t.ok(conn.takeEvents().some((e) => e.type === 'fatal'), 'a fatal event for the driver');
  t.throws(() => conn.writeApplicationData(Buffer.from('d')), first as Error, 'the next write fails with the original error');
  t.equal(conn.takeOutput(), null, 'nothing more is sent (the only write key is used up)');
});

t.test('an IP literal in SNI counts as no SNI in TLS 1.2 too', async (t) => {
  for (const ip of ['192.0.2.1', '::1']) {
    const conn = new ServerConnection(config());
    const { f } = await full12(conn, { extra: [ext.sni(ip)] });
    t.ok(conn.established, `handshake with SNI ${ip} completes`);
    t.equal(conn.negotiated.servername, undefined);
    t.notOk(f.extensions.has(0), 'ServerHello does not acknowledge server_name');
  }
});

t.test('TLS 1.2 record sizes: a full-size encrypted handshake record is accepted, plaintext ones stay capped at 2^14', async (t) => {
  await t.test('2^14 bytes of encrypted handshake data (a renegotiation ClientHello) is no record_overflow', async (t) => {
    const conn = new ServerConnection(config());
    const { c } = await full12(conn);
    const msg = Buffer.alloc(2 ** 14);
    msg[0] = 1; // client_hello, as long as the record allows
    msg.writeUIntBE(msg.length - 4, 1, 3);
    const rec = c.sealer.seal(ContentType.handshake, msg);
    t.equal(rec.length, 5 + 8 + 2 ** 14 + 16, 'one record of 2^14 plaintext + explicit nonce + tag');
    const out = await exchange(conn, rec);
    t.equal(conn.error, null, `accepted (${conn.error?.message ?? ''})`);
    const warn = c.opener.open({ type: out[0]!, version: 0x0303, fragment: out.subarray(5) });
    t.same([...warn.content], [1, AlertDescription.no_renegotiation], 'answered with the no_renegotiation warning');
  });
  await t.test('a header over 2^14+2048 → record_overflow', async (t) => {
    const conn = new ServerConnection(config());
    await full12(conn);
    await exchange(conn, Buffer.from([ContentType.application_data, 3, 3, 0x48, 0x01]));
    expectAlert(t, conn, 'record_overflow');
  });
  await t.test('a plaintext handshake record over 2^14 before ChangeCipherSpec → record_overflow', async (t) => {
    const conn = new ServerConnection(config());
    await start12(conn);
    await exchange(conn, Buffer.concat([Buffer.from([ContentType.handshake, 3, 3, 0x40, 0x01]), Buffer.alloc(2 ** 14 + 1, 16)]));
    expectAlert(t, conn, 'record_overflow');
  });
});

t.test('requireExtendedMasterSecret: false lets clients without RFC 7627 in, with the RFC 5246 master secret', async (t) => {
  const relaxed = config({ requireExtendedMasterSecret: false });
  await t.test('no extended_master_secret: a full handshake, ServerHello without it, Finished under the legacy master secret', async (t) => {
    const conn = new ServerConnection(relaxed);
    const { f } = await full12(conn, { omit: [23] }); // full12 checks the server Finished with the client's own PRF
    t.ok(conn.established);
    t.notOk(f.extensions.has(23), 'no unsolicited extended_master_secret');
  });
  await t.test('a client offering it still gets it', async (t) => {
    const conn = new ServerConnection(relaxed);
    const { f } = await full12(conn);
    t.ok(conn.established);
    t.same(f.extensions.get(23), Buffer.alloc(0));
  });
  await t.test('a ticket resumes only with the EMS state of its session (RFC 7627 §5.3)', async (t) => {
    const cfg = config({ requireExtendedMasterSecret: false, ticketKeys: new TicketKeys() });
    const withEms = await full12(new ServerConnection(cfg), { ticket: Buffer.alloc(0) });
    const without = await full12(new ServerConnection(cfg), { ticket: Buffer.alloc(0), omit: [23] });
    const cases: Array<[string, Buffer, number[], boolean]> = [
      ['EMS session, EMS hello', withEms.ticket!, [], true],
      ['no-EMS session, no-EMS hello', without.ticket!, [23], true],
      ['EMS session, hello without EMS', withEms.ticket!, [23], false],
      ['no-EMS session, hello with EMS', without.ticket!, [], false],
    ];
    for (const [what, ticket, omit, resumes] of cases) {
      const conn = new ServerConnection(cfg);
      const r = await start12(conn, { ticket, omit });
      t.equal(r.f.resumed, resumes, `${what}: ${resumes ? 'resumed' : 'full handshake'}`);
      t.equal(conn.error, null);
    }
  });
  await t.test('the default still refuses a client without it', (t) =>
    helloFails(t, hello12({ omit: [23] }), 'handshake_failure', config({ requireExtendedMasterSecret: true })));
});
