// ACME failures get a clear error and never stop the proxy or the certificate it serves: a name
// the CA refuses (Pebble's domainBlocklist), a challenge the CA cannot validate, a CA that returns
// a certificate for another key (a stub in front of Pebble), a CA that stops answering; and an
// unreachable directory is named in the error.
import t from 'tap';
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openAccount } from '../src/acme/index.js';
import { cliEntry } from './helpers/cli.js';
import { freePorts, startAcmeStub, startPebble } from './helpers/pebble.js';
import { prepareServeDir, sample, startServe, type ServeProcess } from './helpers/serve-fixture.js';
import { servedCertificate } from './helpers/served.js';

const tsxLoader = createRequire(import.meta.url).resolve('tsx');

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [`--import=${tsxLoader}`, cliEntry, ...args], (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

t.test('refused names, failed challenges, bad certificates and a silent CA: clear errors, the old certificate keeps serving', async (t) => {
  const d = await prepareServeDir();
  t.teardown(() => d.cleanup());
  // Pebble validates http-01 on a port where nothing listens: that challenge is refused.
  const [port, acmeHttp, closedHttp] = await freePorts(3) as [number, number, number];
  const tag = randomBytes(4).toString('hex');
  const good = `good-${tag}.acme.test`;
  const blocked = `blocked-${tag}.acme.test`;
  const refused = `refused-${tag}.acme.test`;
  const pebble = await startPebble({ tlsPort: port, httpPort: closedHttp, blocklist: [blocked] });
  t.teardown(() => pebble.stop());
  const tmp = mkdtempSync(join(tmpdir(), 'hsmproxy-acme-bogus-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(tmp, 'k.pem'), '-out', join(tmp, 'c.pem'), '-subj', `/CN=${good}`, '-addext', `subjectAltName=DNS:${good}`, '-days', '2'], { stdio: 'ignore' });
  const stub = await startAcmeStub(pebble, { bogusPem: readFileSync(join(tmp, 'c.pem'), 'utf8') });
  t.teardown(() => stub.close());
  const yaml = `
listeners:
  - name: main
    address: 127.0.0.1
    port: ${port}
    certificates:
      - acme: { names: [${good}] }
      - acme: { names: [${blocked}] }
      - acme: { names: [${refused}], challenge: http-01 }
routes: [{ upstream: [http://127.0.0.1:9] }]
hsm: { mode: embedded, dir: ${d.data}, hsms: 2 }
admin: { address: 127.0.0.1, port: 0 }
acme: { directory: ${stub.directory}, directoryCa: ${pebble.caFile}, termsOfServiceAgreed: true, httpPort: ${acmeHttp}, httpAddress: 127.0.0.1 }
`;
  const proc: ServeProcess = await startServe(d, yaml);
  t.teardown(() => proc.stop());
  const config = join(d.dir, 'hsmproxy.yaml');
  const root = await pebble.root();

  type Row = { name: string; serial?: string; lastError?: { message: string } };
  const status = async (): Promise<Row[]> => JSON.parse((await cli(['acme', 'status', '--config', config, '--json'])).stdout) as Row[];
  const deadline = Date.now() + 90_000;
  let rows: Row[] = [];
  for (;;) {
    rows = await status();
    const done = rows.find((r) => r.name === good)?.serial && rows.find((r) => r.name === blocked)?.lastError && rows.find((r) => r.name === refused)?.lastError;
    if (done) break;
    if (Date.now() > deadline) throw new Error(`the orders did not settle: ${JSON.stringify(rows)}\n${proc.stderr()}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  const first = await servedCertificate(port, good, root);
  t.equal(first.serialNumber, rows.find((r) => r.name === good)!.serial, 'the good name is issued and served next to the failing ones');
  t.match(rows.find((r) => r.name === blocked)!.lastError!.message, new RegExp(`ordering ${blocked}: new order failed: .*issuance is forbidden by policy`), 'a name the CA refuses: the CA says why');
  t.match(rows.find((r) => r.name === refused)!.lastError!.message, new RegExp(`the CA did not validate ${refused} over http-01: .*(connection refused|Connection refused)`, 'i'), 'a refused challenge names the name, the challenge and why');
  t.equal(proc.child.exitCode, null, 'the proxy keeps running');

  stub.mode = 'bad-cert';
  const bad = await cli(['acme', 'renew', '--config', config, '--name', good, '--force']);
  t.equal(bad.code, 1);
  t.match(bad.stderr, new RegExp(`the renewal failed: the CA returned an invalid certificate for ${good}: its public key is not the HSM key of the CSR; the previous certificate keeps serving`));
  t.equal((await servedCertificate(port, good, root)).serialNumber, first.serialNumber, 'the old certificate keeps serving after an invalid one');

  stub.mode = 'down';
  const down = await cli(['acme', 'renew', '--config', config, '--name', good, '--force']);
  t.equal(down.code, 1);
  t.match(down.stderr, new RegExp(`the renewal failed: ordering ${good}: new order failed: .*(socket hang up|ECONNRESET)`));
  t.equal((await servedCertificate(port, good, root)).serialNumber, first.serialNumber, 'the old certificate keeps serving while the CA is down');

  const metrics = await new Promise<string>((resolve, reject) => {
    request({ host: '127.0.0.1', port: proc.admin, path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve(body));
    }).on('error', reject).end();
  });
  t.ok((sample(metrics, 'hsmproxy_acme_renewal_consecutive_failures', { name: good }) ?? 0) >= 2, 'failures in a row are exported');
  t.ok((sample(metrics, 'hsmproxy_acme_orders_total', { result: 'failed', challenge: 'http-01' }) ?? 0) >= 1);
  t.equal(proc.child.exitCode, null, 'the proxy is still running');
});

t.test('an unreachable directory is named in the error', async (t) => {
  const [closed] = await freePorts(1) as [number];
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-acme-unreachable-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const directory = `https://127.0.0.1:${closed}/dir`;
  await t.rejects(openAccount({
    directory, termsOfServiceAgreed: true, dir, accountKey: join(dir, 'account.key'), httpAddress: '127.0.0.1', redirect: false,
  }), { code: 'ACME_ERR_CA', message: new RegExp(`^cannot open the ACME account at ${directory}: connect ECONNREFUSED 127\\.0\\.0\\.1:${closed}$`) });
});
