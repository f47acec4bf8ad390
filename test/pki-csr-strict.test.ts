// An issuing CA signs only DER CertificationRequests (RFC 2986): a CSR whose bytes another tool
// would read differently (a wrong tag, trailing bytes, a long-form length, a PEM body that is
// not exactly the DER) is refused by parseCsr and by `ca sign`, with a one-line reason naming the
// file. Keys are real keys on the soft backend: what is under test is the CSR's encoding.
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/engine/index.js';
import { caInit, caSign, certPem, createCsr, issuedLogPath, parseCsr, signingKey, type SigningKey } from '../src/pki/index.js';
import { oneLineError, runCli, type CliResult } from './helpers/cli.js';
import { openssl } from './helpers/openssl.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-csr-strict-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const f = (name: string): string => join(dir, name);
const engine = new Engine();
t.teardown(() => engine.close());

async function softKey(name: string): Promise<SigningKey> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  await writeFile(f(name), privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  return signingKey(await engine.signer(await engine.loadSoftKey(f(name))), engine.webcrypto());
}

const caKey = await softKey('ca.key');
const caCert = await caInit(caKey, { subject: 'CN=Strict Test CA', days: 30 });
await writeFile(f('ca.crt'), certPem(caCert));
const leafKey = await softKey('leaf.key');
const derOf = (pem: string): Buffer => Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
// A CSR whose length is not a multiple of 3, so its base64 ends in '=' padding (the PEM test
// needs pad bits); ECDSA signatures vary in length, so a few tries find one.
let goodPem = '';
do goodPem = await createCsr(leafKey, { subject: 'CN=leaf.example.com', sans: ['DNS:leaf.example.com'] });
while (derOf(goodPem).length % 3 === 0);
const good = derOf(goodPem);

// --- DER surgery: the CSR is SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature }.
interface Tlv { start: number; body: number; end: number }

function readTlv(der: Buffer, start: number): Tlv {
  const first = der[start + 1]!;
  if (first < 0x80) return { start, body: start + 2, end: start + 2 + first };
  const n = first & 0x7f;
  const length = der.subarray(start + 2, start + 2 + n).reduce((acc, b) => acc * 256 + b, 0);
  return { start, body: start + 2 + n, end: start + 2 + n + length };
}

/** tag, length, body; `longForm` writes a length below 128 as 0x81 nn, which DER forbids. */
function tlv(tag: number, body: Buffer, longForm = false): Buffer {
  const n = body.length;
  const length = n < 0x80 && !longForm ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...length]), body]);
}

const outer = readTlv(good, 0);
const info = readTlv(good, outer.body);
const alg = readTlv(good, info.end);
const sig = readTlv(good, alg.end);
const whole = (x: Tlv): Buffer => good.subarray(x.start, x.end);
const body = (x: Tlv): Buffer => good.subarray(x.body, x.end);
const csrOf = (...parts: Buffer[]): Buffer => tlv(0x30, Buffer.concat(parts));

function edited(at: number, value: number): Buffer {
  const copy = Buffer.from(good);
  copy[at] = value;
  return copy;
}

