// The `acme` block (the ACME account and CA) and the `acme` certificates of listeners: certificates
// ordered from an ACME CA (RFC 8555) whose keys are generated in the HSM.
import { statSync } from 'node:fs';
import { isIP } from 'node:net';
import { isAbsolute, join, resolve } from 'node:path';
import { at, type Reader } from './reader.js';

export type AcmeKeyType = 'rsa:2048' | 'ec:p256' | 'ec:p384';
export type AcmeChallengeType = 'tls-alpn-01' | 'http-01';
export const ACME_KEY_TYPES: readonly AcmeKeyType[] = ['rsa:2048', 'ec:p256', 'ec:p384'];
export const ACME_CHALLENGES: readonly AcmeChallengeType[] = ['tls-alpn-01', 'http-01'];

/** The ACME CA and account every ACME certificate of this config is ordered with. */
export interface AcmeConfig {
  /** The CA's directory URL (https). */
  directory: string;
  /** PEM bundle trusting the directory's own HTTPS certificate (test CAs); default: the system store. */
  directoryCa?: string;
  /** Contact for the account (mailto:), optional. */
  email?: string;
  /** Always true in a valid config: ACME servers refuse to create an account otherwise. */
  termsOfServiceAgreed: true;
  /** Where issued certificates, their key references and state live. */
  dir: string;
  /** The account key (a 0600 PEM file, made on first use). */
  accountKey: string;
  /** Plain-HTTP port answering http-01 challenges; none → no http-01. */
  httpPort?: number;
  httpAddress: string;
  /** Plain-HTTP requests other than challenges: 308 to https (true) or 404 (false). */
  redirect: boolean;
  /**
   * How long an order lease lasts unless its holder renews it (it renews every third of it), so
   * how long a crashed proxy blocks the others from ordering (default 120).
   */
  leaseSeconds?: number;
  /**
   * hsm.mode pkcs11 only (and required there): this proxy orders and renews the ACME certificates
   * into the token (true), or only serves what the orderer stored there (false). A token has no
   * compare-and-set to lease an order with, so exactly one proxy of those sharing it is the orderer.
   */
  orderer?: boolean;
}

/** One certificate of a listener ordered through ACME. */
export interface AcmeCertificateConfig {
  /** DNS names, the first one names the certificate (its files and `acme status` row). */
  names: string[];
  keyType: AcmeKeyType;
  challenge: AcmeChallengeType;
  /** A renewal keeps the current HSM key (a new CSR with it) instead of generating a fresh one. */
  reuseKey: boolean;
}

const DNS_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** Reads the top-level `acme` block; `hsmDir`/`embedded` give the defaults of `dir`. */
export function readAcme(
  r: Reader, v: unknown, hsm: { dir: string; mode: string; module?: string; token?: string } | undefined,
): AcmeConfig | undefined {
  const path = 'acme';
  const o = r.object(v, path, [
    'directory', 'directoryCa', 'email', 'termsOfServiceAgreed', 'dir', 'accountKey', 'httpPort', 'httpAddress', 'redirect',
    'leaseSeconds', 'orderer',
  ]);
  if (!o) return undefined;
  const directory = r.string(o.directory, at(path, 'directory'));
  if (directory !== undefined) {
    let url: URL | undefined;
    try { url = new URL(directory); } catch { /* reported below */ }
    if (!url || url.protocol !== 'https:') {
      r.fail(at(path, 'directory'), `expected the https:// URL of the CA's ACME directory (e.g. https://acme-v02.api.letsencrypt.org/directory), got "${directory}"`);
    }
  }
  const directoryCa = r.file(o.directoryCa, at(path, 'directoryCa'), { optional: true });
  const email = r.string(o.email, at(path, 'email'), { optional: true });
  if (email !== undefined && !/^[^@\s:]+@[^@\s]+\.[^@\s]+$/.test(email)) r.fail(at(path, 'email'), `expected an e-mail address like ops@example.com, got "${email}"`);
  const tos = r.boolean(o.termsOfServiceAgreed, at(path, 'termsOfServiceAgreed'), { def: false });
  if (tos === false) {
    r.fail(at(path, 'termsOfServiceAgreed'), "must be true: ACME servers refuse to create an account until you agree to the CA's terms of service (the directory's meta.termsOfService); read them, then set termsOfServiceAgreed: true");
  }
  let dir: string | undefined;
  if (o.dir !== undefined) {
    const written = r.string(o.dir, at(path, 'dir'));
    dir = written === undefined ? undefined : isAbsolute(written) ? written : resolve(r.baseDir, written);
  } else if (hsm?.mode === 'embedded') {
    dir = hsm.dir;
  } else if (hsm) {
    r.fail(at(path, 'dir'), `required with hsm.mode ${hsm.mode}: the directory for the ACME account key and certificate state (with an embedded cluster it defaults to hsm.dir)`);
  }
  let accountKey: string | undefined;
  if (o.accountKey !== undefined) {
    const written = r.string(o.accountKey, at(path, 'accountKey'));
    accountKey = written === undefined ? undefined : isAbsolute(written) ? written : resolve(r.baseDir, written);
  } else if (dir) {
    accountKey = join(dir, 'acme-account.key');
  }
  if (accountKey) checkAccountKeyMode(r, accountKey, at(path, 'accountKey'));
  const httpPort = r.integer(o.httpPort, at(path, 'httpPort'), { optional: true, min: 0, max: 65535, what: 'a TCP port' });
  const httpAddress = r.string(o.httpAddress, at(path, 'httpAddress'), { def: '0.0.0.0' });
  if (httpAddress !== undefined && isIP(httpAddress) === 0) r.fail(at(path, 'httpAddress'), `expected an IP address, got "${httpAddress}"`);
  const redirect = r.boolean(o.redirect, at(path, 'redirect'), { def: false });
  if (redirect && httpPort === undefined) r.fail(at(path, 'redirect'), 'needs acme.httpPort: the plain-HTTP listener that redirects');
  const leaseSeconds = r.integer(o.leaseSeconds, at(path, 'leaseSeconds'), { optional: true, min: 1, max: 86_400, what: 'seconds' });
  const orderer = readOrderer(r, o.orderer, hsm);
  if (!directory || tos !== true || !dir || !accountKey || !httpAddress || redirect === undefined) return undefined;
  return {
    ...(orderer !== undefined ? { orderer } : {}),
    directory, ...(directoryCa ? { directoryCa } : {}), ...(email ? { email } : {}), termsOfServiceAgreed: true,
    dir, accountKey, ...(httpPort !== undefined ? { httpPort } : {}), httpAddress, redirect,
    ...(leaseSeconds !== undefined ? { leaseSeconds } : {}),
  };
}

