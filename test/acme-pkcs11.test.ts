// ACME with hsm.mode pkcs11 (SoftHSMv2) against a real CA (Pebble on loopback): the proxy with
// acme.orderer: true orders the certificate with a key generated on the token and stores it there
// as CKO_CERTIFICATE objects beside the key; a second proxy on the same token with orderer: false,
// its own acme.dir and no account, serves the same certificate without ordering. The CA's
// validation is sent to the second proxy (challtestsrv points the name at 127.0.0.2, where only it
// listens), which answers from the challenge the orderer published on the token.
import 'reflect-metadata';
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPkcs11Backend } from '../src/engine/pkcs11/backend.js';
import { findCertificates, findData } from '../src/engine/pkcs11/objects.js';
import { ck } from '../src/engine/pkcs11/module.js';
import * as x509 from '@peculiar/x509';
import { cliEntry } from './helpers/cli.js';
import { freePorts, startPebble } from './helpers/pebble.js';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import { servedOrNone } from './helpers/served.js';

const tsxLoader = createRequire(import.meta.url).resolve('tsx');

interface Proxy { child: ChildProcess; out(): string; exited: Promise<number | null> }

/** `hsmproxy serve --config FILE` with the token's PIN; resolves once it listens. */
async function serve(config: string, env: NodeJS.ProcessEnv): Promise<Proxy> {
  const child = spawn(process.execPath, [`--import=${tsxLoader}`, cliEntry, 'serve', '--config', config], {
    env: { ...process.env, ...env, HSMPROXY_PIN: TEST_PIN }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const guard = (): void => { if (child.exitCode === null) child.kill('SIGKILL'); };
  process.once('exit', guard);
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { out += s; });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { out += s; });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => { process.off('exit', guard); r(code); }));
  const deadline = Date.now() + 60_000;
  while (!/admin: http:/.test(out)) {
    if (child.exitCode !== null || Date.now() > deadline) { guard(); throw new Error(`serve did not start:\n${out}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, out: () => out, exited };
}

async function stop(p: Proxy): Promise<void> {
  if (p.child.exitCode === null) p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
  await p.exited;
  clearTimeout(timer);
}

async function waitServed(p: Proxy, host: string, port: number, name: string, ca: string): Promise<X509Certificate> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    const cert = await servedOrNone(port, name, ca, { host });
    if (cert) return cert;
    if (Date.now() > deadline || p.child.exitCode !== null) throw new Error(`${name} never served at ${host}:${port}:\n${p.out()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function post(port: number, path: string, body: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST' }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    req.on('error', reject).end(JSON.stringify(body));
  });
}

/** A self-signed certificate for `name` with a software key (what an intruder could plant). */
async function selfSignedDer(name: string): Promise<{ der: Buffer; subject: Buffer }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await crypto.subtle.generateKey(alg, false, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01', name: `CN=${name}`, notBefore: new Date(), notAfter: new Date(Date.now() + 86_400_000), keys, signingAlgorithm: alg,
  });
  return { der: Buffer.from(cert.rawData), subject: Buffer.from(cert.subjectName.toArrayBuffer()) };
}

