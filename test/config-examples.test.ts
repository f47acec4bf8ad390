// The example configs under config/ are valid, both as written and once their files exist.
import t from 'tap';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
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

interface Written {
  demo?: boolean;
  listeners: Array<{ certificates: Array<{ cert: string; key: string }> }>;
  hsm?: { manifest?: string; credentials?: { file?: string } };
}

// `config check` wants every file an example names: the demo makes its own on first start; any
// other example says in its comments what each file is and how to make it.
for (const name of examples) {
  t.test(`${name} says how to make every file it names (or is the demo, which makes its own)`, async (t) => {
    const text = readFileSync(join(configDir, name), 'utf8');
    const written = parse(text) as Written;
    if (written.demo) return;
    const comments = text.split('\n').filter((l) => /^\s*#/.test(l)).join('\n');
    const named = [
      ...written.listeners.flatMap((l) => l.certificates.flatMap((c) => [c.cert, c.key])),
      ...(written.hsm?.manifest ? [written.hsm.manifest] : []),
      ...(written.hsm?.credentials?.file ? [written.hsm.credentials.file] : []),
    ];
    for (const file of named) t.ok(comments.includes(file), `${file} is named in the comments`);
  });
}
