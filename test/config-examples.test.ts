// The example configs under config/ are valid, both as written and once their files exist.
import t from 'tap';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config/index.js';

const configDir = fileURLToPath(new URL('../config/', import.meta.url));
const examples = readdirSync(configDir).filter((f) => f.endsWith('.yaml'));

t.test('the three documented examples exist', async (t) => {
  for (const name of ['hsmproxy.yaml', 'multi-site.yaml', 'cluster.yaml']) t.ok(examples.includes(name), name);
});

for (const name of examples) {
  t.test(`${name} validates, and its named files are all it lacks`, async (t) => {
    const file = join(configDir, name);
    const c = loadConfig(file, { checkFiles: false });
    t.ok(c.listeners.length > 0);
    const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-example-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    // Create every file the config names under a fresh base directory, then check files too.
    const rel = (p: string) => p.slice(process.cwd().length + 1);
    const named = [
      ...c.listeners.flatMap((l) => l.certificates.flatMap((x) => [x.cert, x.key])),
      ...(c.hsm.manifest ? [c.hsm.manifest] : []),
    ];
    for (const p of named) {
      mkdirSync(dirname(join(dir, rel(p))), { recursive: true });
      writeFileSync(join(dir, rel(p)), 'x');
    }
    if (c.hsm.credentials.file) {
      const pin = join(dir, rel(c.hsm.credentials.file));
      mkdirSync(dirname(pin), { recursive: true });
      writeFileSync(pin, '1234');
      chmodSync(pin, 0o600);
    }
    t.doesNotThrow(() => loadConfig(file, { baseDir: dir }));
  });
}
