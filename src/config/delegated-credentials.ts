// listeners[].delegatedCredentials: RFC 9345 delegated credentials, off by default because they
// put a short-lived signing key in the proxy's memory (docs/threat-model.md weighs it).
import { at, type Reader } from './reader.js';

export type CredentialKeyTypeName = 'ec:p256' | 'ec:p384' | 'ed25519';
export const CREDENTIAL_KEY_TYPES: readonly CredentialKeyTypeName[] = ['ec:p256', 'ec:p384', 'ed25519'];

/** A listener's delegated-credential settings, validity in milliseconds. */
export interface DelegatedCredentialsConfig {
  enabled: boolean;
  /** Lifetime of each credential (default 8 h, at most 7 days, RFC 9345 §4.1.3). */
  validityMs: number;
  keyType: CredentialKeyTypeName;
}

export const DELEGATED_CREDENTIAL_DEFAULTS: DelegatedCredentialsConfig = { enabled: false, validityMs: 8 * 3_600_000, keyType: 'ec:p256' };
const MAX_VALIDITY_MS = 7 * 86_400_000;
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/** Reads a listener's delegatedCredentials block (absent = disabled); problems carry their path. */
export function readDelegatedCredentials(r: Reader, v: unknown, path: string): DelegatedCredentialsConfig | undefined {
  const d = DELEGATED_CREDENTIAL_DEFAULTS;
  if (v === undefined) return { ...d };
  const o = r.object(v, path, ['enabled', 'validity', 'keyType']);
  if (!o) return undefined;
  const enabled = r.boolean(o.enabled, at(path, 'enabled'), { def: d.enabled });
  const keyType = r.string(o.keyType, at(path, 'keyType'), { def: d.keyType, oneOf: CREDENTIAL_KEY_TYPES }) as CredentialKeyTypeName | undefined;
  const validityMs = validity(r, o.validity, at(path, 'validity'));
  if (enabled === undefined || !keyType || validityMs === undefined) return undefined;
  return { enabled, validityMs, keyType };
}

// A duration with a unit ("8h", "30m", "2d", "10s"); a credential lives at least 2 s (renewed at half-life).
function validity(r: Reader, v: unknown, path: string): number | undefined {
  if (v === undefined) return DELEGATED_CREDENTIAL_DEFAULTS.validityMs;
  const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)$/.exec(v.trim()) : null;
  if (!m) return r.fail(path, `expected a duration like "8h", "30m" or "2d", got ${JSON.stringify(v)}`);
  const ms = Math.round(Number(m[1]) * UNITS[m[2]!]!);
  if (ms < 2000 || ms > MAX_VALIDITY_MS) return r.fail(path, `must be from 2s to 7d (RFC 9345 caps a credential at 7 days), got ${JSON.stringify(v)}`);
  return ms;
}
