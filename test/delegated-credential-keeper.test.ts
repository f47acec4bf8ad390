// The credential keeper (proxy/): renewal at half-life, a failing renewal keeps the current
// credential until it expires and never past it, then the certificate is served with HSM
// signatures; the log lines, the metrics (renewals by result, fallback, seconds to expiry) and the
// recovery once the HSM signs again. Short validities and a controllable signer; no network.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { createRegistry, defineMetrics, subscribeMetrics } from '../src/metrics/index.js';
import { CredentialKeeper, logDelegatedCredentials } from '../src/proxy/delegated-credentials.js';
import { SoftSigner } from './helpers/soft-signer.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-keeper-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'k.pem', '-out', 'c.pem',
  '-subj', '/CN=keeper', '-days', '2', '-addext', 'keyUsage=critical,digitalSignature', '-addext', '1.3.6.1.4.1.44363.44=ASN1:NULL'], { cwd: dir, stdio: 'ignore' });
const chain = [Buffer.from(new X509Certificate(readFileSync(join(dir, 'c.pem'))).raw)];
const key = createPrivateKey(readFileSync(join(dir, 'k.pem')));

async function until(cond: () => boolean, ms = 30_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return cond();
}

const value = async (text: Promise<string>, name: string, labels: Record<string, string> = {}) => {
  for (const line of (await text).split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name && Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return undefined;
};

t.test('a failing renewal: served until expiry, then HSM signatures; log, metrics; recovery', async (t) => {
  const registry = createRegistry();
  const metrics = defineMetrics(registry);
  t.teardown(subscribeMetrics(metrics));
  const lines: Array<{ level: number; msg: string }> = [];
  const sink = new Writable({ write(chunk: Buffer, _e, cb) { lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string }); cb(); } });
  t.teardown(logDelegatedCredentials(pino(sink)));

  const hsm = new SoftSigner(key);
  const keeper = new CredentialKeeper({ listener: 'main', chain, signer: hsm, keyType: 'ec:p256', validityMs: 3000 });
  t.teardown(() => keeper.stop());
  await keeper.start();
  const first = keeper.current(Date.now());
  t.ok(first, 'a credential serves');
  t.equal(await value(registry.metrics(), 'hsmproxy_delegated_credential_fallback', { listener: 'main' }), 0, 'no fallback');
  const left = await value(registry.metrics(), 'hsmproxy_delegated_credential_expiry_seconds', { listener: 'main' });
  t.ok(left !== undefined && left > 1 && left <= 3, `seconds to expiry (${left})`);

  hsm.opts.fault = 'reject';
  t.ok(await until(() => lines.some((l) => /renewal failed; the current one serves/.test(l.msg))), 'the failed renewal at half-life is logged');
  t.equal(keeper.current(Date.now()), first, 'the current credential still serves');
  t.ok(await until(() => keeper.current(Date.now()) === undefined), 'and stops serving at its expiry');
  t.ok(Date.now() >= first!.expiresAtMs, 'not before');
  t.ok(await until(() => lines.some((l) => l.level === 50 && /expired before a renewal succeeded; serving with HSM signatures/.test(l.msg))),
    'the fallback is logged as an error');
  t.equal(await value(registry.metrics(), 'hsmproxy_delegated_credential_fallback', { listener: 'main' }), 1, 'fallback gauge 1');
  t.equal(await value(registry.metrics(), 'hsmproxy_delegated_credential_expiry_seconds', { listener: 'main' }), 0, 'no seconds left');
  t.ok((await value(registry.metrics(), 'hsmproxy_delegated_credential_renewals_total', { result: 'failed' }))! >= 1, 'failed renewals counted');

  hsm.opts.fault = undefined;
  const calls = hsm.calls;
  t.ok(await until(() => keeper.current(Date.now()) !== undefined), 'a renewal succeeds once the HSM signs again (retried)');
  t.equal(hsm.calls, calls + 1, 'with one signature');
  t.equal(await value(registry.metrics(), 'hsmproxy_delegated_credential_fallback', { listener: 'main' }), 0, 'fallback cleared');
  keeper.stop();
  t.equal(keeper.current(Date.now()), undefined, 'stop forgets the credential');
  t.equal(await value(registry.metrics(), 'hsmproxy_delegated_credential_fallback', { listener: 'main' }), undefined, 'and its series');
});
