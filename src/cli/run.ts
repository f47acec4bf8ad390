// Shared plumbing for every command: one-line errors, exit codes, --json output, credentials.
import type { Command } from 'commander';
import { CommanderError } from 'commander';

/** An error a user caused and can fix: printed as one line, never as a stack trace. */
export class UsageError extends Error {
  readonly code = 'CLI_ERR_USAGE';
  constructor(message: string, readonly exitCode = 2) {
    super(message);
    this.name = 'UsageError';
  }
}

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

/** Runs the CLI; exits non-zero with one line (never a stack trace) on error. */
export function runMain(build: () => Promise<Command>): void {
  build()
    .then((program) => program.parseAsync(process.argv))
    .catch((err: unknown) => {
      if (err instanceof CommanderError) {
        // commander already printed its message (help, version, or a bad flag).
        process.exitCode = err.exitCode;
        return;
      }
      process.stderr.write(`hsmproxy: ${describeError(err)}\n`);
      if (process.env.HSMPROXY_DEBUG && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
      process.exitCode = err instanceof UsageError ? err.exitCode : 1;
    });
}
