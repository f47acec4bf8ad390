// config/: the hsmproxy YAML configuration — schema, defaults, loading and validation that names
// the path of every bad field. Imports nothing from src/ (only node built-ins and `yaml`).
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { ConfigFileError, ConfigSyntaxError } from './errors.js';
import type { Config } from './schema.js';
import { validateConfig, type ValidateOptions } from './validate.js';

export * from './acme.js';
export * from './autoscale.js';
export * from './hedge.js';
export * from './delegated-credentials.js';
export * from './errors.js';
export { HTTP2_DEFAULTS, type Http2Config } from './http2.js';
export * from './schema.js';
export { validateConfig, type ValidateOptions } from './validate.js';

/** Parses YAML text and validates it; `source` names the file in error messages. */
export function parseConfig(text: string, opts: ValidateOptions = {}): Config {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const where = `${position(text, e.pos[0])}: `;
    // The parser's own "at line L, column C:" (and the excerpt after it) would repeat the position.
    const what = e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '').replace(/:$/, '');
    throw new ConfigSyntaxError(opts.source ?? 'config', `${where}${what}`);
  }
  return validateConfig(doc.toJS(), opts);
}

/**
 * "line L, column C" of the character at `offset`. An error found at the end of the text (an
 * unclosed bracket, say) is placed after the last character, not on a line the file lacks.
 */
function position(text: string, offset: number): string {
  const end = text.replace(/\n+$/, '').length;
  const at = Math.min(offset, end);
  const before = text.slice(0, at);
  const line = before.split('\n').length;
  return `line ${line}, column ${at - (before.lastIndexOf('\n') + 1) + 1}`;
}

/**
 * Reads and validates a config file. Relative paths inside it resolve against `baseDir`
 * (default: the current directory, as the example configs under config/ expect).
 */
export function loadConfig(file: string, opts: Omit<ValidateOptions, 'source'> = {}): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigFileError(file, code === 'ENOENT' ? 'config file not found' : `cannot read config file (${code ?? String(err)})`);
  }
  return parseConfig(text, { ...opts, source: file });
}

