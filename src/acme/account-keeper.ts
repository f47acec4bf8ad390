// The account of a running proxy, following its key file: the file is read again before each
// order, so a key rotated by `hsmproxy acme account rotate-key` (here or on another proxy sharing
// the file) is used from the next order on, without a restart or SIGHUP.
import { readFile } from 'node:fs/promises';
import type { AcmeConfig } from '../config/index.js';
import { openAccount, type AcmeAccount } from './account.js';

/** Opens the account once, and again whenever the key file's content changed. */
export class AccountKeeper {
  /** The open account and the key file content it was opened with (undefined: made by that open). */
  private opened?: { pem: string | undefined; account: Promise<AcmeAccount> };

  constructor(private readonly config: () => AcmeConfig) {}

  /** The account for the key file as it is now (concurrent orders share one open). */
  async get(): Promise<AcmeAccount> {
    const config = this.config();
    const pem = await readFile(config.accountKey, 'utf8').catch(() => undefined);
    const opened = this.opened;
    // No file yet, or the first open is still making it: that open is the account.
    if (opened && (pem === undefined || opened.pem === undefined || opened.pem === pem)) return opened.account;
    // A key that replaced the one this process used was rotated: it must open the existing
    // account, never register a second one (a rotation the CA has not accepted yet fails the
    // order, which is retried with backoff).
    const account = openAccount(config, opened ? { existingOnly: true } : {});
    const entry = { pem, account };
    this.opened = entry;
    account.then(async () => {
      entry.pem ??= await readFile(config.accountKey, 'utf8').catch(() => undefined);
    }, () => {
      if (this.opened === entry) this.opened = opened;
    });
    return account;
  }
}
