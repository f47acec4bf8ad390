// `hsmproxy acme status`: the ACME certificates of a config as stored (HSM key label and id, serial,
// expiry, next renewal, ordering account, last error). Reads the certificate store; no CA traffic.
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AcmeError, acmeCertificates, certificateDir, describeAcmeFailure, nextRenewal, openAccount, readState,
  rotateAccountKey, statusOf, writeRenewRequest, type AcmeCertificateStatus, type CertificateState,
} from '../../acme/index.js';
import { loadConfig, type Config } from '../../config/index.js';
import { UsageError, output } from '../run.js';

/** Registers the `acme` command group. */
export function register(program: Command): void {
  const group = program.command('acme').description('certificates ordered from an ACME CA, keys in the HSM');

  group.command('status')
    .description('per certificate: HSM key label, serial, notAfter, next renewal, account, last error')
    .requiredOption('--config <file>', 'the hsmproxy config')
    .option('--json', 'print one JSON document')
    .action(async (opts: { config: string; json?: boolean }) => {
      const config = loadConfig(opts.config, { checkFiles: false });
      if (!config.acme) throw new UsageError(`${opts.config} has no acme block: no certificate is ordered through ACME`);
      const rows: AcmeCertificateStatus[] = [];
      for (const spec of acmeCertificates(config)) {
        const state = await readState(certificateDir(config.acme.dir, spec.names[0]!));
        const same = state && state.names.join(',') === spec.names.join(',') && state.keyType === spec.keyType;
        rows.push(statusOf(spec, same ? state : undefined, same ? nextRenewal(state) : undefined));
      }
      output(opts, rows, () => {
        for (const r of rows) {
          process.stdout.write(`${r.name} (${r.names.join(', ')}; ${r.keyType})\n`);
          if (r.serial) {
            process.stdout.write(`  HSM key   "${r.keyLabel}" ${r.keyId}\n  serial    ${r.serial}\n  notAfter  ${r.notAfter}\n  renewal   ${r.nextRenewal ?? '-'}\n  account   ${r.account}\n`);
          } else {
            process.stdout.write('  not issued yet\n');
          }
          if (r.lastError) process.stdout.write(`  last error ${r.lastError.at}: ${r.lastError.message}\n`);
        }
      });
    });

  group.command('renew')
    .description('renew a certificate now (with --force even before its renewal time); the running proxy orders it and swaps it in')
    .requiredOption('--config <file>', 'the hsmproxy config')
    .requiredOption('--name <name>', 'the certificate (its first DNS name)')
    .option('--force', 'renew even if the renewal time has not come')
    .option('--wait <seconds>', 'how long to wait for the running proxy to finish (default 120)', '120')
    .option('--json', 'print one JSON document')
    .action(async (opts: { config: string; name: string; force?: boolean; wait: string; json?: boolean }) => {
      const { dir, state } = await certificate(opts.config, opts.name);
      const due = nextRenewal(state);
      if (!opts.force && due && due.getTime() > Date.now()) {
        output(opts, { name: opts.name, renewed: false, nextRenewal: due.toISOString() }, () => {
          process.stdout.write(`${opts.name}: not due until ${due.toISOString()}; add --force to renew now\n`);
        });
        return;
      }
      const before = state?.current?.serial;
      const asked = new Date();
      await writeRenewRequest(dir, { force: opts.force === true, at: asked.toISOString() });
      const deadline = Date.now() + Number(opts.wait) * 1000;
      for (;;) {
        const now = await readState(dir);
        if (now?.current && now.current.serial !== before) {
          const cur = now.current;
          const { serial, notAfter, keyLabel } = cur;
          const result = { name: opts.name, renewed: true, serial, notAfter, keyLabel };
          output(opts, result, () => {
            process.stdout.write(`${opts.name}: renewed, serial ${cur.serial}, notAfter ${cur.notAfter}, HSM key "${cur.keyLabel}"\n`);
          });
          return;
        }
        if (now?.lastError && Date.parse(now.lastError.at) >= asked.getTime()) {
          throw new UsageError(`${opts.name}: the renewal failed: ${now.lastError.message} (the current certificate keeps serving)`, 1);
        }
        if (Date.now() > deadline) {
          throw new UsageError(`${opts.name}: no running proxy finished the renewal within ${opts.wait} s; the request stays in ${dir} and runs at its next look (every 10 s, at once on SIGHUP, or at start)`, 1);
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    });

  group.command('revoke')
    .description('revoke the current certificate at the CA (with the account that ordered it); the running proxy orders a new one')
    .requiredOption('--config <file>', 'the hsmproxy config')
    .requiredOption('--name <name>', 'the certificate (its first DNS name)')
    .option('--json', 'print one JSON document')
    .action(async (opts: { config: string; name: string; json?: boolean }) => {
      const { config, dir, state } = await certificate(opts.config, opts.name);
      const cur = state?.current;
      if (!cur) throw new UsageError(`${opts.name}: no certificate has been issued, nothing to revoke`);
      let account;
      try {
        account = await openAccount(config.acme!, { existingOnly: true });
      } catch (err) {
        const why = err instanceof AcmeError ? err.message : describeAcmeFailure(err);
        throw new UsageError(`${opts.name}: serial ${cur.serial} was ordered by account ${cur.account}, and acme.accountKey does not open an account on the CA (${why}); revoke with the key of ${cur.account}`, 1);
      }
      if (account.url !== cur.account) {
        throw new UsageError(`${opts.name}: serial ${cur.serial} was ordered by account ${cur.account}, but acme.accountKey is account ${account.url}; revoke with the key of ${cur.account}`, 1);
      }
      try {
        await account.client.revokeCertificate(await readFile(join(dir, cur.chainFile), 'utf8'));
      } catch (err) {
        throw new UsageError(`${opts.name}: the CA refused to revoke serial ${cur.serial}: ${describeAcmeFailure(err)}`, 1);
      }
      // A revoked certificate must be replaced: the running proxy orders a new one at its next look.
      await writeRenewRequest(dir, { force: true, at: new Date().toISOString() });
      output(opts, { name: opts.name, revoked: cur.serial }, () => {
        process.stdout.write(`${opts.name}: revoked serial ${cur.serial}; the running proxy orders a replacement\n`);
      });
    });

  const account = group.command('account').description('the ACME account (its key file, acme.accountKey)');
  account.command('rotate-key')
    .description('replace the account key at the CA (RFC 8555 key change): the account and its certificates stay; running proxies use the new key from their next order')
    .requiredOption('--config <file>', 'the hsmproxy config')
    .option('--json', 'print one JSON document')
    .action(async (opts: { config: string; json?: boolean }) => {
      const config = loadConfig(opts.config, { checkFiles: false });
      if (!config.acme) throw new UsageError(`${opts.config} has no acme block: there is no ACME account`);
      let done;
      try {
        done = await rotateAccountKey(config.acme);
      } catch (err) {
        throw new UsageError(err instanceof AcmeError ? err.message : `the key change failed: ${describeAcmeFailure(err)}`, 1);
      }
      output(opts, done, () => {
        const what = done.finishedInterrupted ? 'finished the key change an earlier run left half done' : 'rotated the account key';
        process.stdout.write(`${what}: account ${done.account}, new key ${done.keyFile} (JWK thumbprint ${done.thumbprint}); the CA now refuses the old key\n`);
      });
    });
}

/** The config, store directory and stored state of the ACME certificate named `name`. */
async function certificate(
  file: string, name: string,
): Promise<{ config: Config; dir: string; state: CertificateState | undefined }> {
  const config = loadConfig(file, { checkFiles: false });
  if (!config.acme) throw new UsageError(`${file} has no acme block: no certificate is ordered through ACME`);
  const names = acmeCertificates(config).map((c) => c.names[0]!);
  if (!names.includes(name)) throw new UsageError(`no acme certificate named ${name} in ${file} (configured: ${names.join(', ') || 'none'})`);
  const dir = certificateDir(config.acme.dir, name);
  return { config, dir, state: await readState(dir) };
}
