// Errors of app/: the user-fixable error every command shares, and the worker processes' failures.
import { ProxyError } from '../proxy/errors.js';

/** An error a user caused and can fix (a flag, a config field, the environment): one line, never a stack trace. */
export class UsageError extends Error {
  // The code cli/ has always printed with --json; it stays stable where the class moved.
  readonly code = 'CLI_ERR_USAGE';
  constructor(message: string, readonly exitCode = 2) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A worker process (workers: N) could not start; the message is the worker's own reason. */
export class WorkerStartError extends ProxyError {
  constructor(readonly worker: number, reason: string) {
    super(`worker ${worker} did not start: ${reason}`, 'PROXY_ERR_WORKER_START');
    this.name = 'WorkerStartError';
  }
}

/** A worker refused a reload and keeps serving its previous configuration. */
export class WorkerReloadError extends ProxyError {
  constructor(readonly worker: number, reason: string) {
    super(`worker ${worker} refused the reload: ${reason}`, 'PROXY_ERR_WORKER_RELOAD');
    this.name = 'WorkerReloadError';
  }
}
