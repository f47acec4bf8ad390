// File checks run after the structure is valid: every named file exists and is readable, and
// files holding secrets are not readable by group or others (like CloudHSM's credential files).
import { accessSync, constants, statSync } from 'node:fs';
import type { ConfigIssue } from './errors.js';
import type { FileRef } from './reader.js';

/** Checks each referenced file; returns one issue per problem, naming the field and the path as written. */
export function checkFiles(files: FileRef[]): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const f of files) {
    let mode: number;
    try {
      const st = statSync(f.resolved);
      if (!st.isFile()) { issues.push({ path: f.path, message: `not a regular file: ${f.written}` }); continue; }
      mode = st.mode;
      accessSync(f.resolved, constants.R_OK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      issues.push({ path: f.path, message: code === 'ENOENT' ? `file not found: ${f.written}` : `cannot read ${f.written} (${code ?? 'error'})` });
      continue;
    }
    if (f.secret && (mode & 0o077) !== 0) {
      issues.push({ path: f.path, message: `${f.written} is readable by others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${f.written}` });
    }
  }
  return issues;
}
