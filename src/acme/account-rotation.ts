// Account-key rotation (RFC 8555 §7.3.5, acme-client's updateAccountKey), for a key that leaked or
// is due. The account (its URL, its certificates) stays; only the key that signs for it changes.
// Files, next to acme.accountKey (FILE): the new key is written to FILE.new and the old one kept as
// FILE.old; once the CA has accepted the new key, FILE.new replaces FILE in one rename and
// FILE.old is removed. A run that was interrupted leaves FILE.new behind: the next run asks the CA
// which key it knows and finishes or undoes it. Running proxies read FILE before each order.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import acme from 'acme-client';
import type { AcmeConfig } from '../config/index.js';
import { configureAcmeHttp, loadAccountKey } from './account.js';
import { AcmeError, describeAcmeFailure } from './errors.js';

/** What a rotation did. */
export interface AccountKeyRotation {
  /** The account URL (unchanged by a rotation). */
  account: string;
  keyFile: string;
  /** RFC 7638 thumbprint of the new key, to match against the CA's records. */
  thumbprint: string;
  /** An earlier, interrupted rotation was finished instead of starting a new one. */
  finishedInterrupted: boolean;
}

/** The account a key opens at the CA (without ever creating one), or undefined when the CA knows no account for it. */
async function accountOf(config: AcmeConfig, pem: Buffer): Promise<acme.Client | undefined> {
  const client = new acme.Client({ directoryUrl: config.directory, accountKey: pem, backoffAttempts: 3 });
  // acme-client's errors carry the problem's detail only; its type decides here (RFC 8555 §7.3.1:
  // accountDoesNotExist is the answer for a key the CA knows no account for; a 5xx or a rate
  // limit says nothing about the key), so the last problem document seen is kept.
  let problem: string | undefined;
  const watch = acme.axios.interceptors.response.use((res) => {
    const type = (res.data as { type?: unknown } | undefined)?.type;
    if (typeof type === 'string') problem = type;
    return res;
  });
  try {
    await client.createAccount({ onlyReturnExisting: true });
    return client;
  } catch (err) {
    if (problem === 'urn:ietf:params:acme:error:accountDoesNotExist') return undefined;
    throw new AcmeError(`cannot ask the CA at ${config.directory} which account key it knows: ${describeAcmeFailure(err)}`, 'ACME_ERR_CA', { cause: err });
  } finally {
    acme.axios.interceptors.response.eject(watch);
  }
}

/** Writes `pem` to `file` mode 0600 in one rename (never a half-written key). */
async function writeKeyFile(file: string, pem: Buffer | string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, pem, { mode: 0o600 });
  await rename(tmp, file);
}

/** RFC 7638 JWK thumbprint: SHA-256 of the required members in lexicographic order, no whitespace. */
function thumbprint(pem: Buffer): string {
  const jwk = acme.crypto.getJwk(pem) as unknown as Record<string, string>;
  const members = jwk.kty === 'EC' ? ['crv', 'kty', 'x', 'y'] : ['e', 'kty', 'n'];
  return createHash('sha256').update(JSON.stringify(Object.fromEntries(members.map((m) => [m, jwk[m]])))).digest('base64url');
}

/** Puts FILE.new in place of FILE (the CA has accepted it) and drops FILE.old. */
async function install(file: string): Promise<void> {
  await rename(`${file}.new`, file);
  await rm(`${file}.old`, { force: true });
}

/** Rotates the account key of `config` at its CA. */
export async function rotateAccountKey(config: AcmeConfig): Promise<AccountKeyRotation> {
  await configureAcmeHttp(config);
  const file = config.accountKey;
  const next = `${file}.new`;
  const pending = await readFile(next).catch(() => undefined);
  if (pending) {
    const client = await accountOf(config, pending);
    if (client) {
      await install(file);
      const account = client.getAccountUrl();
      return { account, keyFile: file, thumbprint: thumbprint(pending), finishedInterrupted: true };
    }
    // The CA never accepted it: start again.
    await rm(next, { force: true });
  }
  if (!existsSync(file)) throw new AcmeError(`acme.accountKey ${file} does not exist: there is no account to rotate (the first order creates it)`, 'ACME_ERR_ACCOUNT_KEY');
  const { pem: current } = await loadAccountKey(file);
  const client = await accountOf(config, current);
  if (!client) throw new AcmeError(`acme.accountKey ${file} opens no account at ${config.directory}: nothing to rotate (the first order creates the account)`, 'ACME_ERR_ACCOUNT_KEY');
  const account = client.getAccountUrl();
  const fresh = await acme.crypto.createPrivateEcdsaKey('P-256');
  await writeKeyFile(`${file}.old`, current);
  await writeKeyFile(next, fresh);
  try {
    await client.updateAccountKey(fresh);
  } catch (err) {
    // The request may have reached the CA even when its answer did not: ask which key it knows.
    let accepted: acme.Client | undefined;
    try {
      accepted = await accountOf(config, fresh);
    } catch {
      throw new AcmeError(`the CA at ${config.directory} did not answer the key change (${describeAcmeFailure(err)}), and whether it took the new key is unknown; the new key is in ${next}, the old one still in ${file}: run the command again to finish or undo it`, 'ACME_ERR_CA', { cause: err });
    }
    if (!accepted) {
      await rm(next, { force: true });
      await rm(`${file}.old`, { force: true });
      throw new AcmeError(`the CA at ${config.directory} refused the key change: ${describeAcmeFailure(err)}; ${file} is unchanged`, 'ACME_ERR_CA', { cause: err });
    }
  }
  await install(file);
  return { account, keyFile: file, thumbprint: thumbprint(fresh), finishedInterrupted: false };
}
