// `hsmproxy config check [file]` and `hsmproxy config show [file]`: validate a configuration and
// print it with every default filled in. Calls config/ only.
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { ConfigInvalidError, loadConfig, type Config } from '../../config/index.js';
import { certificateIssues, delegationReport, type DelegationStatus } from '../../proxy/certificate-files.js';
import { output } from '../run.js';

const DEFAULT_FILE = 'config/hsmproxy.yaml';

interface ConfigOptions { json?: boolean; files?: boolean }

function load(file: string, opts: ConfigOptions): Config {
  // Paths inside the config are relative to the directory hsmproxy runs from, as `serve` reads them.
  // The demo's certificates are made by its first start, so (as serve does) they are not missing before.
  const parsed = loadConfig(file, { checkFiles: false });
  return parsed.demo || opts.files === false ? parsed : loadConfig(file, { checkFiles: true });
}

/** Whether `demo` certificates still have to be made (by the first `hsmproxy serve`). */
function demoPending(c: Config): boolean {
  return c.demo && c.listeners.some((l) => l.certificates.some((x) => !existsSync(x.cert) || !existsSync(x.key)));
}

/** Loads and checks `file` the way serve will: fields, files, and each certificate against its key reference. */
async function check(file: string, opts: ConfigOptions): Promise<Config> {
  const c = load(file, opts);
  if (opts.files === false || demoPending(c)) return c;
  const issues = await certificateIssues(c);
  if (issues.length > 0) throw new ConfigInvalidError(issues, file);
  return c;
}

/** Per listener, whether delegated credentials are on and which certificates can delegate (RFC 9345). */
interface ListenerDelegation { listener: string; enabled: boolean; certificates: DelegationStatus[] }
async function delegationReports(c: Config): Promise<ListenerDelegation[]> {
  return Promise.all(c.listeners.map(async (l) => ({
    listener: l.name, enabled: l.delegatedCredentials?.enabled === true, certificates: await delegationReport(l),
  })));
}

/** Registers the `config` command group. */
export function register(program: Command): void {
  const group = program.command('config').description('validate and inspect hsmproxy configuration files');

  group.command('check')
    .description('validate a config file: fields, named files, and each certificate against its key reference; every problem is listed with the path of its field')
    .argument('[file]', 'the YAML config', DEFAULT_FILE)
    .option('--no-files', 'skip checking that named files (certificates, keys, credentials) exist')
    .option('--json', 'print the result as JSON')
    .action(async (file: string, opts: ConfigOptions) => {
      try {
        const c = await check(file, opts);
        const pending = opts.files !== false && demoPending(c);
        const delegation = opts.files === false || pending ? [] : await delegationReports(c);
        output(opts, {
          file, valid: true, issues: [], ...(pending ? { demoCertificatesPending: true } : {}),
          ...(delegation.length ? { delegatedCredentials: delegation } : {}),
        }, () => {
          process.stdout.write(`${file}: valid (${c.listeners.length} listener${c.listeners.length === 1 ? '' : 's'}, ${c.routes.length} route${c.routes.length === 1 ? '' : 's'}, hsm mode ${c.hsm.mode})\n`);
          if (pending) process.stdout.write('  demo: its certificates and key references are made by the first `hsmproxy serve` with this config\n');
          for (const l of delegation) {
            process.stdout.write(`  listener ${l.listener}: delegated credentials ${l.enabled ? 'enabled' : 'off'}\n`);
            for (const s of l.certificates) {
              const how = s.canDelegate ? 'can delegate (DelegationUsage)'
                : `cannot delegate (no DelegationUsage)${l.enabled ? ': served with an HSM signature per handshake' : ''}`;
              process.stdout.write(`    ${s.cert}: ${how}\n`);
            }
          }
        });
      } catch (err) {
        if (!(err instanceof ConfigInvalidError)) throw err;
        output(opts, { file, valid: false, issues: err.issues }, () => {
          process.stderr.write(`${file}: ${err.issues.length} problem${err.issues.length === 1 ? '' : 's'}:\n`);
          for (const i of err.issues) process.stderr.write(`  ${i.path}: ${i.message}\n`);
        });
        process.exitCode = 1;
      }
    });

  group.command('show')
    .description('print the configuration with every default filled in and paths resolved (JSON)')
    .argument('[file]', 'the YAML config', DEFAULT_FILE)
    .option('--no-files', 'skip checking that named files exist')
    .option('--json', 'print as JSON (the only format; accepted for consistency)')
    .action((file: string, opts: ConfigOptions) => {
      process.stdout.write(JSON.stringify(load(file, opts), null, 2) + '\n');
    });
}
