// Files named by CLI flags (--in, --out, --sig…): read and written here, so a path a user got
// wrong is one line naming the flag, the path and what to do, never a raw ENOENT.
import { readFile, writeFile } from 'node:fs/promises';
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
