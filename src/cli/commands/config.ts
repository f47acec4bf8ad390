// `hsmproxy config check [file]` and `hsmproxy config show [file]`: validate a configuration and
// print it with every default filled in. Calls config/ only.
import type { Command } from 'commander';
import { ConfigInvalidError, loadConfig, type Config } from '../../config/index.js';
import { output } from '../run.js';

const DEFAULT_FILE = 'config/hsmproxy.yaml';

interface ConfigOptions { json?: boolean; files?: boolean }

function load(file: string, opts: ConfigOptions): Config {
  // Paths inside the config are relative to the directory hsmproxy runs from, as `serve` reads them.
  return loadConfig(file, { checkFiles: opts.files !== false });
}

/** Registers the `config` command group. */
export function register(program: Command): void {
  const group = program.command('config').description('validate and inspect hsmproxy configuration files');

  group.command('check')
    .description('validate a config file; every problem is listed with the path of its field')
    .argument('[file]', 'the YAML config', DEFAULT_FILE)
    .option('--no-files', 'skip checking that named files (certificates, keys, credentials) exist')
    .option('--json', 'print the result as JSON')
    .action((file: string, opts: ConfigOptions) => {
      try {
        const c = load(file, opts);
        output(opts, { file, valid: true, issues: [] }, () => {
          process.stdout.write(`${file}: valid (${c.listeners.length} listener${c.listeners.length === 1 ? '' : 's'}, ${c.routes.length} route${c.routes.length === 1 ? '' : 's'}, hsm mode ${c.hsm.mode})\n`);
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