const pemBody = (b64: string): string => `-----BEGIN CERTIFICATE REQUEST-----\n${b64.replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;
const pemOf = (der: Buffer): string => pemBody(der.toString('base64'));

t.test('the DER surgery starts from a CSR it takes apart and puts back byte for byte', async (t) => {
  t.equal(outer.end, good.length);
  t.equal(sig.end, outer.end, 'three parts fill the CSR');
  t.same(csrOf(whole(info), whole(alg), whole(sig)), good);
  t.ok(body(alg).length < 0x80 && body(sig).length < 0x80, 'both fit a short-form length, so 0x81 nn is not minimal');
});

const longAlg = csrOf(whole(info), tlv(0x30, body(alg), true), whole(sig));
const longSig = csrOf(whole(info), whole(alg), tlv(0x03, body(sig), true));
const longer = (der: Buffer): RegExp => new RegExp(`it is ${der.length} bytes long where its DER encoding is ${good.length}`);

// What is not DER, the reason the refusal gives, and whether openssl refuses it too: openssl
// 3.0's `req` reads past trailing bytes and accepts BER long-form lengths, so only the wrong tag.
const NOT_DER: Array<[string, Buffer, RegExp, boolean]> = [
  ['the outer signatureAlgorithm tagged [0] (0xa0) instead of SEQUENCE', edited(alg.start, 0xa0), new RegExp(`byte ${alg.start} is 0xa0 where DER has 0x30`), true],
  ['bytes after the end of the CSR', Buffer.concat([good, Buffer.from([0x00, 0x00])]), /2 byte\(s\) follow the end of the CSR/, false],
  ['a long-form length (0x81 nn) on the outer signatureAlgorithm', longAlg, longer(longAlg), false],
  ['a long-form length (0x81 nn) on the signature BIT STRING', longSig, longer(longSig), false],
];

for (const [what, der, reason, opensslRefuses] of NOT_DER) {
  t.test(`parseCsr refuses ${what}`, async (t) => {
    t.throws(() => parseCsr(pemOf(der), 'bad.csr'), {
      code: 'PKI_ERR_MALFORMED',
      message: /^bad\.csr: not a DER certificate signing request \(RFC 2986\): .*; refusing it/,
    });
    t.throws(() => parseCsr(pemOf(der), 'bad.csr'), { message: reason });
    if (opensslRefuses) {
      await writeFile(f('openssl.der'), der);
      const o = await openssl(['req', '-in', f('openssl.der'), '-inform', 'DER', '-noout']);
      t.not(o.code, 0, `openssl refuses it too: ${o.stderr.split('\n')[0]}`);
    }
  });
}

t.test('a PEM body whose base64 is not exactly the DER is refused', async (t) => {
  const b64 = good.toString('base64');
  const message = (file: string): RegExp => new RegExp(`^${file}\\.csr: the body of the CERTIFICATE REQUEST block is not valid base64$`);
  // Node's decoder stops at '=': more base64 after the padding would be silently dropped.
  t.throws(() => parseCsr(pemBody(`${b64}QUFB`), 'hidden.csr'), { code: 'PKI_ERR_MALFORMED', message: message('hidden') });
  // Pad bits must be zero (RFC 4648 3.5), so that one DER has one PEM body.
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const last = b64.replace(/=+$/, '').length - 1;
  const bits = b64.slice(0, last) + alphabet[alphabet.indexOf(b64[last]!) | 1] + b64.slice(last + 1);
  t.not(bits, b64);
  t.same(Buffer.from(bits, 'base64'), good, 'the altered body decodes to the same bytes');
  t.throws(() => parseCsr(pemBody(bits), 'bits.csr'), { code: 'PKI_ERR_MALFORMED', message: message('bits') });
});

t.test('a byte changed inside certificationRequestInfo is well-formed DER, but its signature fails', async (t) => {
  const forged = edited(good.indexOf(Buffer.from('leaf.example.com')), 'm'.charCodeAt(0));
  const csr = parseCsr(pemOf(forged), 'forged.csr');
  await t.rejects(caSign(caKey, { caCert, caCertFile: f('ca.crt'), csr, csrFile: 'forged.csr', days: 10, profile: 'server' }), {
    code: 'PKI_ERR_CSR_SIGNATURE',
    message: /^forged\.csr: the CSR's signature does not verify/,
  });
});

t.test('a valid CSR is accepted, with text around its PEM block, and gets a certificate', async (t) => {
  const csr = parseCsr(`subject: leaf\n${goodPem}trailing note\n`, 'leaf.csr');
  t.same(Buffer.from(csr.rawData), good, 'the parsed CSR is exactly the DER of the block');
  const { cert } = await caSign(caKey, { caCert, caCertFile: f('lib-ca.crt'), csr, csrFile: 'leaf.csr', days: 10, profile: 'server' });
  t.equal(cert.subject, 'CN=leaf.example.com');
  const o = await openssl(['req', '-in', '-', '-noout', '-verify'], goodPem);
  t.equal(o.code, 0, `openssl accepts the same CSR: ${o.stderr}`);
});

// --- The CLI: `hsmproxy ca sign --csr FILE`, as a user runs it.
const sign = (csrFile: string, out: string): Promise<CliResult> =>
  runCli(['ca', 'sign', '--backend', 'soft', '--ca-key', f('ca.key'), '--ca-cert', f('ca.crt'), '--csr', csrFile, '--days', '30', '--out', out]);

t.test('ca sign refuses a CSR that is not DER: one line naming the file, no certificate, nothing logged', async (t) => {
  const cases: Array<[string, Buffer, RegExp]> = [
    ...NOT_DER.map(([what, der]): [string, Buffer, RegExp] => [what, der, /not a DER certificate signing request \(RFC 2986\)/]),
    ['a byte changed inside certificationRequestInfo', edited(good.indexOf(Buffer.from('leaf.example.com')), 'm'.charCodeAt(0)), /the CSR's signature does not verify/],
  ];
  const runs = await Promise.all(cases.map(async ([, der], i) => {
    await writeFile(f(`bad${i}.csr`), pemOf(der));
    return sign(f(`bad${i}.csr`), f(`bad${i}.crt`));
  }));
  cases.forEach(([what, , pattern], i) => t.test(what, async (t) => {
    oneLineError(t, runs[i]!, new RegExp(`bad${i}\\.csr: ${pattern.source}`));
    t.notOk(existsSync(f(`bad${i}.crt`)), 'no certificate written');
  }));
  t.notOk(existsSync(issuedLogPath(f('ca.crt'))), 'no certificate logged as issued');
});

t.test('ca sign issues a certificate for the valid CSR', async (t) => {
  await writeFile(f('good.csr'), goodPem);
  const r = await sign(f('good.csr'), f('good.crt'));
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /wrote .*good\.crt \(serial \w+, CN=leaf\.example\.com/);
  const v = await openssl(['verify', '-CAfile', f('ca.crt'), f('good.crt')]);
  t.equal(v.code, 0, `${v.stdout}${v.stderr}`);
  t.match(await readFile(issuedLogPath(f('ca.crt')), 'utf8'), /good\.csr/);
});
