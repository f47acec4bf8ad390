// A small path-aware reader over parsed YAML: each accessor checks one field's type and range,
// records `path: what was expected` on failure, and returns undefined so validation carries on
// and reports every bad field in one pass.
import { isAbsolute, resolve } from 'node:path';
import type { ConfigIssue } from './errors.js';

/** A file named by the config: where, as written, resolved, and whether it holds a secret (must be 0600). */
export interface FileRef { path: string; written: string; resolved: string; secret: boolean }

/** Appends a key or an index to a field path: `listeners` + 0 → `listeners[0]`. */
export function at(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path ? `${path}.${key}` : key;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `"${v.length > 40 ? v.slice(0, 40) + '…' : v}"`;
  return `${typeof v} ${String(v)}`;
}

/** Collects issues while reading fields of untrusted input. */
export class Reader {
  readonly issues: ConfigIssue[] = [];
  /** Files to check once the structure is known to be right. */
  readonly files: FileRef[] = [];

  constructor(readonly baseDir: string) {}

  /** A path to a file, resolved against the base directory and remembered for the file checks. */
  file(v: unknown, path: string, opts: { optional?: boolean; secret?: boolean } = {}): string | undefined {
    const written = this.string(v, path, { optional: opts.optional });
    if (written === undefined) return undefined;
    const resolved = isAbsolute(written) ? written : resolve(this.baseDir, written);
    this.files.push({ path, written, resolved, secret: opts.secret ?? false });
    return resolved;
  }

  /** Records a problem at `path`. */
  fail(path: string, message: string): undefined {
    this.issues.push({ path: path || '(top level)', message });
    return undefined;
  }

  /** A mapping whose keys must all be in `keys`; unknown keys are reported, not ignored. */
  object(v: unknown, path: string, keys: readonly string[]): Record<string, unknown> | undefined {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return this.fail(path, `expected a mapping, got ${describe(v)}`);
    const rec = v as Record<string, unknown>;
    for (const k of Object.keys(rec)) {
      if (!keys.includes(k)) this.fail(at(path, k), `unknown key (expected one of: ${keys.join(', ')})`);
    }
    return rec;
  }

  /** A string; `oneOf` restricts it to a set. Missing → `def`, or an error when there is no default. */
  string(
    v: unknown, path: string, opts: { def?: string; oneOf?: readonly string[]; optional?: boolean } = {},
  ): string | undefined {
    if (v === undefined) {
      if (opts.def !== undefined || opts.optional) return opts.def;
      return this.fail(path, opts.oneOf ? `required (one of: ${opts.oneOf.join(', ')})` : 'required (expected a string)');
    }
    if (typeof v !== 'string' && !(opts.oneOf && typeof v === 'number')) return this.fail(path, `expected a string, got ${describe(v)}`);
    const s = String(v);
    if (opts.oneOf && !opts.oneOf.includes(s)) return this.fail(path, `expected one of ${opts.oneOf.map((o) => `'${o}'`).join(', ')}, got ${describe(v)}`);
    if (s.length === 0) return this.fail(path, 'expected a non-empty string');
    return s;
  }

  /** true or false. Missing → `def`. */
  boolean(v: unknown, path: string, opts: { def: boolean }): boolean | undefined {
    if (v === undefined) return opts.def;
    if (typeof v !== 'boolean') return this.fail(path, `expected true or false, got ${describe(v)}`);
    return v;
  }

  /** An integer within [min, max]. */
  integer(
    v: unknown, path: string, opts: { def?: number; min: number; max: number; optional?: boolean; what?: string },
  ): number | undefined {
    if (v === undefined) {
      if (opts.def !== undefined || opts.optional) return opts.def;
      return this.fail(path, `required (expected ${opts.what ?? 'an integer'} from ${opts.min} to ${opts.max})`);
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < opts.min || v > opts.max) {
      return this.fail(path, `expected ${opts.what ?? 'an integer'} from ${opts.min} to ${opts.max}, got ${describe(v)}`);
    }
    return v;
  }

  /** A list whose items are read by `item`; items that fail are dropped after reporting. */
  list<T>(
    v: unknown, path: string, item: (v: unknown, path: string) => T | undefined,
    opts: { def?: T[]; minItems?: number } = {},
  ): T[] | undefined {
    if (v === undefined) {
      if (opts.def !== undefined) return opts.def;
      return this.fail(path, 'required (expected a list)');
    }
    if (!Array.isArray(v)) return this.fail(path, `expected a list, got ${describe(v)}`);
    if (opts.minItems !== undefined && v.length < opts.minItems) return this.fail(path, `expected at least ${opts.minItems} item${opts.minItems > 1 ? 's' : ''}`);
    const out: T[] = [];
    v.forEach((x, i) => {
      const r = item(x, at(path, i));
      if (r !== undefined) out.push(r);
    });
    return out;
  }
}
