// The rooms of src/ import each other in one direction only (docs/design.md, "Module layout"):
// cli/ is the top, app/ and bench/ compose the library below it, and nothing below imports them.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const src = fileURLToPath(new URL('../src', import.meta.url));

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? files(join(dir, e.name)) : /\.(ts|cjs)$/.test(e.name) ? [join(dir, e.name)] : []);
}

/** The folder of src/ a file belongs to (`app`, `proxy`, `hsm`...). */
const room = (file: string) => relative(src, file).split(sep)[0]!;

/** Every relative import of `file`, static or dynamic, as [importing room, imported room]. */
function edges(file: string): Array<[string, string, string]> {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*|require\(\s*)'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]!);
  return specs.map((s) => [room(file), room(resolve(dirname(file), s)), `${relative(src, file)} imports ${s}`]);
}

const all = files(src).flatMap(edges);

// Who may not import whom: the composition rooms and the CLI sit on top of the library.
const FORBIDDEN: Record<string, string[]> = {
  app: ['cli', 'bench'],
  bench: ['cli'],
  proxy: ['app', 'cli', 'bench', 'acme'],
  // acme/ hands certificates and challenges to the listeners through app/, never by importing proxy/.
  acme: ['app', 'cli', 'bench', 'proxy'],
};
const TOP = new Set(['cli', 'app', 'bench']);

t.test('the composition rooms import downwards only', async (t) => {
  const bad = all.filter(([from, to]) => FORBIDDEN[from]?.includes(to)).map(([, , what]) => what);
  t.same(bad, [], 'app/ never imports cli/ or bench/, bench/ never imports cli/, proxy/ imports none of them');
});

t.test('no library room imports cli/, app/ or bench/', async (t) => {
  const bad = all.filter(([from, to]) => from !== to && !TOP.has(from) && TOP.has(to)).map(([, , what]) => what);
  t.same(bad, []);
});

t.test('acme/ is used only by the composition rooms', async (t) => {
  const bad = all.filter(([from, to]) => to === 'acme' && from !== 'acme' && from !== 'app' && from !== 'cli').map(([, , what]) => what);
  t.same(bad, [], 'only app/ and cli/ import acme/');
  const reaches = new Set(all.filter(([from]) => from === 'acme').map(([, to]) => to));
  t.same([...reaches].filter((r) => !['acme', 'config', 'engine', 'pki', 'hsm', 'tls'].includes(r)), [], 'acme/ imports config, engine, pki, hsm/client, tls at most');
});