const skip = softhsmSkipReason();
if (skip) {
  t.test('ACME on a PKCS#11 token', { skip }, async () => {});
} else {
  const hsm = createSoftHsm();
  hsm.addToken('acme');
  t.teardown(() => hsm.cleanup());

  t.test('the orderer issues into the token; a proxy with orderer: false serves it without ordering', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-acme-pkcs11-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const [port] = await freePorts(1) as [number];
    const pebble = await startPebble({ tlsPort: port, httpPort: port });
    t.teardown(() => pebble.stop());
    const name = `p11-${randomBytes(4).toString('hex')}.acme.test`;
    // The CA validates at 127.0.0.2, where only the proxy that does not order listens.
    t.equal(await post(pebble.challtestsrv, '/add-a', { host: name, addresses: ['127.0.0.2'] }), 200);
    const config = (address: string, acmeDir: string, orderer: boolean): string => {
      const file = join(dir, `${orderer ? 'orderer' : 'other'}.yaml`);
      writeFileSync(file, `
listeners:
  - { name: main, address: ${address}, port: ${port}, certificates: [{ acme: { names: [${name}] } }] }
routes: [{ upstream: [http://127.0.0.1:9] }]
hsm: { mode: pkcs11, module: ${hsm.module}, token: acme }
admin: { address: 127.0.0.1, port: 0 }
acme: { directory: ${pebble.directory}, directoryCa: ${pebble.caFile}, termsOfServiceAgreed: true, dir: ${acmeDir}, orderer: ${orderer} }
`);
      return file;
    };
    const otherDir = join(dir, 'other');
    const other = await serve(config('127.0.0.2', otherDir, false), hsm.env);
    t.teardown(() => stop(other));
    const orderer = await serve(config('127.0.0.1', join(dir, 'orderer'), true), hsm.env);
    t.teardown(() => stop(orderer));
    const root = await pebble.root();

    const leaf = await waitServed(orderer, '127.0.0.1', port, name, root);
    t.ok(leaf.checkHost(name), 'the orderer serves the certificate it ordered (validated through the other proxy)');
    other.child.kill('SIGHUP'); // looks at the token at once (else within 10 s)
    const same = await waitServed(other, '127.0.0.2', port, name, root);
    t.equal(same.serialNumber, leaf.serialNumber, 'the proxy that does not order serves the same certificate');
    t.notOk(existsSync(join(otherDir, 'acme-account.key')), 'it never opened an ACME account');
    t.notMatch(other.out(), /acme order step: new order/, 'and placed no order');
    t.match(orderer.out(), /acme order step: new order/);

    // On the token: the leaf as a certificate object beside its key (same CKA_ID), the chain, the note.
    const backend = await openPkcs11Backend({ module: hsm.module, token: 'acme', pin: TEST_PIN, poolSize: 1 });
    try {
      const leaves = await findCertificates(backend.token, `acme/${name}`);
      t.equal(leaves.length, 1, 'one leaf certificate object');
      t.ok(leaves[0]!.der.equals(leaf.raw), 'CKA_VALUE is the served leaf');
      const key = await backend.find(leaves[0]!.id.toString('hex'));
      t.ok(key.publicKey.equals(leaf.publicKey), 'its CKA_ID is the token key the certificate certifies');
      const chain = await findCertificates(backend.token, `acme/${name} chain`);
      t.ok(chain.length >= 1, 'the intermediates are certificate objects too');
      t.ok(leaf.verify(new X509Certificate(chain[0]!.der).publicKey), 'the first intermediate issued the leaf');
      const notes = await findData(backend.token, 'hsmproxy acme', `acme/${name}`);
      t.equal(notes.length, 1);
      t.match(JSON.parse(notes[0]!.value.toString()), { serial: leaf.serialNumber, names: [name], keyType: 'ec:p256' });
      t.same(await findData(backend.token, 'hsmproxy acme challenges'), [], 'no challenge is left published');

      // Objects anyone could make without the PIN (public ones) are never taken for an issue: a
      // planted leaf for the same key id and a newer note change nothing.
      const bogus = await selfSignedDer(name);
      await backend.token.run('planting', (s) => {
        const api = backend.token.api;
        api.C_CreateObject(s, [
          { type: ck.CKA_CLASS, value: ck.CKO_CERTIFICATE }, { type: ck.CKA_CERTIFICATE_TYPE, value: ck.CKC_X_509 },
          { type: ck.CKA_TOKEN, value: true }, { type: ck.CKA_PRIVATE, value: false }, { type: ck.CKA_LABEL, value: `acme/${name}` },
          { type: ck.CKA_ID, value: leaves[0]!.id }, { type: ck.CKA_VALUE, value: bogus.der }, { type: ck.CKA_SUBJECT, value: bogus.subject },
        ]);
        const note = { serial: new X509Certificate(bogus.der).serialNumber, names: [name], keyType: 'ec:p256', keyLabel: 'x', account: 'x', orderedAt: new Date(Date.now() + 60_000).toISOString() };
        api.C_CreateObject(s, [
          { type: ck.CKA_CLASS, value: ck.CKO_DATA }, { type: ck.CKA_TOKEN, value: true }, { type: ck.CKA_PRIVATE, value: false },
          { type: ck.CKA_APPLICATION, value: 'hsmproxy acme' }, { type: ck.CKA_LABEL, value: `acme/${name}` }, { type: ck.CKA_VALUE, value: Buffer.from(JSON.stringify(note)) },
        ]);
      });
      const { Pkcs11CertificateStore } = await import('../src/acme/pkcs11-store.js');
      const read = await new Pkcs11CertificateStore(backend, false).read(name);
      t.equal(new X509Certificate(read!.chainPem).serialNumber, leaf.serialNumber, 'the store still reads the orderer\'s issue');
      t.equal(read!.keyId, leaves[0]!.id.toString('hex'));
    } finally {
      await backend.close();
    }
  });

  t.test('acme.orderer: only with pkcs11, required there, with hsm.module and hsm.token', async (t) => {
    const { ConfigInvalidError, parseConfig } = await import('../src/config/index.js');
    const base = (hsmLine: string, acmeExtra: string): string => `
listeners: [{ port: 8443, certificates: [{ acme: { names: [a.example] } }] }]
routes: [{ upstream: [http://127.0.0.1:8080] }]
${hsmLine}
acme: { directory: https://acme.example/dir, termsOfServiceAgreed: true, dir: /tmp${acmeExtra} }
`;
    const issues = (yaml: string): Array<{ path: string; message: string }> => {
      try {
        parseConfig(yaml, { baseDir: tmpdir(), checkFiles: false });
      } catch (err) {
        if (err instanceof ConfigInvalidError) return err.issues;
        throw err;
      }
      return [];
    };
    const pkcs11 = `hsm: { mode: pkcs11, module: ${hsm.module}, token: acme }`;
    t.same(issues(base(pkcs11, ', orderer: true')), [], 'accepted on the orderer');
    t.same(issues(base(pkcs11, ', orderer: false')), [], 'and on the others');
    t.match(issues(base(pkcs11, '')), [{ path: 'acme.orderer', message: /required with hsm.mode pkcs11: true on the one proxy/ }]);
    t.match(issues(base(`hsm: { mode: pkcs11, module: ${hsm.module} }`, ', orderer: true')), [{ path: 'acme', message: /hsm.token through hsm.module: set both/ }]);
    t.match(issues(base('hsm: { mode: embedded, dir: /tmp/x }', ', orderer: true')), [{ path: 'acme.orderer', message: /applies to hsm.mode pkcs11 only/ }]);
  });
}
