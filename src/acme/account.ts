// The ACME account: its key is a 0600 PEM file (acme-client signs each JWS synchronously from a
// PEM key, so it cannot live in the HSM), made on first use; and the acme-client Client over it.
import { createPrivateKey } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { Agent } from 'node:https';
import { dirname } from 'node:path';
import acme from 'acme-client';
import type { AcmeConfig } from '../config/index.js';
import { AcmeAccountKeyError, AcmeCaError, describeAcmeFailure } from './errors.js';

/** Reads the account key, or makes a P-256 one (mode 0600) when the file does not exist. */
export async function loadAccountKey(file: string): Promise<{ pem: Buffer; created: boolean }> {
  let mode: number | undefined;
  try {
    mode = (await stat(file)).mode;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new AcmeAccountKeyError(file, `cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (mode === undefined) {
    const pem = await acme.crypto.createPrivateEcdsaKey('P-256');
    await mkdir(dirname(file), { recursive: true });
    try {
      // 'wx': never replace a key another proxy of the cluster wrote meanwhile.
      await writeFile(file, pem, { mode: 0o600, flag: 'wx' });
      return { pem, created: true };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new AcmeAccountKeyError(file, `cannot write it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      return loadAccountKey(file);
    }
  }
  if ((mode & 0o077) !== 0) throw new AcmeAccountKeyError(file, `readable by others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
  const pem = await readFile(file);
  try {
    createPrivateKey(pem);
  } catch {
    throw new AcmeAccountKeyError(file, 'not a PEM private key (delete it to have a new account made, or restore the shared one)');
  }
  return { pem, created: false };
}

/**
 * acme-client's HTTP settings. Its axios instance is one per process, so the CA bundle of
 * `directoryCa` applies to every ACME request of this process (there is one acme block per config).
 */
export async function configureAcmeHttp(config: AcmeConfig): Promise<void> {
  const ca = config.directoryCa ? await readFile(config.directoryCa, 'utf8') : undefined;
  acme.axios.defaults.httpsAgent = new Agent({ keepAlive: true, ...(ca ? { ca } : {}) });
  acme.axios.defaults.timeout = 30_000;
  // Retries of unreachable or overloaded CAs are the manager's (with backoff, the old certificate
  // serving meanwhile), not minutes of acme-client's own per request.
  const settings = (acme.axios.defaults as unknown as { acmeSettings: Record<string, number> }).acmeSettings;
  settings.retryMaxAttempts = 1;
  settings.retryDefaultDelay = 1;
  keepNetworkErrors();
}

let networkErrorsKept = false;

/**
 * acme-client 5.4's response interceptor ends a request that got no response (refused, reset, timed
 * out) by reading `response.config` of undefined, so the user would see "Cannot read properties of
 * undefined" instead of ECONNREFUSED. A handler placed before it turns such an error into one
 * without `config`, which it passes through untouched. axios keeps interceptors in `handlers`.
 */
function keepNetworkErrors(): void {
  const handlers = (acme.axios.interceptors.response as unknown as { handlers?: unknown[] }).handlers;
  if (networkErrorsKept || !Array.isArray(handlers)) return;
  networkErrorsKept = true;
  handlers.unshift({
    fulfilled: null, synchronous: false, runWhen: null,
    rejected: (err: { response?: unknown; message?: string; code?: string }) => {
      if (err.response) return Promise.reject(err);
      const plain = new Error(err.message ?? 'no response from the CA');
      return Promise.reject(Object.assign(plain, { code: err.code }));
    },
  });
}

/** An account on the CA: the client and the account URL (which certificates record). */
export interface AcmeAccount { client: acme.Client; url: string }

/** Opens (creating if needed, unless `existingOnly`) the account of `config` on its CA. */
export async function openAccount(config: AcmeConfig, opts: { existingOnly?: boolean } = {}): Promise<AcmeAccount> {
  await configureAcmeHttp(config);
  const { pem } = await loadAccountKey(config.accountKey);
  // Polling an order or challenge: 250 ms doubling to 4 s, 12 tries (~40 s) before giving up.
  const client = new acme.Client({
    directoryUrl: config.directory, accountKey: pem, backoffAttempts: 12, backoffMin: 250, backoffMax: 4_000,
  });
  try {
    try {
      await client.createAccount(opts.existingOnly ? { onlyReturnExisting: true } : {
        termsOfServiceAgreed: true, ...(config.email ? { contact: [`mailto:${config.email}`] } : {}),
      });
    } catch (err) {
      // The account exists (another proxy of the cluster made it with this shared key): acme-client
      // then sends an update, which a CA may refuse when it changes nothing (Pebble: "Use
      // POST-as-GET"). The account URL is known by then: read the account instead.
      if (!/POST-as-GET/i.test(describeAcmeFailure(err))) throw err;
      await client.updateAccount({});
    }
  } catch (err) {
    throw new AcmeCaError(`cannot open the ACME account at ${config.directory}: ${describeAcmeFailure(err)}`, { cause: err });
  }
  return { client, url: client.getAccountUrl() };
}
