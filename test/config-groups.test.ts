// Listener `groups:` and `sni:`: validated with the field's path, restating exactly the groups tls/ implements.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigInvalidError, parseConfig } from '../src/config/index.js';
import { TLS_GROUPS } from '../src/config/schema.js';
import { GROUP_NAMES } from '../src/tls/kex.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-config-groups-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'a.pem'), 'x');
writeFileSync(join(dir, 'a.key'), 'x');

const yaml = (extra: string): string => `
listeners:
  - port: 8443
    certificates: [{ cert: a.pem, key: a.key }]
${extra}
routes:
  - upstream: [http://127.0.0.1:8080]
`;

function errorOf(text: string): string {
  try {
    parseConfig(text, { baseDir: dir });
  } catch (err) {
    if (err instanceof ConfigInvalidError) return err.message;
    throw err;
  }
  throw new Error('expected the config to be refused');
}

t.test('the config knows exactly the groups tls/ implements, in its default order', async (t) => {
  t.same(TLS_GROUPS, GROUP_NAMES);
});

t.test('groups and sni are read, with defaults', async (t) => {
  const c = parseConfig(yaml('    groups: [x25519, X25519MLKEM768]\n    sni: strict'), { baseDir: dir });
  t.same(c.listeners[0]!.groups, ['x25519', 'X25519MLKEM768']);
  t.equal(c.listeners[0]!.sni, 'strict');
  const d = parseConfig(yaml(''), { baseDir: dir });
  t.equal(d.listeners[0]!.groups, undefined, 'no groups: every group, default order');
  t.equal(d.listeners[0]!.sni, 'default');
});

t.test('bad groups and sni name the field', async (t) => {
  t.match(errorOf(yaml('    groups: [x25519, P-256]')), /listeners\[0\]\.groups\[1\]: expected one of 'X25519MLKEM768', .*got "P-256"/);
  t.match(errorOf(yaml('    groups: [x25519, x25519]')), /listeners\[0\]\.groups\[1\]: "x25519" is listed twice/);
  t.match(errorOf(yaml('    groups: []')), /listeners\[0\]\.groups: expected at least 1 item/);
  t.match(errorOf(yaml('    sni: lax')), /listeners\[0\]\.sni: expected one of 'default', 'strict', got "lax"/);
});
