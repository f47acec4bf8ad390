// `hsmproxy acme status`: the ACME certificates of a config as stored (HSM key label and id, serial,
// expiry, next renewal, ordering account, last error). Reads the certificate store; no CA traffic.
import type { Command } from 'commander';
import { acmeCertificates, certificateDir, nextRenewal, readState, statusOf, type AcmeCertificateStatus } from '../../acme/index.js';
import { loadConfig } from '../../config/index.js';
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
}
