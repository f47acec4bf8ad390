// Account-key rotation against a real CA (Pebble on loopback): `hsmproxy acme account rotate-key`
// changes the key of the account a running `serve` ordered with; the proxy's next order (a forced
// renewal) succeeds with the new key under the same account, and the CA refuses the old key. A
// rotation left half done (the CA took the key, the file was not replaced) is finished by the next
// run; one the CA never took is started again. Orders started together share one account.
import t from 'tap';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import acme from 'acme-client';
import { AccountKeeper, configureAcmeHttp, readState, certificateDir, rotateAccountKey } from '../src/acme/index.js';
import { cliEntry } from './helpers/cli.js';
import { freePorts, startPebble } from './helpers/pebble.js';
import { acmeOnlyYaml, prepareServeDir, startServe } from './helpers/serve-fixture.js';
import { servedOrNone } from './helpers/served.js';

const tsxLoader = createRequire(import.meta.url).resolve('tsx');

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [`--import=${tsxLoader}`, cliEntry, ...args], (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

t.test('rotate-key: the running proxy orders with the new key, the CA refuses the old one', async (t) => {
  const d = await prepareServeDir();
  t.teardown(() => d.cleanup());
  const [port, httpPort] = await freePorts(2) as [number, number];
  const pebble = await startPebble({ tlsPort: port, httpPort });
  t.teardown(() => pebble.stop());
  const name = `rotate-${randomBytes(4).toString('hex')}.acme.test`;
  const proc = await startServe(d, acmeOnlyYaml(d, port, name, { directory: pebble.directory, directoryCa: pebble.caFile }));
  t.teardown(() => proc.stop());
  const config = join(d.dir, 'hsmproxy.yaml');
  const keyFile = join(d.data, 'acme-account.key');
  const dir = certificateDir(d.data, name);
  const root = await pebble.root();
  const deadline = Date.now() + 90_000;
  let first = await servedOrNone(port, name, root);
  while (!first) {
    if (Date.now() > deadline || proc.child.exitCode !== null) throw new Error(`never issued:\n${proc.stderr()}`);
    await new Promise((r) => setTimeout(r, 250));
    first = await servedOrNone(port, name, root);
  }
  const account = (await readState(dir))!.current!.account;
  const oldKey = await readFile(keyFile);

  const rotated = await cli(['acme', 'account', 'rotate-key', '--config', config, '--json']);
  t.equal(rotated.code, 0, rotated.stderr);
  const out = JSON.parse(rotated.stdout) as { account: string; keyFile: string; thumbprint: string; finishedInterrupted: boolean };
  t.equal(out.account, account, 'the same account, with a new key');
  t.equal(out.keyFile, keyFile);
  t.equal(out.finishedInterrupted, false);
  const newKey = await readFile(keyFile);
  t.not(newKey.toString(), oldKey.toString(), 'the key file holds a new key');
  t.equal(statSync(keyFile).mode & 0o777, 0o600, 'written 0600');
  t.notOk(existsSync(`${keyFile}.new`) || existsSync(`${keyFile}.old`), 'no leftover key files once the CA took the new key');

  // The running proxy's next order uses the new key: same account, new certificate.
  const renew = await cli(['acme', 'renew', '--config', config, '--name', name, '--force', '--json']);
  t.equal(renew.code, 0, 'the forced renewal succeeds', { stderr: renew.stderr, serve: proc.stderr() });
  const after = (await readState(dir))!.current!;
  t.not(after.serial, first.serialNumber, 'an order with the new key succeeded');
  t.equal(after.account, account, 'under the same account');

  // The CA refuses the old key: as a signature for the account, and as a key to look it up with.
  await configureAcmeHttp({ directory: pebble.directory, directoryCa: pebble.caFile, termsOfServiceAgreed: true, dir: d.data, accountKey: keyFile, httpAddress: '127.0.0.1', redirect: false });
  const withOld = new acme.Client({ directoryUrl: pebble.directory, accountKey: oldKey, accountUrl: account });
  await t.rejects(withOld.createOrder({ identifiers: [{ type: 'dns', value: name }] }), 'an order signed with the old key is refused');
  const lookupOld = new acme.Client({ directoryUrl: pebble.directory, accountKey: oldKey });
  await t.rejects(lookupOld.createAccount({ onlyReturnExisting: true }), /unable to find existing account/, 'the CA knows no account for the old key');
  const lookupNew = new acme.Client({ directoryUrl: pebble.directory, accountKey: newKey });
  await lookupNew.createAccount({ onlyReturnExisting: true });
  t.equal(lookupNew.getAccountUrl(), account, 'the new key opens the account');

  // Half done: the CA took a key that never reached the key file (a run killed in between).
  const taken = await acme.crypto.createPrivateEcdsaKey('P-256');
  await lookupNew.updateAccountKey(taken);
  await writeFile(`${keyFile}.new`, taken, { mode: 0o600 });
  const finished = await cli(['acme', 'account', 'rotate-key', '--config', config]);
  t.equal(finished.code, 0, finished.stderr);
  t.match(finished.stdout, /finished the key change an earlier run left half done/);
  t.equal((await readFile(keyFile)).toString(), taken.toString(), 'the key the CA took is installed');
  t.notOk(existsSync(`${keyFile}.new`));

  // Left over but never taken by the CA: discarded, and a new rotation done.
  const stale = await acme.crypto.createPrivateEcdsaKey('P-256');
  await writeFile(`${keyFile}.new`, stale, { mode: 0o600 });
  const again = await cli(['acme', 'account', 'rotate-key', '--config', config]);
  t.equal(again.code, 0, again.stderr);
  t.match(again.stdout, /^rotated the account key: account /);
  const latest = (await readFile(keyFile)).toString();
  t.not(latest, taken.toString());
  t.not(latest, stale.toString(), 'the stale key is not installed');

  const renew2 = await cli(['acme', 'renew', '--config', config, '--name', name, '--force']);
  t.equal(renew2.code, 0, 'the next forced renewal succeeds', { stderr: renew2.stderr, serve: proc.stderr() });
  t.equal((await readState(dir))!.current!.account, account, 'the proxy keeps ordering under the same account');

  const refused = await cli(['acme', 'account', 'rotate-key', '--config', config.replace('hsmproxy.yaml', 'missing.yaml')]);
  t.not(refused.code, 0, 'a missing config is an error');
});

t.test('orders started together share one account, made once, and a rotated key file opens the same account', async (t) => {
  const [tlsPort, httpPort] = await freePorts(2) as [number, number];
  const pebble = await startPebble({ tlsPort, httpPort });
  t.teardown(() => pebble.stop());
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-acme-keeper-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = { directory: pebble.directory, directoryCa: pebble.caFile, termsOfServiceAgreed: true as const, dir, accountKey: join(dir, 'account.key'), httpAddress: '127.0.0.1', redirect: false };
  const keeper = new AccountKeeper(() => config);
  // Three certificates ordered at start: the key file does not exist yet.
  const opened = await Promise.all([keeper.get(), keeper.get(), keeper.get()]);
  t.same(new Set(opened.map((a) => a.url)).size, 1, 'one account for all three');
  t.equal(opened[0], opened[2], 'opened once');
  t.equal(statSync(config.accountKey).mode & 0o777, 0o600, 'its key made 0600');
  t.equal(await keeper.get(), opened[0], 'an unchanged key file is not opened again');

  const rotated = await rotateAccountKey(config);
  t.equal(rotated.account, opened[0]!.url);
  const after = await keeper.get();
  t.not(after, opened[0], 'the rotated key file is read before the next order');
  t.equal(after.url, opened[0]!.url, 'and opens the same account');
});
