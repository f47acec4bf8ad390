// The certificate-expiry metric the "certificate expiring within 21 days" alert reads:
// hsmproxy_certificate_not_after_seconds{listener,subject,serial} on /metrics, following reloads.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readCertificateExpiry } from '../src/proxy/cert-expiry.js';
import { issue } from './helpers/proxy-certs.js';
import { baseYaml, startHarness, type Harness } from './helpers/proxy-harness.js';

const METRIC = 'hsmproxy_certificate_not_after_seconds';
const yaml = baseYaml('  - upstream: [ "{{up0}}" ]');

/** The expiry samples on /metrics, keyed by serial. */
async function expiries(h: Harness): Promise<Map<string, { labels: string; value: number }>> {
  const text = await (await fetch(`http://127.0.0.1:${h.proxy.adminAddress()!.port}/metrics`)).text();
  const out = new Map<string, { labels: string; value: number }>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${METRIC}{`)) continue;
    const serial = /serial="([^"]*)"/.exec(line)?.[1] ?? '';
    out.set(serial, { labels: line.slice(METRIC.length, line.lastIndexOf('}') + 1), value: Number(line.split(' ').pop()) });
  }
  return out;
}

const notAfter = (file: string): number => Math.floor(Date.parse(new X509Certificate(readFileSync(file)).validTo) / 1000);

t.test('/metrics exports the notAfter of the certificate a listener serves, with listener, subject and serial', async (t) => {
  const h = await startHarness(t, yaml);
  const cert = h.config(yaml).listeners[0]!.certificates[0]!.cert;
  const leaf = new X509Certificate(readFileSync(cert));
  const got = await expiries(h);
  t.equal(got.size, 1, 'one certificate, one series');
  const [serial, sample] = [...got][0]!;
  t.equal(serial, leaf.serialNumber.toLowerCase());
  t.equal(sample.value, notAfter(cert), 'Unix seconds of notAfter');
  t.match(sample.labels, /listener="main"/);
  t.match(sample.labels, /subject="CN=localhost"/);
  t.ok(sample.value > Date.now() / 1000 && sample.value < Date.now() / 1000 + 3 * 86400, 'the 2-day test certificate expires within 3 days');
});

t.test('after a reload the replaced certificate is no longer reported, the new one is', async (t) => {
  const h = await startHarness(t, yaml);
  const before = [...(await expiries(h)).keys()];
  const next = issue(h.dir, 'renewed', ['localhost', '127.0.0.1']);
  await h.proxy.reload(h.config(yaml.replace('{{cert}}', next.cert).replace('{{key}}', next.key)));
  const after = await expiries(h);
  t.same([...after.keys()], [next.serial.toLowerCase()], 'only the renewed certificate');
  t.notOk(after.has(before[0]!), 'the old serial is gone, so its alert resolves');
});

t.test('a chain file reports its leaf, not the CA behind it', async (t) => {
  const h = await startHarness(t, yaml);
  const leaf = h.config(yaml).listeners[0]!.certificates[0]!;
  const chain = join(h.dir, 'chain.pem');
  writeFileSync(chain, readFileSync(leaf.cert, 'utf8') + readFileSync(h.ca, 'utf8'));
  const got = await readCertificateExpiry([{ ...h.config(yaml).listeners[0]!, certificates: [{ ...leaf, cert: chain }] }]);
  t.equal(got.length, 1);
  t.equal(got[0]!.subject, 'CN=localhost');
  t.equal(got[0]!.notAfterSeconds, notAfter(leaf.cert));
});

t.test('an unreadable certificate file is skipped, not thrown', async (t) => {
  const h = await startHarness(t, yaml);
  const l = h.config(yaml).listeners[0]!;
  const got = await readCertificateExpiry([{ ...l, certificates: [{ ...l.certificates[0]!, cert: join(h.dir, 'missing.pem') }, l.certificates[0]!] }]);
  t.equal(got.length, 1, 'the readable one is still reported');
});
