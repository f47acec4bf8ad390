// The request-target as the router sees it and the upstream receives it: one normalised
// origin-form path, so that `/pub/../admin` or `/pub/%2e%2e/admin` cannot be routed as /pub and
// then resolved to /admin by the upstream. Routing and forwarding use the same string.
import { hostOf } from './router.js';
import { HttpParseError } from './http1/parse.js';

/** The path (+ query) to route on and to send upstream. */
export interface NormalisedTarget { path: string; query: string }

const HEX = /^[0-9A-Fa-f]{2}$/;
// RFC 3986 §2.3 unreserved characters: percent-encoding them means nothing, so they are decoded.
const UNRESERVED = /[A-Za-z0-9\-._~]/;
const PORTS: Record<string, string> = { 'http:': '80', 'https:': '443' };

/**
 * Normalises the request-target of a request whose Host header is `host`. Accepts origin-form,
 * absolute-form whose authority agrees with Host (RFC 9112 §3.2.2 asks to ignore Host; a reverse
 * proxy that routes on Host must instead refuse the disagreement), and `*` for OPTIONS.
 */
export function normaliseTarget(method: string, target: string, host: string | undefined): NormalisedTarget {
  // `OPTIONS *` asks about the server, not a resource: no upstream route can answer for all
  // upstreams, and nginx refuses it too.
  if (target === '*') throw new HttpParseError(400, `asterisk-form target (${method} *) is not supported`);
  if (target.includes('\\')) throw new HttpParseError(400, 'backslash in the request target');
  let rest = target;
  if (!target.startsWith('/')) {
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      throw new HttpParseError(400, 'malformed request target');
    }
    if (!(url.protocol in PORTS) || url.username || url.password) throw new HttpParseError(400, 'absolute-form target must be http(s) without credentials');
    const port = url.port || PORTS[url.protocol]!;
    const given = (host ?? '').toLowerCase();
    const givenPort = /:(\d+)$/.exec(given)?.[1] ?? PORTS[url.protocol]!;
    if (hostOf(given) !== hostOf(url.host) || givenPort !== port) throw new HttpParseError(400, 'the absolute-form target\'s authority does not match Host');
    // The URL parser has already resolved dot-segments; the checks below still run on the result.
    rest = url.pathname + url.search;
  }
  if (rest.includes('#')) throw new HttpParseError(400, 'fragment in the request target');
  const q = rest.indexOf('?');
  const rawPath = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? '' : rest.slice(q);
  return { path: normalisePath(rawPath), query };
}

/** Decodes unreserved percent-escapes and removes dot-segments (RFC 3986 §6.2.2, §5.2.4). */
export function normalisePath(raw: string): string {
  // The common case: nothing to decode and no dot-segment possible.
  if (!raw.includes('%') && !raw.includes('.') && !raw.includes('\\')) return raw;
  if (raw.includes('\\')) throw new HttpParseError(400, 'backslash in the request path');
  let decoded = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c !== '%') { decoded += c; continue; }
    const hex = raw.slice(i + 1, i + 3);
    if (!HEX.test(hex)) throw new HttpParseError(400, 'malformed percent-encoding in the request path');
    const ch = String.fromCharCode(parseInt(hex, 16));
    decoded += UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
    i += 2;
  }
  const path = removeDotSegments(decoded);
  // An encoded separator (%2F, %5C) next to dots is a traversal to whoever decodes it later.
  for (const seg of path.split(/\/|%2F|%5C/)) {
    if (seg === '.' || seg === '..') throw new HttpParseError(400, 'an encoded / or \\ hides a dot-segment in the request path');
  }
  return path;
}

function removeDotSegments(path: string): string {
  const out: string[] = [];
  const segs = path.split('/');
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!;
    if (s === '.') { if (i === segs.length - 1) out.push(''); continue; }
    if (s === '..') { out.pop(); if (i === segs.length - 1) out.push(''); continue; }
    out.push(s);
  }
  return `/${out.join('/')}`;
}
