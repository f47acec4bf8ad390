// Delegated credentials (RFC 9345) at the TLS layer: the credential the certificate's key signs
// (layout, validity caps, verify-before-serve), the ClientHello extension's decoding, and
// handshakes with NSS tstclnt, the client with credential support, against a TlsServer whose
// certificate key is a counting Signer: -B handshakes never reach it, the others do, forged
// credentials (served through the CertifiedKey's credential source) are refused by NSS, and
// clients without credential support (openssl, curl, node:tls) see no change.
import t from 'tap';
import diagnosticsChannel from 'node:diagnostics_channel';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey, generateKeyPairSync, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HandshakeShedError } from '../src/tls/admit.js';
import { AlertDescription, TlsAlertError } from '../src/tls/alert.js';
import { prepareCertEntry } from '../src/tls/certselect.js';
import { Reader } from '../src/tls/codec.js';
import { ServerConnection } from '../src/tls/connection.js';
import {
  DELEGATED_CREDENTIAL_EXT, MAX_DC_VALIDITY_MS, canDelegate, credentialFrom, decodeDelegatedCredential,
  delegatedCredentialSignedContent, encodeCredential, makeDelegatedCredential, type DelegatedCredential,
} from '../src/tls/delegated.js';
import type { HandshakeConfig } from '../src/tls/handshake13.js';
import { certificateVerifyContent } from '../src/tls/handshake13.js';
import { ContentType, plaintextRecords } from '../src/tls/record.js';
import { createServer, type TlsServer } from '../src/tls/index.js';
import { SignatureScheme } from '../src/tls/signer.js';
import { CredentialKeeper, DELEGATED_CREDENTIAL_CHANNEL } from '../src/proxy/delegated-credentials.js';
import { makeNssDb, skipWithoutNss, tstclnt } from './helpers/nss.js';
import { SoftSigner } from './helpers/soft-signer.js';
import { runClient } from './helpers/tls-interop.js';
import { encodeClientHello, exchange, goodHello, readServerFlight, type Ext } from './helpers/tls13-client.js';
import type { AddressInfo } from 'node:net';

// A P-256 CA and two P-256 leaves valid 30 days (so a credential may be forged to end past 7
// days): one with DelegationUsage and keyUsage digitalSignature, one without the extension.
const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-dc-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=hsmproxy dc test CA', '-days', '30']);
function leaf(name: string, delegation: boolean): { chain: Buffer[]; key: KeyObject } {
  const lines = ['subjectAltName=DNS:localhost,IP:127.0.0.1', 'basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature'];
  if (delegation) lines.push('1.3.6.1.4.1.44363.44=ASN1:NULL');
  writeFileSync(join(dir, `${name}.cnf`), lines.join('\n') + '\n');
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=localhost']);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '30', '-extfile', `${name}.cnf`, '-sha256']);
  const der = (f: string) => Buffer.from(new X509Certificate(readFileSync(join(dir, f))).raw);
  return { chain: [der(`${name}.crt`), der('ca.crt')], key: createPrivateKey(readFileSync(join(dir, `${name}.key`))) };
}
const dc = leaf('dc', true);
const plain = leaf('plain', false);
const caFile = join(dir, 'ca.crt');
const notBefore = Date.parse(new X509Certificate(dc.chain[0]!).validFrom);

t.test('DelegationUsage is read from the certificate (RFC 9345 §4.2)', async (t) => {
  t.equal(canDelegate(dc.chain[0]!), true, 'a certificate with the extension can delegate');
  t.equal(canDelegate(plain.chain[0]!), false, 'one without it cannot');
  t.equal(canDelegate(Buffer.from('not a certificate')), false, 'garbage cannot');
});