/** `acme.orderer`: PKCS#11 only, and there required; the token and module the ACME keys go to are named. */
function readOrderer(
  r: Reader, v: unknown, hsm: { mode: string; module?: string; token?: string } | undefined,
): boolean | undefined {
  const path = at('acme', 'orderer');
  if (hsm?.mode !== 'pkcs11') {
    if (v !== undefined) r.fail(path, `applies to hsm.mode pkcs11 only: with the simulated cluster (mode ${hsm?.mode ?? '?'}) every proxy may order, under the cluster's order lease; remove it`);
    return undefined;
  }
  if (v === undefined) {
    r.fail(path, 'required with hsm.mode pkcs11: true on the one proxy that orders and renews the ACME certificates into the token, false on every other proxy sharing the token (they serve what the orderer stored)');
    return undefined;
  }
  const orderer = r.boolean(v, path, { def: false });
  if (!hsm.module || !hsm.token) {
    r.fail('acme', 'with hsm.mode pkcs11 the ACME keys and certificates go to hsm.token through hsm.module: set both');
  }
  return orderer;
}

/** The account key signs every order: like the crypto-user credentials, it must not be readable by others. */
function checkAccountKeyMode(r: Reader, file: string, path: string): void {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch {
    return; // made with mode 0600 on first use
  }
  if ((mode & 0o077) !== 0) r.fail(path, `${file} is readable by others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
}

/** Reads `{ acme: { names, keyType, challenge, reuseKey } }`, a listener certificate ordered through ACME. */
export function readAcmeCertificate(r: Reader, v: unknown, path: string): AcmeCertificateConfig | undefined {
  const o = r.object(v, path, ['names', 'keyType', 'challenge', 'reuseKey']);
  if (!o) return undefined;
  const names = r.list(o.names, at(path, 'names'), (n, p) => {
    const s = r.string(n, p)?.toLowerCase();
    if (s === undefined) return undefined;
    if (s.startsWith('*.')) return r.fail(p, `"${s}" is a wildcard: tls-alpn-01 and http-01 cannot validate wildcard names (RFC 8555 §7.1.3 allows only dns-01 for them); list each name`);
    if (isIP(s) !== 0) return r.fail(p, `"${s}" is an IP address: only DNS names can be ordered here`);
    if (s.length > 253 || !DNS_NAME.test(s)) return r.fail(p, `expected a DNS name like shop.example.com, got "${s}"`);
    return s;
  }, { minItems: 1 });
  if (names && new Set(names).size !== names.length) r.fail(at(path, 'names'), 'lists a name twice');
  const keyType = r.string(o.keyType, at(path, 'keyType'), { def: 'ec:p256', oneOf: ACME_KEY_TYPES }) as AcmeKeyType | undefined;
  const challenge = r.string(o.challenge, at(path, 'challenge'), { def: 'tls-alpn-01', oneOf: ACME_CHALLENGES }) as AcmeChallengeType | undefined;
  const reuseKey = r.boolean(o.reuseKey, at(path, 'reuseKey'), { def: false });
  if (!names || names.length === 0 || !keyType || !challenge || reuseKey === undefined) return undefined;
  return { names, keyType, challenge, reuseKey };
}

/**
 * Checks across listeners: ACME certificates need the `acme` block (and http-01 its port), and a
 * name belongs to one ACME certificate (the same certificate may serve several listeners).
 */
export function checkAcmeCertificates(
  r: Reader, acme: AcmeConfig | undefined, acmeGiven: boolean,
  entries: ReadonlyArray<{ path: string; cert: AcmeCertificateConfig }>,
): void {
  const owner = new Map<string, string>();
  const settings = new Map<string, string>();
  for (const { path, cert } of entries) {
    if (!acmeGiven) r.fail(path, 'an acme certificate needs the top-level acme block (directory, email, termsOfServiceAgreed: true)');
    if (acme && cert.challenge === 'http-01' && acme.httpPort === undefined) {
      r.fail(at(path, 'challenge'), 'http-01 needs acme.httpPort (the plain-HTTP port the CA validates on; 80 in production)');
    }
    const key = cert.names.join(', ');
    // The same certificate on several listeners is one order: it cannot have two key types.
    const these = `keyType ${cert.keyType}, challenge ${cert.challenge}, reuseKey ${cert.reuseKey}`;
    const earlier = settings.get(key);
    if (earlier !== undefined && earlier !== these) r.fail(path, `the acme certificate for ${key} is also on another listener with ${earlier}; give both the same settings`);
    settings.set(key, these);
    for (const n of cert.names) {
      const prev = owner.get(n);
      if (prev !== undefined && prev !== key) r.fail(at(path, 'names'), `"${n}" is also in another acme certificate (${prev}); a name belongs to one certificate`);
      owner.set(n, key);
    }
  }
}
