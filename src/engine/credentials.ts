// Crypto-user credentials: from HSMPROXY_PIN ("user:password", CloudHSM's convention; a plain PIN
// for PKCS#11 tokens) or from a credentials file readable by its owner only (mode 0600).
// Never from a flag (shell history) and never stored in a key reference.
import { readFile, stat } from 'node:fs/promises';
import { BadCredentialsError } from './errors.js';

/** A crypto user's login. `user` is absent for a plain PKCS#11 PIN. */
export interface Credentials {
  readonly user?: string;
  readonly password: string;
}

/** Parses "user:password" (or a plain PIN when `allowPlainPin`). */
export function parseCredentials(text: string, source: string, allowPlainPin = false): Credentials {
  const line = text.replace(/\r?\n$/, '');
  if (line.includes('\n')) throw new BadCredentialsError(`${source} must hold one line "user:password"`);
  const colon = line.indexOf(':');
  if (colon < 0) {
    if (allowPlainPin && line.length > 0) return { password: line };
    throw new BadCredentialsError(`${source} must be "user:password" (e.g. HSMPROXY_PIN=cu1:secret)`);
  }
  const user = line.slice(0, colon);
  const password = line.slice(colon + 1);
  if (!user || !password) throw new BadCredentialsError(`${source} must be "user:password" with neither part empty`);
  return { user, password };
}

/**
 * Loads credentials: the file named by `file` (or HSMPROXY_CREDENTIALS) if given, else HSMPROXY_PIN.
 * A credentials file must not be readable or writable by group or others.
 */
export async function loadCredentials(opts: { env?: NodeJS.ProcessEnv; file?: string; allowPlainPin?: boolean } = {}): Promise<Credentials> {
  const env = opts.env ?? process.env;
  const file = opts.file ?? env.HSMPROXY_CREDENTIALS;
  if (file) {
    let mode: number;
    let text: string;
    try {
      mode = (await stat(file)).mode;
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new BadCredentialsError(`cannot read credentials file ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (process.platform !== 'win32' && (mode & 0o077) !== 0) {
      throw new BadCredentialsError(`credentials file ${file} is readable by others (mode ${(mode & 0o777).toString(8)}); run \`chmod 600 ${file}\``);
    }
    return parseCredentials(text, `credentials file ${file}`, opts.allowPlainPin);
  }
  const pin = env.HSMPROXY_PIN;
  if (pin === undefined || pin === '') {
    throw new BadCredentialsError('no crypto-user credentials: set HSMPROXY_PIN=user:password or HSMPROXY_CREDENTIALS=FILE (a 0600 file holding user:password)');
  }
  return parseCredentials(pin, 'HSMPROXY_PIN', opts.allowPlainPin);
}
