// listeners[].clientAuth: client-certificate checking (mTLS) on a listener, and the request
// headers that carry the verified identity to the upstream.
import { at, type Reader } from './reader.js';
import { CLIENT_AUTH_MODES, DEFAULTS, type ClientAuthConfig, type ClientCertHeaders } from './schema.js';

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const SAN_TYPES = ['DNS', 'IP', 'email', 'URI'];

/** Reads a listener's clientAuth block (absent = mode none); every problem is reported with its path. */
export function readClientAuth(r: Reader, v: unknown, path: string): ClientAuthConfig | undefined {
  if (v === undefined) return { mode: 'none', headers: { ...DEFAULTS.clientCertHeaders } };
  const o = r.object(v, path, ['mode', 'caFile', 'allowedSubjects', 'allowedSans', 'maxDepth', 'headers']);
  if (!o) return undefined;
  const mode = r.string(o.mode, at(path, 'mode'), { oneOf: CLIENT_AUTH_MODES }) as ClientAuthConfig['mode'] | undefined;
  const caFile = r.file(o.caFile, at(path, 'caFile'), { optional: mode === 'none' || mode === undefined });
  const names = (key: string) => o[key] === undefined ? undefined : r.list(
    o[key], at(path, key), (s, p) => r.string(s, p), { minItems: 1 },
  );
  const allowedSubjects = names('allowedSubjects');
  const allowedSans = names('allowedSans');
  allowedSans?.forEach((s, i) => {
    const type = s.slice(0, s.indexOf(':'));
    if (!SAN_TYPES.includes(type)) r.fail(at(at(path, 'allowedSans'), i), `expected TYPE:value with TYPE one of ${SAN_TYPES.join(', ')} (e.g. "DNS:client.example.com"), got "${s}"`);
  });
  const maxDepth = r.integer(o.maxDepth, at(path, 'maxDepth'), { optional: true, min: 0, max: 9, what: 'a number of intermediate CAs' });
  const headers = readHeaders(r, o.headers, at(path, 'headers'));
  if (!mode || !headers || (mode !== 'none' && !caFile)) return undefined;
  return {
    mode, headers, ...(caFile ? { caFile } : {}), ...(allowedSubjects ? { allowedSubjects } : {}),
    ...(allowedSans ? { allowedSans } : {}), ...(maxDepth !== undefined ? { maxDepth } : {}),
  };
}

function readHeaders(r: Reader, v: unknown, path: string): ClientCertHeaders | undefined {
  const d = DEFAULTS.clientCertHeaders;
  const o = v === undefined ? {} : r.object(v, path, Object.keys(d));
  if (!o) return undefined;
  const out: Record<string, string> = {};
  let ok = true;
  for (const k of Object.keys(d) as Array<keyof ClientCertHeaders>) {
    const name = r.string(o[k], at(path, k), { def: d[k] });
    if (name !== undefined && !HEADER_NAME.test(name)) r.fail(at(path, k), `expected an HTTP header name like X-Client-Cert-Subject, got "${name}"`);
    if (name === undefined || !HEADER_NAME.test(name)) ok = false;
    else out[k] = name.toLowerCase();
  }
  return ok ? out as unknown as ClientCertHeaders : undefined;
}
