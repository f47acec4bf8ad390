// Shared plumbing for every command: one-line errors, exit codes, --json output, credentials.
import type { Command } from 'commander';
import { CommanderError } from 'commander';
import { UsageError } from '../app/errors.js';

// Commands throw it as before; it lives in app/, which throws it too and must not import cli/.
export { UsageError };

/** Error shape every module's errors share: a stable machine code and a human message. */
interface CodedError { code?: unknown; message: string }

/** Turns any thrown value into the single line a user sees. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const coded = err as CodedError;
    // Known, coded errors (HSM_ERR_*, TLS_ERR_*, ENGINE_ERR_*, CONFIG_ERR_*...) carry a message meant for people.
    if (typeof coded.code === 'string' && coded.code.length > 0) return err.message;
    return err.message || String(err);
  }
  return String(err);
}

/** Prints `data` as one JSON document when --json was given, else calls `human`. */
export function output(opts: { json?: boolean }, data: unknown, human: () => void): void {
  if (opts.json) process.stdout.write(JSON.stringify(data, null, 2) + '\n');
  else human();
}

// Commander's own exits that are not errors.
const NOT_ERRORS = new Set(['commander.helpDisplayed', 'commander.help', 'commander.version']);

/** The subcommand names of `argv` (e.g. "key list"), for "run 'hsmproxy key list --help'". */
export function commandPath(program: Command, argv: string[]): string {
  const names: string[] = [];
  let cmd: Command | undefined = program;
  for (const arg of argv) {
    const next: Command | undefined = cmd.commands.find((c) => c.name() === arg || c.aliases().includes(arg));
    if (!next) break;
    names.push(next.name());
    cmd = next;
  }
  return ['hsmproxy', ...names].join(' ');
}

/** Prints an error as people read it (stderr, one line) and, with --json, as a document on stdout. */
export function reportError(err: unknown, argv: string[], program?: Command): number {
  let code: string;
  let message: string;
  let exitCode: number;
  if (err instanceof CommanderError) {
    // commander's messages read "error: unknown option '--bogus'"; the usage hint names the command.
    code = 'CLI_ERR_USAGE';
    message = `${err.message.replace(/^error:\s*/, '')} (run '${program ? commandPath(program, argv) : 'hsmproxy'} --help')`;
    exitCode = 2;
  } else {
    const c = (err as { code?: unknown })?.code;
    code = typeof c === 'string' && c.length > 0 ? c : 'ERR_INTERNAL';
    message = describeError(err);
    exitCode = err instanceof UsageError ? err.exitCode : 1;
  }
  process.stderr.write(`hsmproxy: ${message}\n`);
  if (argv.includes('--json')) process.stdout.write(JSON.stringify({ error: { code, message } }, null, 2) + '\n');
  if (process.env.HSMPROXY_DEBUG && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
  return exitCode;
}

/** Runs the CLI; exits non-zero with one line (never a stack trace) on error. */
export function runMain(build: () => Promise<Command>): void {
  let program: Command | undefined;
  const argv = process.argv.slice(2);
  build()
    .then((p) => { program = p; return p.parseAsync(process.argv); })
    .catch((err: unknown) => {
      if (err instanceof CommanderError && NOT_ERRORS.has(err.code)) {
        process.exitCode = err.exitCode;
        return;
      }
      process.exitCode = reportError(err, argv, program);
    });
}
