// Which PKCS#11 module a key reference may make this process load. A reference holds no secret, is
// written 0644 and is copied between machines, yet the module it records is dlopen'ed into the
// process that holds the PIN: so a recorded module is loaded only if the operator allowed it.
import { realpathSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { ModuleLoadError, ModuleNotAllowedError } from './errors.js';

/** Where the caller's user names a module they trust, for refusals: e.g. `--module` and `HSMPROXY_PKCS11_MODULES`. */
export interface AllowHint { override: string; allowList: string }

const LIBRARY_HINT: AllowHint = { override: "the opener's module option", allowList: 'its allowedModules' };

/**
 * The real path of `recorded` (the module the reference in `file` names) when it is one of
 * `allowed`; throws ModuleNotAllowedError otherwise. Both sides are compared after resolving
 * symlinks and `..`, so the check judges the file that would be loaded, and the real path is
 * what the caller loads (a symlink swapped after the check cannot redirect the load).
 */
export function allowedModulePath(
  recorded: string, file: string, allowed: readonly string[], hint: AllowHint = LIBRARY_HINT,
): string {
  // A relative path would be resolved against whatever directory the process runs in.
  if (!isAbsolute(recorded)) {
    throw new ModuleNotAllowedError(`${file} names PKCS#11 module "${recorded}", a relative path, which is never loaded; name the module by its absolute path with ${hint.override} or in ${hint.allowList}`);
  }
  const real = realPath(recorded);
  if (real === undefined) {
    // A module moved since the reference was made is fixed by an override, not by editing the file.
    throw new ModuleLoadError(recorded, `file not found (recorded in ${file}; pass --module, or set hsm.module for serve, to use the module where it is now)`);
  }
  for (const p of allowed) {
    if (!isAbsolute(p)) throw new ModuleNotAllowedError(`allowed PKCS#11 module "${p}" is not an absolute path; list modules by absolute path`);
    if (realPath(p) === real) return real;
  }
  const shown = real === recorded ? recorded : `${recorded} (${real})`;
  const list = allowed.length > 0 ? allowed.join(', ') : 'none';
  throw new ModuleNotAllowedError(`${file} names PKCS#11 module ${shown}, which is not allowed (allowed: ${list}); a key reference cannot choose the code this process loads: if you trust that module, name it with ${hint.override} or add it to ${hint.allowList}`);
}

/** The path with symlinks and `..` resolved, or undefined when nothing is there. */
function realPath(p: string): string | undefined {
  try {
    return realpathSync(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new ModuleLoadError(p, `cannot resolve the path (${code ?? (err as Error).message})`);
  }
}