t.test('a credential: layout, one signature by the certificate key, verified, capped', async (t) => {
  const signer = new SoftSigner(dc.key);
  const now = Date.now();
  const cred = await makeDelegatedCredential({ chain: dc.chain, signer, keyType: 'ec:p256', validityMs: 8 * 3_600_000, nowMs: now });
  t.equal(signer.calls, 1, 'exactly one signature by the certificate key');
  const d = decodeDelegatedCredential(cred.wire);
  t.equal(d.dcCertVerifyAlgorithm, SignatureScheme.ecdsa_secp256r1_sha256, 'P-256 credential key by default');
  t.equal(d.algorithm, SignatureScheme.ecdsa_secp256r1_sha256, 'signed with the certificate key scheme');
  t.equal(notBefore + d.validTime * 1000, cred.expiresAtMs, 'valid_time counts from the certificate notBefore');
  t.ok(cred.expiresAtMs <= now + 8 * 3_600_000 && cred.expiresAtMs > now + 8 * 3_600_000 - 2000, 'lives the validity asked for');
  // The exact bytes RFC 9345 §4 has signed: 64 spaces, the context string, 0, cert DER, Credential, algorithm.
  const content = Buffer.concat([
    Buffer.alloc(64, 0x20), Buffer.from('TLS, server delegated credentials'), Buffer.from([0]), dc.chain[0]!, d.credential, Buffer.from([0x04, 0x03]),
  ]);
  t.same(delegatedCredentialSignedContent(dc.chain[0]!, d.credential, d.algorithm), content);
  t.ok(nodeVerify('sha256', content, dc.key, d.signature), 'the signature verifies under the certificate key');
  t.same(d.credential, encodeCredential({ validTime: d.validTime, spki: d.spki, dcCertVerifyAlgorithm: d.dcCertVerifyAlgorithm }), 'Credential round-trips');
  const cv = certificateVerifyContent(Buffer.alloc(32, 1));
  t.ok(nodeVerify('sha256', cv, cred.publicKey, cred.signLocally(cv)), 'the credential key signs CertificateVerify content');

  const week = await makeDelegatedCredential({ chain: dc.chain, signer, keyType: 'ec:p384', validityMs: 30 * 86_400_000, nowMs: now });
  t.ok(week.expiresAtMs <= now + MAX_DC_VALIDITY_MS, 'never more than 7 days (RFC 9345 §4.1.3)');
  t.equal(decodeDelegatedCredential(week.wire).dcCertVerifyAlgorithm, SignatureScheme.ecdsa_secp384r1_sha384, 'P-384 credential');
  const ed = await makeDelegatedCredential({ chain: dc.chain, signer, keyType: 'ed25519', validityMs: 60_000, nowMs: now });
  t.ok(nodeVerify(null, cv, ed.publicKey, ed.signLocally(cv)), 'Ed25519 credential key');
  const notAfter = Date.parse(new X509Certificate(dc.chain[0]!).validTo);
  const late = await makeDelegatedCredential({ chain: dc.chain, signer, keyType: 'ec:p256', validityMs: 7 * 86_400_000, nowMs: notAfter - 3_600_000 });
  t.ok(late.expiresAtMs <= notAfter, 'never past the certificate notAfter');
  await t.rejects(makeDelegatedCredential({ chain: dc.chain, signer, keyType: 'ec:p256', validityMs: 60_000, nowMs: notAfter + 1000 }), /expired/);
  await t.rejects(
    makeDelegatedCredential({ chain: dc.chain, signer: new SoftSigner(dc.key, { fault: 'garbage' }), keyType: 'ec:p256', validityMs: 60_000, nowMs: now }),
    /does not verify/, 'a signature that does not verify never becomes a credential',
  );
});

// The sans-IO server: the extension's decoding, and what goes in the Certificate message.
function config(delegated?: { current(): DelegatedCredential | undefined }, signer = new SoftSigner(dc.key)): HandshakeConfig {
  return {
    certificates: [prepareCertEntry({ chain: dc.chain, signer, ...(delegated ? { delegated: { current: () => delegated.current() } } : {}) })],
    ticketCount: 0, ticketLifetimeS: 3600, verifyAfterSign: () => true, now: Date.now,
  };
}

t.test('a malformed delegated_credential extension is decode_error', async (t) => {
  const cases: Array<[string, Buffer]> = [
    ['empty list', Buffer.from([0, 0])],
    ['odd-length list', Buffer.from([0, 3, 4, 3, 5])],
    ['list length past the body', Buffer.from([0, 4, 4, 3])],
    ['trailing byte after the list', Buffer.from([0, 2, 4, 3, 0])],
    ['empty body', Buffer.alloc(0)],
  ];
  for (const [name, body] of cases) {
    const { spec } = goodHello({ extra: [[DELEGATED_CREDENTIAL_EXT, body]] });
    const conn = new ServerConnection(config());
    const out = await exchange(conn, plaintextRecords(ContentType.handshake, encodeClientHello(spec)));
    const err = conn.error;
    t.ok(err instanceof TlsAlertError && err.alert === AlertDescription.decode_error, `${name}: decode_error (${err?.message})`);
    t.same([...out.subarray(-7)], [21, 3, 3, 0, 2, 2, AlertDescription.decode_error], `${name}: the alert went out`);
  }
});

