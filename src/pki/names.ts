// Parsing what users type: subjects ("CN=example.com,O=Example Ltd,C=GB", RFC 4514 escaping)
// and subjectAltName entries ("DNS:example.com", "IP:127.0.0.1", "email:a@b", "URI:https://…").
import { isIP } from 'node:net';
import { SanSyntaxError, SubjectSyntaxError } from './errors.js';

/** Attribute types accepted in a subject, by the short names people use (and their OIDs). */
const ATTRIBUTES: Record<string, string> = {
  CN: 'CN', O: 'O', OU: 'OU', C: 'C', L: 'L', ST: 'ST', DC: 'DC', E: 'E', EMAILADDRESS: 'E',
  SERIALNUMBER: '2.5.4.5', STREET: '2.5.4.9', UID: '0.9.2342.19200300.100.1.1', GN: 'G', SN: 'SN', T: 'T', TITLE: 'T',
};

/** A distinguished name in @peculiar/x509's JsonName form, in DER order (most significant RDN first). */
export type JsonName = Array<Record<string, string[]>>;

/** One subjectAltName entry in @peculiar/x509's form. */
export interface SanEntry {
  type: 'dns' | 'ip' | 'email' | 'url';
  value: string;
}

/** Splits on an unescaped separator, keeping escapes for the next stage. */
function splitUnescaped(text: string, sep: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === '\\' && i + 1 < text.length) {
      cur += ch + text[i + 1];
      i++;
    } else if (ch === sep) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  return parts;
}

function unescapeValue(raw: string, subject: string): string {
  const bytes: number[] = [];
  const value = raw.trim();
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (ch !== '\\') {
      if (ch === '"') throw new SubjectSyntaxError(subject, 'a double quote must be escaped as \\"');
      bytes.push(...Buffer.from(ch, 'utf8'));
      continue;
    }
    const next = value.slice(i + 1, i + 3);
    if (/^[0-9a-fA-F]{2}$/.test(next)) {
      bytes.push(parseInt(next, 16));
      i += 2;
    } else if (i + 1 < value.length && ',+"\\<>;= #'.includes(value[i + 1]!)) {
      bytes.push(value.charCodeAt(i + 1));
      i++;
    } else {
      throw new SubjectSyntaxError(subject, `bad escape "\\${value[i + 1] ?? ''}"`);
    }
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(bytes));
  } catch {
    throw new SubjectSyntaxError(subject, 'a hex escape does not form valid UTF-8');
  }
}

/**
 * Parses "CN=example.com,O=Example Ltd,C=GB". As in RFC 4514 the string lists the most specific
 * RDN first, so the result (DER order) is reversed: openssl prints "C = GB, O = …, CN = …".
 */
export function parseSubject(subject: string): JsonName {
  if (subject.trim() === '') throw new SubjectSyntaxError(subject, 'it is empty');
  const rdns: JsonName = [];
  for (const rdnText of splitUnescaped(subject, ',')) {
    const rdn: Record<string, string[]> = {};
    for (const atv of splitUnescaped(rdnText, '+')) {
      const eq = atv.indexOf('=');
      if (eq < 0) throw new SubjectSyntaxError(subject, `"${atv.trim()}" is not TYPE=value`);
      const typeText = atv.slice(0, eq).trim();
      const type = ATTRIBUTES[typeText.toUpperCase()] ?? (/^\d+(\.\d+)+$/.test(typeText) ? typeText : undefined);
      if (!type) throw new SubjectSyntaxError(subject, `unknown attribute type "${typeText}" (known: CN, O, OU, C, L, ST, DC, E, serialNumber, street, UID, or a dotted OID)`);
      const value = unescapeValue(atv.slice(eq + 1), subject);
      if (value === '') throw new SubjectSyntaxError(subject, `${typeText} has an empty value`);
      if (type === 'C' && !/^[A-Za-z]{2}$/.test(value)) throw new SubjectSyntaxError(subject, `C must be a two-letter country code, got "${value}"`);
      if (value.length > 256) throw new SubjectSyntaxError(subject, `${typeText} is longer than 256 characters`);
      (rdn[type] ??= []).push(value);
    }
    rdns.push(rdn);
  }
  return rdns.reverse();
}

const DNS_LABEL = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;

/** Parses SAN entries; each argument may hold several, comma-separated. */
export function parseSans(args: readonly string[]): SanEntry[] {
  const out: SanEntry[] = [];
  for (const arg of args) {
    for (const raw of arg.split(',')) {
      const entry = raw.trim();
      if (entry === '') continue;
      const colon = entry.indexOf(':');
      if (colon <= 0) throw new SanSyntaxError(entry, 'it has no TYPE: prefix');
      const type = entry.slice(0, colon);
      const value = entry.slice(colon + 1).trim();
      if (value === '') throw new SanSyntaxError(entry, 'the value is empty');
      switch (type.toLowerCase()) {
        case 'dns': {
          const labels = value.replace(/\.$/, '').split('.');
          const ok = labels.every((l, i) => DNS_LABEL.test(l) || (i === 0 && l === '*' && labels.length > 2));
          if (!ok || value.length > 253) throw new SanSyntaxError(entry, 'not a valid DNS name');
          out.push({ type: 'dns', value: value.toLowerCase() });
          break;
        }
        case 'ip': {
          const v = value.replace(/^\[(.*)\]$/, '$1');
          if (!isIP(v)) throw new SanSyntaxError(entry, 'not an IPv4 or IPv6 address');
          out.push({ type: 'ip', value: v });
          break;
        }
        case 'email':
          if (!/^[^\s@]+@[^\s@]+$/.test(value)) throw new SanSyntaxError(entry, 'not an email address');
          out.push({ type: 'email', value });
          break;
        case 'uri':
          try {
            new URL(value);
          } catch {
            throw new SanSyntaxError(entry, 'not an absolute URI');
          }
          out.push({ type: 'url', value });
          break;
        default:
          throw new SanSyntaxError(entry, `unknown SAN type "${type}"`);
      }
    }
  }
  return out;
}
