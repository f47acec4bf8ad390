// Files named by CLI flags (--in, --out, --sig…): read and written here, so a path a user got
// wrong is one line naming the flag, the path and what to do, never a raw ENOENT.
import { constants } from 'node:fs';
import { access, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { UsageError } from './run.js';

function why(err: unknown, path: string, writing: boolean): string {
  const code = (err as NodeJS.ErrnoException).code ?? 'error';
  switch (code) {
    case 'ENOENT': return writing ? `directory ${dirname(path)} does not exist (ENOENT); create it or choose another path` : 'no such file (ENOENT); check the path';
    case 'EACCES': case 'EPERM': return `permission denied (${code}); choose a path you may ${writing ? 'write' : 'read'}`;
    case 'EISDIR': return `it is a directory (EISDIR); name a file`;
    case 'ENOTDIR': return `a part of the path is not a directory (ENOTDIR); check the path`;
    default: return `${(err as Error).message}`;
  }
}

/** Reads the file a flag names (e.g. `--in`). */
export async function readFlagFile(flag: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new UsageError(`cannot read ${flag} ${path}: ${why(err, path, false)}`);
  }
}

/** Writes the file a flag names (e.g. `--out`). */
export async function writeFlagFile(flag: string, path: string, data: string | Buffer, mode?: number): Promise<void> {
  try {
    await writeFile(path, data, mode === undefined ? {} : { mode });
  } catch (err) {
    throw new UsageError(`cannot write ${flag} ${path}: ${why(err, path, true)}`);
  }
}

/**
 * Refuses a file a flag names for writing (e.g. `--out`) that could not be written: an existing
 * file without `force`, a directory, a missing or read-only parent. For commands that make
 * something in the HSM first, so a bad path stops them before anything is made.
 */
export async function checkFlagFileWritable(flag: string, path: string, force?: boolean): Promise<void> {
  let target: string = path;
  try {
    const s = await stat(path);
    if (s.isDirectory()) throw Object.assign(new Error('directory'), { code: 'EISDIR' });
    if (!force) throw new UsageError(`${flag} ${path} already exists; choose another ${flag} or add --force to overwrite it`, 1);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new UsageError(`cannot write ${flag} ${path}: ${why(err, path, true)}`, 1);
    target = dirname(path);
  }
  try {
    if (target !== path && !(await stat(target)).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    await access(target, constants.W_OK);
  } catch (err) {
    throw new UsageError(`cannot write ${flag} ${path}: ${why(err, path, true)}`, 1);
  }
}