/** The end-entity CertificateEntry's extensions and the CertificateVerify scheme of one handshake. */
async function handshakeWith(extra: Ext[], sigAlgs: number[], cfg: HandshakeConfig) {
  const { spec, key } = goodHello({ extra, sigAlgs });
  const ch = encodeClientHello(spec);
  const conn = new ServerConnection(cfg);
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  const c = readServerFlight(ch, key, out);
  const certMsg = c.messages.find((m) => m.type === 11)!;
  const r = new Reader(certMsg.body);
  r.vec8();
  const list = r.sub(3);
  list.vec24();
  const exts = list.vec16();
  const cv = new Reader(c.messages.find((m) => m.type === 15)!.body);
  return { leafExtensions: exts, cvScheme: cv.u16(), cvSignature: cv.vec16() };
}

t.test('the credential goes in the end-entity entry only when the client can use it (RFC 9345 §4.1.1)', async (t) => {
  const signer = new SoftSigner(dc.key);
  const cred = await makeDelegatedCredential({ chain: dc.chain, signer, keyType: 'ec:p384', validityMs: 3_600_000, nowMs: Date.now() });
  const hsm = new SoftSigner(dc.key);
  const cfg = config({ current: () => cred }, hsm);
  const p256 = SignatureScheme.ecdsa_secp256r1_sha256;
  const p384 = SignatureScheme.ecdsa_secp384r1_sha384;
  const dcExt = (schemes: number[]): Ext => [DELEGATED_CREDENTIAL_EXT, Buffer.from([0, schemes.length * 2, ...schemes.flatMap((s) => [s >> 8, s & 0xff])])];

  const used = await handshakeWith([dcExt([p256, p384])], [p256], cfg);
  t.ok(used.leafExtensions.length > 0, 'credential sent');
  const er = new Reader(used.leafExtensions);
  t.equal(er.u16(), DELEGATED_CREDENTIAL_EXT);
  t.same(er.vec16(), cred.wire, 'the DelegatedCredential as made');
  t.equal(used.cvScheme, p384, 'CertificateVerify uses dc_cert_verify_algorithm');
  t.equal(hsm.calls, 0, 'the certificate key signed nothing');

  const notListed = await handshakeWith([dcExt([p256])], [p256], cfg);
  t.equal(notListed.leafExtensions.length, 0, 'credential scheme not in the client list: no credential');
  t.equal(notListed.cvScheme, p256);
  // A credential signed with a scheme the client's signature_algorithms lack is not usable to it.
  const algNotOffered = await handshakeWith([dcExt([p384])], [p256], config({ current: () => ({ ...cred, algorithm: p384 }) }));
  t.equal(algNotOffered.leafExtensions.length, 0, 'credential algorithm not in signature_algorithms: no credential');
  const noExt = await handshakeWith([], [p256], cfg);
  t.equal(noExt.leafExtensions.length, 0, 'no extension offered: no credential');
  t.equal(hsm.calls, 2, 'the two handshakes without a usable credential were signed by the certificate key');
  const expired = await handshakeWith([dcExt([p384])], [p256], config({ current: () => ({ ...cred, expiresAtMs: Date.now() - 60_000 }) }));
  t.equal(expired.leafExtensions.length, 0, 'an expired credential is never sent');
  const otherCert = await handshakeWith([dcExt([p384])], [p256], config({ current: () => ({ ...cred, leafDer: plain.chain[0]! }) }));
  t.equal(otherCert.leafExtensions.length, 0, 'a credential bound to another certificate is never sent');
});

t.test('admission sheds only handshakes that wait for the certificate key: a delegated one passes', async (t) => {
  const cred = await makeDelegatedCredential({ chain: dc.chain, signer: new SoftSigner(dc.key), keyType: 'ec:p256', validityMs: 3_600_000, nowMs: Date.now() });
  const hsm = new SoftSigner(dc.key);
  const p256 = SignatureScheme.ecdsa_secp256r1_sha256;
  const dcExt: Ext = [DELEGATED_CREDENTIAL_EXT, Buffer.from([0, 2, p256 >> 8, p256 & 0xff])];
  const run = async (extra: Ext[]) => {
    const { spec } = goodHello({ extra, sigAlgs: [p256] });
    const conn = new ServerConnection(config({ current: () => cred }, hsm));
    conn.admitFull = () => 'signing_queue';
    await exchange(conn, plaintextRecords(ContentType.handshake, encodeClientHello(spec)));
    return conn;
  };
  const delegated = await run([dcExt]);
  t.equal(delegated.error, null, 'the delegated handshake is admitted under pressure');
  t.equal(delegated.negotiated.credential, 'delegated');
  const signed = await run([]);
  t.ok(signed.error instanceof HandshakeShedError, 'one needing the certificate key is shed');
  t.equal(hsm.calls, 0, 'and no signature was asked for');
});

