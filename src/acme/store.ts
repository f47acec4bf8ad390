// Issued certificates on disk, one directory per certificate under `acme.dir`/acme/NAME: the chain
// and key reference of each issue under names of their own (chain-SERIAL.pem, key-SERIAL.pem) and
// state.json naming the current pair, replaced by rename, so a reader never sees a chain with
// another issue's key.
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A key of an earlier issue, kept until its certificate has expired (connections may still use it). */
export interface RetiredKey { keyId: string; label: string; keyFile: string; chainFile: string; notAfter: string }

/** What state.json records for one certificate. */
export interface CertificateState {
  names: string[];
  keyType: string;
  /** Current issue (absent before the first one). */
  current?: {
    chainFile: string; keyFile: string; keyId: string; keyLabel: string;
    serial: string; notBefore: string; notAfter: string; orderedAt: string;
    /** The account URL that ordered it (`acme revoke` needs the same account). */
    account: string;
  };
  retired: RetiredKey[];
  lastError?: { message: string; at: string };
  /** The CA's renewal window for the current issue (RFC 9773), when its directory offers renewalInfo. */
  ari?: { certId: string; start: string; end: string; retryAfter: string };
}

/** The directory of the certificate named `name` (its first DNS name). */
export function certificateDir(acmeDir: string, name: string): string {
  return join(acmeDir, 'acme', name);
}

/** Reads state.json; undefined when the certificate was never ordered. */
export async function readState(dir: string): Promise<CertificateState | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, 'state.json'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return JSON.parse(text) as CertificateState;
}

/** Replaces state.json in one rename. */
export async function writeState(dir: string, state: CertificateState): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `state.json.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, join(dir, 'state.json'));
}

/** Removes a retired issue's files (its key is destroyed in the HSM by the caller). */
export async function removeIssueFiles(dir: string, r: { keyFile?: string; chainFile: string }): Promise<void> {
  if (r.keyFile) await rm(join(dir, r.keyFile), { force: true });
  await rm(join(dir, r.chainFile), { force: true });
}

/** A renewal asked for by `hsmproxy acme renew`, picked up by the running proxy's next look at the store. */
export interface RenewRequest { force: boolean; at: string }

const RENEW_REQUEST = 'renew.request';

/** Leaves a renewal request for the running proxy (replacing an earlier one). */
export async function writeRenewRequest(dir: string, req: RenewRequest): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `${RENEW_REQUEST}.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify(req) + '\n', { mode: 0o600 });
  await rename(tmp, join(dir, RENEW_REQUEST));
}

/** Takes the pending renewal request, if any (removing it, so it runs once). */
export async function takeRenewRequest(dir: string): Promise<RenewRequest | undefined> {
  const file = join(dir, RENEW_REQUEST);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  await rm(file, { force: true });
  try {
    const req = JSON.parse(text) as Partial<RenewRequest>;
    return { force: req.force === true, at: typeof req.at === 'string' ? req.at : new Date().toISOString() };
  } catch {
    return { force: false, at: new Date().toISOString() };
  }
}
