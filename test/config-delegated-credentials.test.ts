// listeners[].delegatedCredentials: defaults (off, 8 h, P-256), durations with units, the RFC 9345
// 7-day cap, key types, and TLS 1.3 required; every refusal names the field's path.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigInvalidError, parseConfig } from '../src/config/index.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-config-dc-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'a.pem'), 'x');
writeFileSync(join(dir, 'a.key'), 'x');

const yaml = (dc: string, extra = '') => `
listeners:
  - port: 8443
    certificates: [{ cert: a.pem, key: a.key }]
${extra}${dc ? `    delegatedCredentials: ${dc}\n` : ''}routes:
  - upstream: [http://127.0.0.1:8080]
`;

function issues(y: string): string[] {
  try {
    parseConfig(y, { baseDir: dir });
  } catch (err) {
    if (err instanceof ConfigInvalidError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  return [];
}

t.test('defaults and accepted values', async (t) => {
  t.same(parseConfig(yaml(''), { baseDir: dir }).listeners[0]!.delegatedCredentials, { enabled: false, validityMs: 8 * 3_600_000, keyType: 'ec:p256' }, 'off, 8 h, P-256');
  t.same(parseConfig(yaml('{ enabled: true, validity: 30m, keyType: ed25519 }'), { baseDir: dir }).listeners[0]!.delegatedCredentials,
    { enabled: true, validityMs: 1_800_000, keyType: 'ed25519' });
  t.equal(parseConfig(yaml('{ enabled: true, validity: 7d, keyType: ec:p384 }'), { baseDir: dir }).listeners[0]!.delegatedCredentials!.validityMs, 7 * 86_400_000, 'exactly 7 days');
});

t.test('refusals name the field', async (t) => {
  t.match(issues(yaml('{ enabled: true, validity: 8d }')), [/^listeners\[0\]\.delegatedCredentials\.validity: must be from 2s to 7d/]);
  t.match(issues(yaml('{ enabled: true, validity: 1s }')), [/^listeners\[0\]\.delegatedCredentials\.validity: must be from 2s to 7d/]);
  t.match(issues(yaml('{ enabled: true, validity: 3600 }')), [/^listeners\[0\]\.delegatedCredentials\.validity: expected a duration like "8h"/]);
  t.match(issues(yaml('{ enabled: true, keyType: rsa:2048 }')), [/^listeners\[0\]\.delegatedCredentials\.keyType: /]);
  t.match(issues(yaml('{ enabled: yes please }')), [/^listeners\[0\]\.delegatedCredentials\.enabled: /]);
  t.match(issues(yaml('{ enabled: true, lifetime: 8h }')), [/^listeners\[0\]\.delegatedCredentials/]);
  t.match(issues(yaml('{ enabled: true }', "    minVersion: '1.2'\n    maxVersion: '1.2'\n")), [/^listeners\[0\]\.delegatedCredentials\.enabled: delegated credentials need TLS 1\.3/]);
  t.same(issues(yaml('{ enabled: false }', "    minVersion: '1.2'\n    maxVersion: '1.2'\n")), [], 'off is fine on a TLS 1.2 listener');
});
