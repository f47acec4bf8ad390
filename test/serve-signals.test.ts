// `hsmproxy serve` as a process, keys in its embedded cluster: SIGHUP picks up a new certificate
// while an established connection keeps working, a broken certificate on SIGHUP is refused and
// the old one keeps serving, and SIGTERM lets an in-flight slow request finish before exit 0.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import type tls from 'node:tls';
import { startDemoUpstream } from '../src/proxy/index.js';
import { connectTls, devCa, prepareServeDir, reissueEcdsa, serveYaml, startServe } from './helpers/serve-fixture.js';

const d = await prepareServeDir();
t.teardown(() => d.cleanup());
const upstream = await startDemoUpstream();
t.teardown(() => upstream.close());
const ca = await devCa(d);

/** One request on an open connection (keep-alive); resolves with the status once the body is in. */
function request(s: tls.TLSSocket, path = '/'): Promise<number> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (chunk: Buffer) => {
      buf += chunk.toString('latin1');
      const head = buf.indexOf('\r\n\r\n');
      const len = Number(/content-length: (\d+)/i.exec(buf)?.[1] ?? -1);
      if (head >= 0 && len >= 0 && buf.length >= head + 4 + len) {
        s.off('data', onData);
        resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(buf)?.[1] ?? 0));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  });
}

const serialOf = (s: tls.TLSSocket) => s.getPeerX509Certificate()!.serialNumber;

t.test('SIGHUP serves a new certificate to new connections while an old connection keeps working', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url));
  t.teardown(() => s.stop());
  const old = await connectTls(s.port, ca);
  t.teardown(() => old.destroy());
  t.equal(await request(old), 200);

  const pem = await reissueEcdsa(d);
  const previous = await readFile(d.pki.ecdsaChain, 'utf8');
  t.teardown(() => writeFile(d.pki.ecdsaChain, previous));
  await writeFile(d.pki.ecdsaChain, pem);
  process.kill(s.child.pid!, 'SIGHUP');
  const want = new X509Certificate(pem).serialNumber;
  let got = '';
  for (const until = Date.now() + 10_000; Date.now() < until && got !== want;) {
    const fresh = await connectTls(s.port, Buffer.concat([ca, Buffer.from(pem)]));
    got = serialOf(fresh);
    fresh.destroy();
    if (got !== want) await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(got, want, 'a new connection gets the new certificate');
  t.notOk(old.destroyed, 'the connection opened before the reload is still open');
  t.equal(await request(old), 200, 'and still carries requests');
});

t.test('SIGHUP with a broken certificate file is refused and the old certificate keeps serving', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url));
  t.teardown(() => s.stop());
  const before = await connectTls(s.port, ca);
  const serial = serialOf(before);
  before.destroy();
  const previous = await readFile(d.pki.ecdsaChain, 'utf8');
  t.teardown(() => writeFile(d.pki.ecdsaChain, previous));
  await writeFile(d.pki.ecdsaChain, 'not a certificate\n');
  process.kill(s.child.pid!, 'SIGHUP');
  for (const until = Date.now() + 10_000; Date.now() < until && !s.logs().some((l) => /reload refused/.test(String(l.msg)));) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const refusal = s.logs().find((l) => /reload refused/.test(String(l.msg)));
  t.ok(refusal, 'the refusal is logged');
  t.match(String(refusal?.err), /localhost-ecdsa\.chain\.pem/, 'naming the file');
  const after = await connectTls(s.port, ca);
  t.equal(serialOf(after), serial, 'new connections still get the previous certificate');
  t.equal(await request(after), 200);
  after.destroy();
});

t.test('SIGTERM lets an in-flight slow request finish, then exits 0', async (t) => {
  const s = await startServe(d, serveYaml(d, upstream.url));
  t.teardown(() => s.stop());
  const conn = await connectTls(s.port, ca);
  t.teardown(() => conn.destroy());
  const slow = request(conn, '/slow?ms=1500');
  await new Promise((r) => setTimeout(r, 300));
  process.kill(s.child.pid!, 'SIGTERM');
  t.equal(await slow, 200, 'the request in flight when SIGTERM arrived is answered');
  t.equal(await s.exited, 0);
  await t.rejects(connectTls(s.port, ca), 'no new connections after the drain');
});
