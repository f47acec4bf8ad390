// Crypto-user credentials: from HSMPROXY_PIN ("user:password", CloudHSM's convention; a plain PIN
// for PKCS#11 tokens) or from a credentials file readable by its owner only (mode 0600).
// Never from a flag (shell history) and never stored in a key reference. The file is opened once
// and every check (regular file, mode, owner) is made on that open descriptor before reading from
// it: a path checked and then reopened could be swapped in between.
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
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
 * A credentials file must be a regular file (not a symbolic link) owned by the user running
 * hsmproxy and neither readable nor writable by group or others.
 */
export async function loadCredentials(
  opts: { env?: NodeJS.ProcessEnv; file?: string; allowPlainPin?: boolean } = {},
): Promise<Credentials> {
  const env = opts.env ?? process.env;
  const file = opts.file ?? env.HSMPROXY_CREDENTIALS;
  if (file) return parseCredentials(await readCredentialsFile(file), `credentials file ${file}`, opts.allowPlainPin);
  const pin = env.HSMPROXY_PIN;
  if (pin === undefined || pin === '') {
    throw new BadCredentialsError('no crypto-user credentials: set HSMPROXY_PIN=user:password or HSMPROXY_CREDENTIALS=FILE (a 0600 file holding user:password)');
  }
  return parseCredentials(pin, 'HSMPROXY_PIN', opts.allowPlainPin);
}

// O_NOFOLLOW: a symbolic link as the last component is refused (ELOOP) rather than followed, so the
// file cannot be redirected to one the checks were not meant for. O_NONBLOCK: a FIFO put in its
// place cannot hang the open; fstat then refuses it as not a regular file.
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

async function readCredentialsFile(file: string): Promise<string> {
  let fh: FileHandle;
  try {
    fh = await open(file, OPEN_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new BadCredentialsError(`credentials file ${file} is a symbolic link; name the file itself (a link can be pointed elsewhere)`);
    throw new BadCredentialsError(`cannot read credentials file ${file} (${code ?? 'error'})`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new BadCredentialsError(`credentials file ${file} is not a regular file`);
    if (process.platform !== 'win32') {
      if ((st.mode & 0o077) !== 0) {
        throw new BadCredentialsError(`credentials file ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}); run \`chmod 600 ${file}\``);
      }
      const uid = process.getuid?.();
      if (uid !== undefined && st.uid !== uid) {
        throw new BadCredentialsError(`credentials file ${file} belongs to uid ${st.uid}, not to the user running hsmproxy (uid ${uid}); give it to that user (chown)`);
      }
    }
    try {
      return await fh.readFile('utf8');
    } catch (err) {
      throw new BadCredentialsError(`cannot read credentials file ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  } finally {
    await fh.close();
  }
}
