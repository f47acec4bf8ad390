// RFC 7512 `pkcs11:` URIs: how a key reference names a token and an object on it.
// Path attributes (;-separated) identify token and object; query attributes (&-separated)
// carry the module and PIN source. Values are percent-decoded; `id` is raw bytes.
import { Pkcs11UriError } from './errors.js';

/** A parsed `pkcs11:` URI. Text values are decoded (UTF-8); `id` is the CKA_ID bytes. */
export interface Pkcs11Uri {
  token?: string;
  manufacturer?: string;
  serial?: string;
  model?: string;
  libraryManufacturer?: string;
  libraryDescription?: string;
  libraryVersion?: string;
  slotDescription?: string;
  slotManufacturer?: string;
  slotId?: number;
  object?: string;
  type?: 'public' | 'private' | 'cert' | 'secret-key' | 'data';
  id?: Buffer;
  pinSource?: string;
  pinValue?: string;
  moduleName?: string;
  modulePath?: string;
  /** Path attributes this parser does not interpret (e.g. vendor `x-` ones), kept for round trips. */
  extra?: Record<string, string>;
  /** Query attributes this parser does not interpret. */
  extraQuery?: Record<string, string>;
}

type TextKey = Exclude<keyof Pkcs11Uri, 'id' | 'slotId' | 'type' | 'extra' | 'extraQuery'>;

// Attribute names in the order format() writes them; identical input gives identical URIs.
const PATH_ATTRS: ReadonlyArray<[string, keyof Pkcs11Uri]> = [
  ['library-manufacturer', 'libraryManufacturer'],
  ['library-description', 'libraryDescription'],
  ['library-version', 'libraryVersion'],
  ['slot-manufacturer', 'slotManufacturer'],
  ['slot-description', 'slotDescription'],
  ['slot-id', 'slotId'],
  ['manufacturer', 'manufacturer'],
  ['model', 'model'],
  ['serial', 'serial'],
  ['token', 'token'],
  ['type', 'type'],
  ['object', 'object'],
  ['id', 'id'],
];
const QUERY_ATTRS: ReadonlyArray<[string, keyof Pkcs11Uri]> = [
  ['module-name', 'moduleName'],
  ['module-path', 'modulePath'],
  ['pin-source', 'pinSource'],
  ['pin-value', 'pinValue'],
];
const OBJECT_TYPES = new Set(['public', 'private', 'cert', 'secret-key', 'data']);

// RFC 7512 §2.3: characters allowed unencoded in path values and in query values.
const UNRESERVED = 'A-Za-z0-9\\-._~';
const PATH_SAFE = new RegExp(`^[${UNRESERVED}:\\[\\]@!$'()*+,=]$`);
const QUERY_SAFE = new RegExp(`^[${UNRESERVED}:\\[\\]@!$'()*+,=/?|]$`);

function encodeBytes(bytes: Buffer, safe: RegExp | null): string {
  let out = '';
  for (const b of bytes) {
    const ch = String.fromCharCode(b);
    out += safe && b < 0x80 && safe.test(ch) ? ch : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

function decodeBytes(raw: string, name: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i]!;
    if (ch === '%') {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw new Pkcs11UriError(`bad percent-encoding in "${name}"`);
      out.push(parseInt(hex, 16));
      i += 2;
    } else {
      const code = ch.charCodeAt(0);
      // Reject characters that must have been encoded (spaces, controls, non-ASCII).
      if (code <= 0x20 || code >= 0x7f || ch === '"' || ch === '<' || ch === '>' || ch === '\\' || ch === '`' || ch === '{' || ch === '}' || ch === '^') {
        throw new Pkcs11UriError(`character ${JSON.stringify(ch)} in "${name}" must be percent-encoded`);
      }
      out.push(code);
    }
  }
  return Buffer.from(out);
}

function decodeText(raw: string, name: string): string {
  const bytes = decodeBytes(raw, name);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new Pkcs11UriError(`"${name}" is not valid UTF-8`);
  }
}

function assign(uri: Pkcs11Uri, key: keyof Pkcs11Uri, name: string, raw: string): void {
  if (key === 'id') {
    uri.id = decodeBytes(raw, name);
  } else if (key === 'slotId') {
    const text = decodeText(raw, name);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw new Pkcs11UriError(`slot-id must be a decimal number, got "${text}"`);
    uri.slotId = Number(text);
  } else if (key === 'type') {
    const text = decodeText(raw, name);
    if (!OBJECT_TYPES.has(text)) throw new Pkcs11UriError(`type must be one of ${[...OBJECT_TYPES].join(', ')}, got "${text}"`);
    uri.type = text as Pkcs11Uri['type'];
  } else {
    uri[key as TextKey] = decodeText(raw, name);
  }
}

function parseAttrs(part: string, sep: string, table: ReadonlyArray<[string, keyof Pkcs11Uri]>, uri: Pkcs11Uri, seen: Set<string>, unknown: 'extra' | 'extraQuery'): void {
  if (part === '') return;
  for (const item of part.split(sep)) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new Pkcs11UriError(`attribute "${item}" is not name=value`);
    const name = item.slice(0, eq);
    const raw = item.slice(eq + 1);
    if (!/^[a-z][a-z0-9-]*$/i.test(name)) throw new Pkcs11UriError(`bad attribute name "${name}"`);
    if (seen.has(name)) throw new Pkcs11UriError(`attribute "${name}" appears twice`);
    seen.add(name);
    const known = table.find(([n]) => n === name);
    if (known) assign(uri, known[1], name, raw);
    else (uri[unknown] ??= {})[name] = decodeText(raw, name);
  }
}

/** Parses an RFC 7512 `pkcs11:` URI; throws Pkcs11UriError naming the bad part. */
export function parsePkcs11Uri(text: string): Pkcs11Uri {
  const m = /^pkcs11:([^?]*)(?:\?(.*))?$/is.exec(text.trim());
  if (!m) throw new Pkcs11UriError(`"${text}" does not start with "pkcs11:"`);
  const uri: Pkcs11Uri = {};
  const seen = new Set<string>();
  parseAttrs(m[1] ?? '', ';', PATH_ATTRS, uri, seen, 'extra');
  parseAttrs(m[2] ?? '', '&', QUERY_ATTRS, uri, seen, 'extraQuery');
  return uri;
}

/** Formats a `pkcs11:` URI; `id` is always fully percent-encoded, as RFC 7512 recommends. */
export function formatPkcs11Uri(uri: Pkcs11Uri): string {
  const render = (table: ReadonlyArray<[string, keyof Pkcs11Uri]>, safe: RegExp): string[] => {
    const out: string[] = [];
    for (const [name, key] of table) {
      const v = uri[key];
      if (v === undefined) continue;
      if (key === 'id') out.push(`${name}=${encodeBytes(v as Buffer, null)}`);
      else out.push(`${name}=${encodeBytes(Buffer.from(String(v), 'utf8'), safe)}`);
    }
    return out;
  };
  const path = render(PATH_ATTRS, PATH_SAFE);
  const query = render(QUERY_ATTRS, QUERY_SAFE);
  for (const [name, value] of Object.entries(uri.extra ?? {})) {
    path.push(`${name}=${encodeBytes(Buffer.from(value, 'utf8'), PATH_SAFE)}`);
  }
  for (const [name, value] of Object.entries(uri.extraQuery ?? {})) {
    query.push(`${name}=${encodeBytes(Buffer.from(value, 'utf8'), QUERY_SAFE)}`);
  }
  return 'pkcs11:' + path.join(';') + (query.length ? '?' + query.join('&') : '');
}