// The real client: NSS tstclnt against a TlsServer on loopback.
const nssSkip = skipWithoutNss();

async function serve(certified: Parameters<typeof createServer>[0]['certificates']): Promise<{ server: TlsServer; port: number; close(): Promise<void> }> {
  const server = createServer({ certificates: certified, handshakeTimeoutMs: 10_000 }, (s) => {
    s.on('error', () => undefined);
    s.once('data', () => s.end('HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n'));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** A credential with chosen valid_time / signing key, served as-is: what a forger could present. */
function forge(o: { validTime: number; signWith: KeyObject }): DelegatedCredential {
  const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = keys.publicKey.export({ type: 'spki', format: 'der' });
  const credential = encodeCredential({ validTime: o.validTime, spki, dcCertVerifyAlgorithm: SignatureScheme.ecdsa_secp256r1_sha256 });
  const content = delegatedCredentialSignedContent(dc.chain[0]!, credential, SignatureScheme.ecdsa_secp256r1_sha256);
  // The hook claims a future expiry, so the server's own check does not stop it: NSS must.
  return credentialFrom(dc.chain[0]!, credential, SignatureScheme.ecdsa_secp256r1_sha256, nodeSign('sha256', content, o.signWith),
    SignatureScheme.ecdsa_secp256r1_sha256, Date.now() + 3_600_000, keys);
}

t.test('NSS tstclnt: delegated with -B, HSM-signed without; forged credentials refused', { skip: nssSkip }, async (t) => {
  const db = makeNssDb(caFile);
  t.teardown(() => db.cleanup());
  const hsm = new SoftSigner(dc.key);
  const keeper = new CredentialKeeper({ listener: 't', chain: dc.chain, signer: hsm, keyType: 'ec:p256', validityMs: 3_600_000 });
  await keeper.start();
  t.teardown(() => keeper.stop());
  t.equal(hsm.calls, 1, 'the credential cost one signature');
  const s = await serve([{ chain: dc.chain, signer: hsm, delegated: keeper }]);
  t.teardown(() => s.close());
  for (let i = 0; i < 3; i++) {
    const r = await tstclnt(db, s.port, { delegated: true });
    t.ok(r.ok && r.delegated, `-B handshake ${i + 1}: HTTP answered over a delegated credential (${r.code} ${r.stderr.slice(-200)})`);
  }
  t.equal(hsm.calls, 1, 'no signature by the certificate key across the delegated handshakes');
  const plainRun = await tstclnt(db, s.port, { delegated: false });
  t.ok(plainRun.ok && !plainRun.delegated, 'without -B the same client completes');
  t.equal(hsm.calls, 2, 'and that handshake was signed by the certificate key');

  const now = Date.now();
  const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const forged: Array<[string, DelegatedCredential]> = [
    ['already expired', forge({ validTime: Math.floor((now - 60_000 - notBefore) / 1000), signWith: dc.key })],
    ['expiring more than 7 days from now', forge({ validTime: Math.floor((now + 8 * 86_400_000 - notBefore) / 1000), signWith: dc.key })],
    ['signed by another key', forge({ validTime: Math.floor((now + 3_600_000 - notBefore) / 1000), signWith: other })],
  ];
  const control = forge({ validTime: Math.floor((now + 3_600_000 - notBefore) / 1000), signWith: dc.key });
  const ctl = await serve([{ chain: dc.chain, signer: new SoftSigner(dc.key), delegated: { current: () => control } }]);
  const ctlRun = await tstclnt(db, ctl.port, { delegated: true });
  await ctl.close();
  t.ok(ctlRun.ok && ctlRun.delegated, 'control: the hook serving a well-formed forged-path credential works, so failures below are NSS checks');
  for (const [name, cred] of forged) {
    const f = await serve([{ chain: dc.chain, signer: new SoftSigner(dc.key), delegated: { current: () => cred } }]);
    const r = await tstclnt(db, f.port, { delegated: true });
    await f.close();
    t.ok(!r.ok && r.code !== 0, `${name}: tstclnt fails the handshake`);
    t.match(r.stderr, /SSL_ERROR_DC_/, `${name}: on its delegated-credential checks (${r.stderr.trim().split('\n').pop()})`);
  }
});

t.test('clients without credential support are unchanged: openssl s_client, curl, node:tls', async (t) => {
  const hsm = new SoftSigner(dc.key);
  const keeper = new CredentialKeeper({ listener: 't', chain: dc.chain, signer: hsm, keyType: 'ec:p256', validityMs: 3_600_000 });
  await keeper.start();
  t.teardown(() => keeper.stop());
  const s = await serve([{ chain: dc.chain, signer: hsm, delegated: keeper }]);
  t.teardown(() => s.close());
  const o = await runClient('openssl', ['s_client', '-connect', `127.0.0.1:${s.port}`, '-tls1_3', '-CAfile', caFile, '-servername', 'localhost', '-verify_return_error', '-quiet'], {
    steps: [[0, 'GET / HTTP/1.0\r\n\r\n']], timeoutMs: 15_000,
  });
  t.match(o.stdout, /HTTP\/1\.0 200/, `openssl s_client (${o.stderr.slice(-200)})`);
  const c = await runClient('curl', ['-sS', '--http1.0', '--cacert', caFile, '--resolve', `localhost:${s.port}:127.0.0.1`, `https://localhost:${s.port}/`], { timeoutMs: 15_000 });
  t.equal(c.stdout, 'ok\n', `curl (${c.stderr})`);
  const body = await new Promise<string>((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port: s.port, servername: 'localhost', ca: readFileSync(caFile), minVersion: 'TLSv1.3' }, () => sock.write('GET / HTTP/1.0\r\n\r\n'));
    let got = '';
    sock.setEncoding('utf8').on('data', (d: string) => { got += d; }).on('end', () => resolve(got)).on('error', reject);
  });
  t.match(body, /200 OK/, 'node:tls');
  t.equal(hsm.calls, 4, 'one credential plus one certificate-key signature per client handshake');
});

t.test('rotation: a tstclnt stream across two rotations, one signature per rotation', { skip: nssSkip }, async (t) => {
  const db = makeNssDb(caFile);
  t.teardown(() => db.cleanup());
  const hsm = new SoftSigner(dc.key);
  // 4 s credentials renew every 2 s; the stream runs until two renewals happened.
  const keeper = new CredentialKeeper({ listener: 't', chain: dc.chain, signer: hsm, keyType: 'ec:p256', validityMs: 4000 });
  await keeper.start();
  t.teardown(() => keeper.stop());
  const s = await serve([{ chain: dc.chain, signer: hsm, delegated: keeper }]);
  t.teardown(() => s.close());
  let issued = 1;
  const onEvent = (m: unknown) => { if ((m as { event: string }).event === 'issued') issued++; };
  diagnosticsChannel.subscribe(DELEGATED_CREDENTIAL_CHANNEL, onEvent);
  t.teardown(() => diagnosticsChannel.unsubscribe(DELEGATED_CREDENTIAL_CHANNEL, onEvent));
  const seen = new Set<string>();
  let runs = 0;
  let failures = 0;
  const deadline = Date.now() + 60_000;
  while (issued < 3 && Date.now() < deadline && runs < 400) {
    const before = keeper.current(Date.now());
    const r = await tstclnt(db, s.port, { delegated: true });
    runs++;
    if (!(r.ok && r.delegated)) failures++;
    if (before) seen.add(before.wire.toString('hex'));
  }
  // A few more after the second rotation.
  for (let i = 0; i < 3; i++) {
    const before = keeper.current(Date.now());
    const r = await tstclnt(db, s.port, { delegated: true });
    runs++;
    if (!(r.ok && r.delegated)) failures++;
    if (before) seen.add(before.wire.toString('hex'));
  }
  t.equal(failures, 0, `all ${runs} handshakes were delegated and answered`);
  t.ok(issued >= 3, `two rotations happened (${issued} credentials)`);
  t.ok(seen.size >= 3, `handshakes were served by ${seen.size} successive credentials`);
  t.equal(hsm.calls, issued, 'exactly one certificate-key signature per credential, none for the handshakes');
});
